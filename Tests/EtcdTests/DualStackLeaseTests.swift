import Daemon
import Etcd
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Testing

/// Dual-stack leases in flannel's layout against a real etcd: one key names both
/// subnets and is created in one transaction; renew, reuse and release keep the pair.
@Suite("dual-stack leases in etcd")
struct DualStackLeaseTests {
    static let prefix = "/coreos.com/network"
    static let subnets = "/coreos.com/network/subnets/"

    static func network(_ extra: String = "") throws -> NetworkConfig {
        try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"\#(extra)}"#.utf8),
                                source: "net-conf")
    }

    func allocator(_ client: EtcdClient, host: Int, network: NetworkConfig) -> LeaseAllocator {
        let attributes = LeaseAttributes.own(publicIP: IPv4Address("198.18.0.\(host)")!, publicIPv6: IPv6Address("fd00::\(host)")!,
                                             network: network)
        return LeaseAllocator(client: client, prefix: Self.prefix, attributes: attributes, ttl: 600)
    }

    @Test("both subnets in one key, created if absent; the IPv6 one avoids every held one, whatever the key's value")
    func allocate() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                // Three IPv6 subnets in range (1, 2, 3); 1 and 3 are held, by a good lease and by a broken one.
                let network = try Self.network(#", "IPv6SubnetMax": "fd00:10:244:3::""#)
                _ = try await client.put(Self.subnets + "10.244.7.0-24&fd00:10:244:1::-64", value: "{}")
                _ = try await client.put(Self.subnets + "10.244.8.0-24&fd00:10:244:3::-64",
                                         value: LeaseAttributes.own(publicIP: IPv4Address("198.18.0.8")!, publicIPv6: IPv6Address("fd00::8")!,
                                                                    network: network).json)
                let (existing, _) = try await client.list(prefix: Self.subnets)
                let lease = try await allocator(client, host: 1, network: network).acquire(network: network, existing: existing, previous: nil)
                #expect(lease.ipv6Subnet == IPv6Prefix("fd00:10:244:2::/64"))
                #expect(![IPv4Prefix("10.244.7.0/24"), IPv4Prefix("10.244.8.0/24")].contains(lease.subnet))
                #expect(lease.key == Flannel.leaseKey(prefix: Self.prefix, subnet: lease.subnet, ipv6: IPv6Prefix("fd00:10:244:2::/64")))
                let stored = try #require(try await client.get(lease.key))
                #expect(stored.lease == lease.id)
                #expect(stored.string == #"{"PublicIP":"198.18.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:01"}}"#)
                // Another node reads it as flanneld would: both halves.
                let peer = try Flannel.check(LeaseEntry(key: stored.key, value: stored.value), network: network).get()
                #expect(peer.record.ipv6 == NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:2::/64")!, publicIP: IPv6Address("fd00::1")!,
                                                               vtepMAC: MACAddress("0a:01:00:00:00:01")))

                // Every IPv6 subnet held now: a clear error naming the range.
                let (full, _) = try await client.list(prefix: Self.subnets)
                await #expect {
                    _ = try await allocator(client, host: 2, network: network).acquire(network: network, existing: full, previous: nil)
                } throws: { error in
                    "\(error)".hasPrefix("no free IPv6 subnet: every /64 between IPv6SubnetMin fd00:10:244:1:: and IPv6SubnetMax fd00:10:244:3:: "
                                         + "of fd00:10:244::/56 is leased")
                }
            }
        }
    }

    @Test("two nodes that take one IPv6 subnet under two IPv4 ones at once: the later key is deleted, the next subnet taken")
    func ipv6Race() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                // Three IPv6 subnets in range; two are taken by other nodes after this node listed (it saw none).
                let network = try Self.network(#", "IPv6SubnetMax": "fd00:10:244:3::""#)
                for (ipv4, ipv6) in [(7, 1), (8, 2)] {
                    _ = try await client.put(Self.subnets + "10.244.\(ipv4).0-24&fd00:10:244:\(ipv6)::-64",
                                             value: LeaseAttributes.own(publicIP: IPv4Address("198.18.0.\(ipv4)")!,
                                                                        publicIPv6: IPv6Address("fd00::\(ipv4)")!, network: network).json)
                }
                for _ in 0..<3 {
                    let lease = try await allocator(client, host: 1, network: network).acquire(network: network, existing: [], previous: nil)
                    #expect(lease.ipv6Subnet == IPv6Prefix("fd00:10:244:3::/64"), "the one IPv6 subnet no older key holds")
                    let (keys, _) = try await client.list(prefix: Self.subnets)
                    let held = keys.compactMap { Flannel.heldIPv6Subnet(byLeaseKey: $0.key) }
                    #expect(keys.count == 3 && Set(held).count == 3, "no IPv6 subnet under two keys: \(keys.map(\.key))")
                    _ = try await client.delete(lease.key)
                }
            }
        }
    }

    @Test("renew keeps both subnets; a restart reuses the lease (same public IP); after it is gone, subnet.env's pair is taken again")
    func renewReuseAndPrevious() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let network = try Self.network()
                let first = try await allocator(client, host: 1, network: network).acquire(network: network, existing: [], previous: nil)
                let value = try #require(try await client.get(first.key))
                // Renew: the etcd lease is kept alive; the key, both subnets and the value stay.
                #expect(try await client.keepAlive(lease: first.id) > 0)
                #expect(try await client.get(first.key)?.value == value.value)

                // Restart: the lease is found by its PublicIP and reused, both subnets with it.
                let (existing, _) = try await client.list(prefix: Self.subnets)
                let again = try await allocator(client, host: 1, network: network).acquire(network: network, existing: existing, previous: nil)
                #expect(again.key == first.key && again.subnet == first.subnet && again.ipv6Subnet == first.ipv6Subnet)
                #expect(again.id != first.id, "a fresh etcd lease, as flanneld does")

                // Gone (expired): subnet.env's FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET are taken again.
                _ = try await client.delete(first.key)
                let env = SubnetEnv(network: network.network, subnet: IPv4Prefix("10.244.42.0/24")!, mtu: 1450, ipMasq: true,
                                    ipv6Network: network.ipv6?.network, ipv6Subnet: IPv6Prefix("fd00:10:244:42::/64"))
                let previous = try await allocator(client, host: 1, network: network).acquire(
                    network: network, existing: [], previous: SubnetEnv.previousSubnet(in: env.text),
                    previousIPv6: SubnetEnv.previousIPv6Subnet(in: env.text))
                #expect(previous.key == Self.subnets + "10.244.42.0-24&fd00:10:244:42::-64")
                // A previous IPv6 subnet someone else holds now is not taken.
                let (held, _) = try await client.list(prefix: Self.subnets)
                _ = try await client.delete(previous.key)
                _ = try await client.put(Self.subnets + "10.244.43.0-24&fd00:10:244:42::-64", value: "{}")
                let (now, _) = try await client.list(prefix: Self.subnets)
                let other = try await allocator(client, host: 1, network: network).acquire(
                    network: network, existing: now, previous: IPv4Prefix("10.244.42.0/24"), previousIPv6: IPv6Prefix("fd00:10:244:42::/64"))
                #expect(other.subnet == IPv4Prefix("10.244.42.0/24"))
                #expect(other.ipv6Subnet != IPv6Prefix("fd00:10:244:42::/64") && other.ipv6Subnet != nil, "\(held.map(\.key))")
            }
        }
    }

    @Test("a lease of the other form is not reused: an IPv4 key in a dual-stack network, a dual key in an IPv4 one")
    func otherForm() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let dual = try Self.network()
                let ipv4 = NetworkConfig(network: IPv4Prefix("10.244.0.0/16")!)
                let old = Self.subnets + "10.244.9.0-24"
                _ = try await client.put(old, value: LeaseAttributes.own(publicIP: IPv4Address("198.18.0.1")!, network: ipv4).json)
                let (existing, _) = try await client.list(prefix: Self.subnets)
                let lease = try await allocator(client, host: 1, network: dual).acquire(network: dual, existing: existing, previous: nil)
                #expect(lease.key != old && lease.ipv6Subnet != nil)
                #expect(lease.subnet != IPv4Prefix("10.244.9.0/24"), "the old key still holds its subnet until it expires")

                let (both, _) = try await client.list(prefix: Self.subnets)
                let back = try await LeaseAllocator(client: client, prefix: Self.prefix,
                                                    attributes: LeaseAttributes.own(publicIP: IPv4Address("198.18.0.1")!, network: ipv4), ttl: 600)
                    .acquire(network: ipv4, existing: both, previous: nil)
                #expect(back.key == old && back.ipv6Subnet == nil, "the IPv4 lease is reused, the dual one is not")
            }
        }
    }

    @Test("the daemon's registry in a dual-stack flannel cluster: this node's dual key, the peer's IPv6 half")
    func daemonDualStack() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                _ = try await client.put("\(Self.prefix)/config", value: #"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}"#)
                _ = try await client.put(Self.subnets + "10.244.13.0-24&fd00:10:244:d::-64",
                                         value: LeaseAttributes.own(publicIP: IPv4Address("198.18.0.13")!, publicIPv6: IPv6Address("fd00::13")!,
                                                                    network: try Self.network()).json)
                let registry = try EtcdRegistry(settings: EtcdSettings(endpoints: [etcd.endpoint]), node: "n1", publicIP: IPv4Address("198.18.0.1")!,
                                                publicIPv6: IPv6Address("fd00::1")!, ttl: 600, subnetFile: "/nonexistent/subnet.env",
                                                log: Logger(label: "test"))
                let events = AsyncStream<RegistryEvent>.makeStream()
                let task = Task { await registry.run { events.continuation.yield($0) } }
                var state: ClusterView?
                for await event in events.stream {
                    if case .state(let view, _) = event { state = view; break }
                    if case .connection(false, let reason) = event { Issue.record("\(reason ?? "")"); break }
                }
                task.cancel()
                await task.value
                await registry.shutdown()
                let view = try #require(state)
                #expect(view.network.ipv6?.network == IPv6Prefix("fd00:10:244::/56"))
                let own = try #require(view.local.ipv6)
                #expect(own.publicIP == IPv6Address("fd00::1"))
                #expect(view.local.origin.hasSuffix("&\(own.subnet.network)-64"), "the dual key: \(view.local.origin)")
                let value = try await client.get(view.local.origin)?.string ?? ""
                #expect(value.contains(#""PublicIPv6":"fd00::1""#) && value.contains(#""BackendV6Data""#), "\(value)")
                #expect(view.peers.map(\.subnet) == [IPv4Prefix("10.244.13.0/24")!])
                #expect(view.peers.first?.ipv6?.subnet == IPv6Prefix("fd00:10:244:d::/64"))
                #expect(view.peers.first?.ipv6?.publicIP == IPv6Address("fd00::13"))
            }
        }
    }

    @Test("release deletes the dual-stack key")
    func release() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let network = try Self.network()
                let lease = try await allocator(client, host: 1, network: network).acquire(network: network, existing: [], previous: nil)
                let file = #"{"etcd": {"endpoints": ["\#(etcd.endpoint)"]}, "publicIP": "198.18.0.1", "publicIPv6": "fd00::1"}"#
                let config = try AgentConfig.parse(Data(file.utf8), source: "agent.json")
                #expect(try await releaseLeases(config: config, node: "n1") == [lease.key])
                #expect(try await client.get(lease.key) == nil)
            }
        }
    }
}
