import Daemon
import Etcd
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Testing

/// IPv6-only leases (`EnableIPv4: false`, issue 12) in flannel's layout against a
/// real etcd: one IPv6 subnet per node under the key `0.0.0.0-0&<ipv6>-<len>`,
/// created in one transaction; this node's lease found by its PublicIPv6 (every
/// IPv6-only lease's PublicIP is 0.0.0.0, which flanneld's etcd manager matches);
/// renew, reuse after a restart, release; the daemon's registry and `sync`'s view.
@Suite("IPv6-only leases in etcd")
struct IPv6OnlyLeaseTests {
    static let prefix = "/coreos.com/network"
    static let subnets = "/coreos.com/network/subnets/"
    static let config = #"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#

    static func network(_ extra: String = "") throws -> NetworkConfig {
        try NetworkConfig.parse(Data(#"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"\#(extra)}"#.utf8),
                                source: "net-conf")
    }

    static func own(_ host: Int, network: NetworkConfig) -> LeaseAttributes {
        LeaseAttributes.own(publicIP: IPv4Address(0), publicIPv6: IPv6Address("2001:2::\(host)")!, network: network)
    }

    func allocator(_ client: EtcdClient, host: Int, network: NetworkConfig) -> LeaseAllocator {
        LeaseAllocator(client: client, prefix: Self.prefix, attributes: Self.own(host, network: network), ttl: 600)
    }

    @Test("one IPv6 subnet, key 0.0.0.0-0&<ipv6>-<len>, created if absent; every held IPv6 subnet avoided, whatever the key's form or value")
    func allocate() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                // Three IPv6 subnets in range (1, 2, 3): 1 held by a broken IPv6-only key, 3 by a dual-stack key.
                let network = try Self.network(#", "IPv6SubnetMax": "fd00:10:244:3::""#)
                _ = try await client.put(Self.subnets + "0.0.0.0-0&fd00:10:244:1::-64", value: "{}")
                _ = try await client.put(Self.subnets + "10.244.8.0-24&fd00:10:244:3::-64", value: "{}")
                let (existing, _) = try await client.list(prefix: Self.subnets)
                let lease = try await allocator(client, host: 1, network: network).acquire(network: network, existing: existing, previous: nil)
                #expect(lease.key == Self.subnets + "0.0.0.0-0&fd00:10:244:2::-64")
                #expect(lease.ipv6Subnet == IPv6Prefix("fd00:10:244:2::/64") && lease.subnet == NodeRecord.noIPv4Subnet)
                let stored = try #require(try await client.get(lease.key))
                #expect(stored.lease == lease.id)
                #expect(stored.string == #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:01"}}"#)
                // Nothing else was written: the two keys that were there, and this one.
                #expect(try await client.list(prefix: Self.subnets).0.count == 3)
                // Another node reads it as flanneld would.
                let peer = try Flannel.check(LeaseEntry(key: stored.key, value: stored.value), network: network).get()
                #expect(peer.record == NodeRecord.ipv6Only(name: "2001:2::1", ipv6: NodeRecord.IPv6Half(
                    subnet: IPv6Prefix("fd00:10:244:2::/64")!, publicIP: IPv6Address("2001:2::1")!, vtepMAC: MACAddress("0a:01:00:00:00:01")),
                    origin: stored.key))

                // A second IPv6-only node is not taken for the first (flanneld's etcd manager would: PublicIP 0.0.0.0
                // matches): with every subnet held, it gets a clear error naming the range.
                let (full, _) = try await client.list(prefix: Self.subnets)
                await #expect {
                    _ = try await allocator(client, host: 2, network: network).acquire(network: network, existing: full, previous: nil)
                } throws: { error in
                    "\(error)".hasPrefix("no free IPv6 subnet: every /64 between IPv6SubnetMin fd00:10:244:1:: and IPv6SubnetMax fd00:10:244:3:: "
                                         + "of fd00:10:244::/56 is leased")
                }
                #expect(try await client.get(lease.key)?.value == stored.value, "the first node's lease is untouched")
            }
        }
    }

    @Test("several IPv6-only nodes each take their own subnet")
    func severalNodes() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let network = try Self.network()
                var keys: [String] = []
                for host in 1...5 {
                    let (existing, _) = try await client.list(prefix: Self.subnets)
                    keys.append(try await allocator(client, host: host, network: network).acquire(network: network, existing: existing, previous: nil).key)
                }
                #expect(Set(keys).count == 5, "\(keys)")
                #expect(keys.allSatisfy { $0.hasPrefix(Self.subnets + "0.0.0.0-0&fd00:10:244:") && $0.hasSuffix("::-64") }, "\(keys)")
            }
        }
    }

    @Test("renew keeps the lease; a restart reuses it (same PublicIPv6); after it is gone, subnet.env's FLANNEL_IPV6_SUBNET is taken again")
    func renewReuseAndPrevious() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let network = try Self.network()
                // Another IPv6-only node's lease first: PublicIP 0.0.0.0 like ours, but not ours.
                let otherNode = try await allocator(client, host: 9, network: network).acquire(network: network, existing: [], previous: nil)
                let (before, _) = try await client.list(prefix: Self.subnets)
                let first = try await allocator(client, host: 1, network: network).acquire(network: network, existing: before, previous: nil)
                #expect(first.key != otherNode.key)
                let value = try #require(try await client.get(first.key))
                #expect(try await client.keepAlive(lease: first.id) > 0)
                #expect(try await client.get(first.key)?.value == value.value)

                // Restart: found by its PublicIPv6 and reused under a fresh etcd lease.
                let (existing, _) = try await client.list(prefix: Self.subnets)
                let again = try await allocator(client, host: 1, network: network).acquire(network: network, existing: existing, previous: nil)
                #expect(again.key == first.key && again.ipv6Subnet == first.ipv6Subnet)
                #expect(again.id != first.id)
                #expect(try await client.get(otherNode.key)?.lease == otherNode.id, "the other node's lease is untouched")

                // Gone: subnet.env's FLANNEL_IPV6_SUBNET (the file has no FLANNEL_SUBNET) is taken again.
                _ = try await client.delete(first.key)
                let env = SubnetEnv.ipv6Only(ipv6Network: network.ipv6!.network, ipv6Subnet: IPv6Prefix("fd00:10:244:42::/64")!, mtu: 1430, ipMasq: true)
                #expect(SubnetEnv.previousSubnet(in: env.text) == nil)
                let (now, _) = try await client.list(prefix: Self.subnets)
                let previous = try await allocator(client, host: 1, network: network).acquire(
                    network: network, existing: now, previous: nil, previousIPv6: SubnetEnv.previousIPv6Subnet(in: env.text))
                #expect(previous.key == Self.subnets + "0.0.0.0-0&fd00:10:244:42::-64")
            }
        }
    }

    @Test("the daemon's registry and sync's one-shot view in an IPv6-only cluster, without an IPv4 address; release")
    func daemonAndSync() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let network = try Self.network()
                _ = try await client.put("\(Self.prefix)/config", value: Self.config)
                let peerKey = Self.subnets + "0.0.0.0-0&fd00:10:244:d::-64"
                _ = try await client.put(peerKey, value: Self.own(13, network: network).json)
                // An IPv4 key in an IPv6-only cluster: skipped, never mistaken for this node's.
                _ = try await client.put(Self.subnets + "10.244.1.0-24",
                                         value: #"{"PublicIP":"198.18.0.1","PublicIPv6":"2001:2::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:01"}}"#)
                let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ipv6only-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let subnetFile = directory + "/subnet.env"

                let registry = try EtcdRegistry(settings: EtcdSettings(endpoints: [etcd.endpoint]), node: "n1", publicIP: nil,
                                                publicIPv6: IPv6Address("2001:2::1")!, ttl: 600, subnetFile: subnetFile,
                                                log: Logger(label: "test"))
                let events = AsyncStream<RegistryEvent>.makeStream()
                let task = Task { await registry.run { events.continuation.yield($0) } }
                var state: (ClusterView, Int)?
                for await event in events.stream {
                    if case .state(let view, let invalid) = event { state = (view, invalid); break }
                    if case .connection(false, let reason) = event { Issue.record("\(reason ?? "")"); break }
                }
                task.cancel()
                await task.value
                await registry.shutdown()
                let (view, invalid) = try #require(state)
                #expect(!view.network.enableIPv4)
                #expect(invalid == 1, "the IPv4 key is skipped")
                let own = try #require(view.local.ipv6)
                #expect(view.local.subnet == NodeRecord.noIPv4Subnet && view.local.publicIP == IPv4Address(0))
                #expect(own.publicIP == IPv6Address("2001:2::1"))
                #expect(view.local.origin == Self.subnets + "0.0.0.0-0&\(own.subnet.network)-64")
                #expect(try await client.get(view.local.origin)?.string
                        == #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:01"}}"#)
                #expect(view.peers.map(\.name) == ["2001:2::13"])
                #expect(view.peers.first?.ipv6?.subnet == IPv6Prefix("fd00:10:244:d::/64"))
                #expect(view.peers.first?.subnet == NodeRecord.noIPv4Subnet)

                // sync/diff: the file names publicIPv6 only; the same view, found by PublicIPv6.
                let file = #"{"etcd": {"endpoints": ["\#(etcd.endpoint)"]}, "publicIPv6": "2001:2::1", "subnetFile": "\#(subnetFile)"}"#
                let config = try AgentConfig.parse(Data(file.utf8), source: "agent.json")
                let source = try clusterSource(config: config, node: "n1", log: Logger(label: "test"))
                let (read, warnings) = try await source.read()
                #expect(read.local == view.local && read.peers == view.peers)
                #expect(warnings.count == 1 && warnings[0].contains("10.244.1.0-24") && warnings[0].contains("IPv6-only network"), "\(warnings)")

                // Release: this node's lease only (the peer's PublicIP is 0.0.0.0 too).
                #expect(try await releaseLeases(config: config, node: "n1") == [view.local.origin])
                #expect(try await client.get(view.local.origin) == nil)
                #expect(try await client.get(peerKey) != nil)
                // With no lease of its own, sync says what is missing.
                await #expect { _ = try await source.read() } throws: { error in
                    "\(error)".contains("no lease in etcd under \(Self.subnets) has PublicIPv6 2001:2::1")
                }
            }
        }
    }

    @Test("the daemon's registry takes a lease again when its own is taken over by another IPv6-only node (same PublicIP 0.0.0.0)")
    func takenOver() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let network = try Self.network()
                _ = try await client.put("\(Self.prefix)/config", value: Self.config)
                let registry = try EtcdRegistry(settings: EtcdSettings(endpoints: [etcd.endpoint]), node: "n1", publicIP: nil,
                                                publicIPv6: IPv6Address("2001:2::1")!, ttl: 600, subnetFile: "/nonexistent/subnet.env",
                                                log: Logger(label: "test"))
                let events = AsyncStream<RegistryEvent>.makeStream()
                let task = Task { await registry.run { events.continuation.yield($0) } }
                // A generous deadline: the stream ends if the second state never comes.
                let deadline = Task {
                    try? await Task.sleep(for: .seconds(60))
                    events.continuation.finish()
                }
                var origins: [String] = []
                for await event in events.stream {
                    guard case .state(let view, _) = event else { continue }
                    origins.append(view.local.origin)
                    if origins.count == 1 {
                        // Another node writes its own lease over this key: PublicIP 0.0.0.0 as ours, another PublicIPv6.
                        _ = try await client.put(view.local.origin, value: Self.own(7, network: network).json)
                    } else {
                        break
                    }
                }
                deadline.cancel()
                task.cancel()
                await task.value
                await registry.shutdown()
                #expect(origins.count == 2, "a second state, with a lease taken again: \(origins)")
                if origins.count == 2 {
                    #expect(origins[0] != origins[1])
                    #expect(try await client.get(origins[1])?.string == Self.own(1, network: network).json)
                    #expect(try await client.get(origins[0])?.string == Self.own(7, network: network).json, "the other node's lease is left alone")
                }
            }
        }
    }
}
