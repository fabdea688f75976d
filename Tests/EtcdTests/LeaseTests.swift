import Daemon
import Etcd
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Synchronization
import Testing

/// Subnet leases in flannel's layout against a real etcd (the registry side of
/// `vxlan-agent run`; the daemons themselves are in EndToEndTests).
@Suite("flannel leases in etcd")
struct LeaseTests {
    static let prefix = "/coreos.com/network"

    func allocator(_ client: EtcdClient, host: Int) -> LeaseAllocator {
        let ip = IPv4Address("198.18.0.\(host)")!
        return LeaseAllocator(client: client, prefix: Self.prefix,
                              attributes: LeaseAttributes(publicIP: ip, vni: 1, vtepMAC: .vtep(vni: 1, publicIP: ip)), ttl: 600)
    }

    @Test("two nodes race for the last free subnet: one wins, the other gets a clear error")
    func raceForTheLastSubnet() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                // Two subnets in range, one already taken by a third node.
                let network = try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.5.0", "SubnetMax": "10.244.6.0"}"#.utf8), source: "net-conf")
                _ = try await client.put("\(Self.prefix)/subnets/10.244.5.0-24", value: flannelLease("198.18.0.9", mac: "22:00:00:00:00:09"))
                let (existing, _) = try await client.list(prefix: "\(Self.prefix)/subnets/")
                async let first = Result(catching: { try await allocator(client, host: 1).acquire(network: network, existing: existing, previous: nil) })
                async let second = Result(catching: { try await allocator(client, host: 2).acquire(network: network, existing: existing, previous: nil) })
                let results = await [first, second]
                let winners = results.compactMap { try? $0.get() }
                #expect(winners.count == 1, "\(results)")
                #expect(winners.first?.subnet == IPv4Prefix("10.244.6.0/24"))
                let failure = try #require(results.compactMap { result -> String? in
                    if case .failure(let error) = result { return "\(error)" } else { return nil }
                }.first)
                #expect(failure.hasPrefix("no free subnet: every /24 between SubnetMin 10.244.5.0 and SubnetMax 10.244.6.0 of 10.244.0.0/16 is leased"), "\(failure)")
                // Exactly one lease for 10.244.6.0/24, the winner's, untouched by the loser.
                let value = try #require(try await client.get("\(Self.prefix)/subnets/10.244.6.0-24"))
                let lease = try Lease.parse(key: value.key, value: value.value)
                #expect(["198.18.0.1", "198.18.0.2"].map { IPv4Address($0) }.contains(lease.attributes.publicIP))
                #expect(value.lease == winners[0].id)
            }
        }
    }

    @Test("a node's lease is reused (same public IP), else its previous subnet is taken again")
    func reuseAndPrevious() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                let network = NetworkConfig(network: IPv4Prefix("10.244.0.0/16")!)
                let first = try await allocator(client, host: 1).acquire(network: network, existing: [], previous: nil)
                let (existing, _) = try await client.list(prefix: "\(Self.prefix)/subnets/")
                let again = try await allocator(client, host: 1).acquire(network: network, existing: existing, previous: nil)
                #expect(again.subnet == first.subnet && again.key == first.key)
                #expect(again.id != first.id, "a fresh etcd lease, as flanneld does")
                #expect(try await client.timeToLive(lease: first.id) == nil, "the old etcd lease is revoked")
                #expect(try await client.get(first.key)?.string == flannelLease("198.18.0.1", mac: "0e:01:c6:12:00:01"))

                _ = try await client.delete(first.key)
                let previous = try await allocator(client, host: 1).acquire(network: network, existing: [],
                                                                             previous: IPv4Prefix("10.244.42.0/24"))
                #expect(previous.subnet == IPv4Prefix("10.244.42.0/24"))
            }
        }
    }

    @Test("TLS with client certificates: the registry takes a lease; a foreign certificate gives a clear error")
    func registryOverTLS() async throws {
        try await withEtcd(tls: true) { etcd in
            let certificates = try #require(etcd.certificates)
            let tls = certificates.clientTLS
            try await withClient([etcd.endpoint], tls: tls) { client in
                _ = try await client.put("\(Self.prefix)/config", value: #"{"Network": "10.244.0.0/16"}"#)
            }
            func firstEvent(certFile: String, keyFile: String) async throws -> RegistryEvent {
                let settings = EtcdSettings(endpoints: [etcd.endpoint], caFile: certificates.ca, certFile: certFile, keyFile: keyFile)
                let registry = try EtcdRegistry(settings: settings, node: "n1", publicIP: IPv4Address("198.18.0.1")!, ttl: 600,
                                                subnetFile: "/nonexistent/subnet.env", log: Logger(label: "test"))
                let events = AsyncStream<RegistryEvent>.makeStream()
                let task = Task { await registry.run { events.continuation.yield($0) } }
                defer { task.cancel() }
                var iterator = events.stream.makeAsyncIterator()
                while let event = await iterator.next() {
                    if case .connection(true, _) = event { continue }
                    task.cancel()
                    await task.value
                    await registry.shutdown()
                    return event
                }
                throw CancellationError()
            }
            let good = try await firstEvent(certFile: tls.certFile!, keyFile: tls.keyFile!)
            guard case .state(let view, _) = good else { Issue.record("expected the cluster state, got \(good)"); return }
            #expect(view.local.subnet.length == 24 && view.network.network == IPv4Prefix("10.244.0.0/16"))

            let stranger = certificates.strangerTLS
            let bad = try await firstEvent(certFile: stranger.certFile!, keyFile: stranger.keyFile!)
            guard case .connection(false, let reason) = bad else { Issue.record("expected a connection error, got \(bad)"); return }
            #expect(reason?.contains("etcd \(etcd.endpoint): get \(Self.prefix)/config: TLS handshake failed") == true, "\(reason ?? "")")
            #expect(reason?.contains("etcd refused the client certificate") == true, "\(reason ?? "")")
        }
    }
}

func flannelLease(_ ip: String, mac: String) -> String {
    #"{"PublicIP":"\#(ip)","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"\#(mac)"}}"#
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
