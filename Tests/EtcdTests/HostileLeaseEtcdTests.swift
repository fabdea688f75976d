import Daemon
import Etcd
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Testing
import TestSupport

/// Dual-stack keys and hostile leases against a real etcd: the allocator, the
/// daemon's registry and the one-shot read (`sync`, `diff`) side by side.
@Suite("hostile leases in a real etcd: the allocator, the daemon's registry, sync's read")
struct HostileLeaseEtcdTests {
    static let prefix = HostileLeases.prefix
    static let publicIP = IPv4Address(HostileLeases.publicIP)!

    func allocator(_ client: EtcdClient) -> LeaseAllocator {
        LeaseAllocator(client: client, prefix: Self.prefix,
                       attributes: LeaseAttributes(publicIP: Self.publicIP, vni: 1, vtepMAC: .vtep(vni: 1, publicIP: Self.publicIP)), ttl: 600)
    }

    func put(_ client: EtcdClient, _ entries: [HostileLeases.Entry]) async throws {
        for entry in entries { _ = try await client.put(entry.key, bytes: Array(entry.value.utf8)) }
    }

    /// Issue 9, item 3: before, a dual-stack key "did not name a subnet" and its
    /// subnet was free to take: two nodes owned one subnet.
    @Test("the allocator never takes a subnet that a dual-stack key holds, nor one held by a broken or flanneld-only key", etcdTests)
    func allocatorAvoidsHeldSubnets() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                try await put(client, HostileLeases.dualStack.entries)
                let (existing, _) = try await client.list(prefix: Flannel.subnetsPrefix(prefix: Self.prefix))
                let two = try NetworkConfig.parse(Data(HostileLeases.network.utf8), source: "net-conf")
                for previous in [nil, "10.244.13.0/24"] {
                    // A fresh node, and one whose subnet.env names the held subnet.
                    let lease = try await allocator(client).acquire(network: two, existing: existing, previous: previous.flatMap { IPv4Prefix($0) })
                    #expect(lease.subnet == IPv4Prefix("10.244.14.0/24"), "10.244.13.0/24 is held by \(HostileLeases.dualStack.entries[0].key)")
                    _ = try await client.delete(lease.key)
                }
                // Only the held subnet in range: no subnet at all, said so; nothing written.
                let one = try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.13.0", "SubnetMax": "10.244.13.0"}"#.utf8), source: "net-conf")
                await #expect(throws: (any Error).self) { try await allocator(client).acquire(network: one, existing: existing, previous: IPv4Prefix("10.244.13.0/24")) }
                let after = try await client.list(prefix: Flannel.subnetsPrefix(prefix: Self.prefix)).kvs.map(\.key)
                #expect(after == [HostileLeases.dualStack.entries[0].key])

                // Keys held whatever their value: broken JSON, a flanneld-only spelling, an IPv6 part flannel refuses.
                let held = ["10.244.13.0-24": "{", "x10.244.13.0-24": HostileLeases.vxlan("198.18.0.9", "22:00:00:00:00:09"),
                            "10.244.13.0-24&fd00::-128": HostileLeases.vxlan("198.18.0.9", "22:00:00:00:00:09")]
                _ = try await client.delete(HostileLeases.dualStack.entries[0].key)
                for (name, value) in held {
                    _ = try await client.put("\(Self.prefix)/subnets/\(name)", value: value)
                    let (listed, _) = try await client.list(prefix: Flannel.subnetsPrefix(prefix: Self.prefix))
                    let lease = try await allocator(client).acquire(network: two, existing: listed, previous: IPv4Prefix("10.244.13.0/24"))
                    #expect(lease.subnet == IPv4Prefix("10.244.14.0/24"), "held by \(name)")
                    _ = try await client.delete(lease.key)
                    _ = try await client.delete("\(Self.prefix)/subnets/\(name)")
                }

                // An IPv6-only key holds no IPv4 subnet.
                _ = try await client.put("\(Self.prefix)/subnets/0.0.0.0-0&fd00:10:244:d::-64", value: "{}")
                let (listed, _) = try await client.list(prefix: Flannel.subnetsPrefix(prefix: Self.prefix))
                let lease = try await allocator(client).acquire(network: one, existing: listed, previous: nil)
                #expect(lease.subnet == IPv4Prefix("10.244.13.0/24"))
            }
        }
    }

    /// The first cluster state a registry reports.
    func firstState(_ endpoint: String, node: String) async throws -> (ClusterView, Int) {
        let registry = try EtcdRegistry(settings: EtcdSettings(endpoints: [endpoint]), node: node, publicIP: Self.publicIP, ttl: 600,
                                        subnetFile: "/nonexistent/subnet.env", log: Logger(label: "test"))
        let events = AsyncStream<RegistryEvent>.makeStream()
        let task = Task { await registry.run { events.continuation.yield($0) } }
        defer { task.cancel() }
        for await event in events.stream {
            switch event {
            case .connection(true, _): continue
            case .connection(false, let reason): throw HarnessError("registry: \(reason ?? "")")
            case .peers: continue
            case .state(let view, let invalid):
                task.cancel()
                await task.value
                await registry.shutdown()
                return (view, invalid)
            }
        }
        throw CancellationError()
    }

    @Test("the daemon's registry and sync's read of etcd see the same cluster and skip the same leases", etcdTests)
    func sameViewEverywhere() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                _ = try await client.put(Flannel.configKey(prefix: Self.prefix), value: HostileLeases.network)
                try await put(client, HostileLeases.good + HostileLeases.dualStack.entries)
                // The daemon's registry takes its lease: 10.244.14.0/24, not the dual-stack key's subnet.
                let (first, _) = try await firstState(etcd.endpoint, node: "h1")
                #expect(first.local.subnet == IPv4Prefix(HostileLeases.ownSubnet))
                #expect(first.local.origin == HostileLeases.ownKey)

                // Every hostile lease, then a registry lists them at start, and sync reads them.
                try await put(client, HostileLeases.cases.filter { $0 != HostileLeases.dualStack }.flatMap(\.entries))
                let (daemon, invalid) = try await firstState(etcd.endpoint, node: "h1")
                let config = try AgentConfig.parse(Data("""
                    {"node": "h1", "publicIP": "\(HostileLeases.publicIP)", "etcd": {"endpoints": ["\(etcd.endpoint)"]},
                     "subnetFile": "/nonexistent/subnet.env"}
                    """.utf8), source: "c.json")
                let (sync, warnings) = try await clusterSource(config: config, node: "h1", log: Logger(label: "test")).read()
                #expect(daemon == sync)
                #expect(daemon.local.subnet == IPv4Prefix(HostileLeases.ownSubnet), "the lease was kept")
                #expect(invalid == warnings.count)
                #expect(invalid > 30)
                for warning in warnings {
                    #expect(warning.hasPrefix("lease \(HostileLeases.prefix)/subnets/") && warning.hasSuffix("; skipped"), "\(warning)")
                }
                // A hostile lease that claims this node's public IP does not confuse sync:
                // it is outside SubnetMin..SubnetMax, so not a lease this node would keep.
                #expect(daemon.peers.contains { $0.origin == "\(HostileLeases.prefix)/subnets/10.244.60.0-24" })
            }
        }
    }

    @Test("a lease fixed or broken in place is checked again (the registry keeps each check by revision)", etcdTests)
    func checkedAgainWhenChanged() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                _ = try await client.put(Flannel.configKey(prefix: Self.prefix), value: HostileLeases.network)
                let registry = try EtcdRegistry(settings: EtcdSettings(endpoints: [etcd.endpoint]), node: "h1", publicIP: Self.publicIP,
                                                ttl: 600, subnetFile: "/nonexistent/subnet.env", log: Logger(label: "test"))
                let events = AsyncStream<RegistryEvent>.makeStream()
                let task = Task { await registry.run { events.continuation.yield($0) } }
                defer { task.cancel() }
                // A generous deadline for the whole test: the stream ends, the wait below fails.
                let watchdog = Task { try? await Task.sleep(for: .seconds(60)); events.continuation.finish() }
                defer { watchdog.cancel() }
                var iterator = events.stream.makeAsyncIterator()
                /// The cluster as the events so far say (a state, then the changes since).
                var current: (view: ClusterView, invalid: Int)?
                /// The next state that satisfies `condition` (each write brings at least one event).
                func state(_ what: String, _ condition: (ClusterView, Int) -> Bool) async throws {
                    while let event = await iterator.next() {
                        switch event {
                        case .state(let view, let invalid): current = (view, invalid)
                        case .peers(let upserts, let removals, let invalid):
                            guard var view = current?.view else { continue }
                            let gone = Set(removals).union(upserts.map(\.origin))
                            view.peers = view.peers.filter { !gone.contains($0.origin) } + upserts
                            current = (view, invalid)
                        case .connection: continue
                        }
                        if let current, condition(current.view, current.invalid) { return }
                    }
                    throw HarnessError("no state within 60 s: \(what)")
                }
                try await state("the first state") { view, invalid in view.peers.isEmpty && invalid == 0 }
                let key = "\(Self.prefix)/subnets/10.244.20.0-24"
                let good = HostileLeases.vxlan("198.18.0.120", "22:00:00:00:00:20")
                for (value, peers, invalid) in [(good.replacingOccurrences(of: "vxlan", with: "host-gw"), 0, 1), (good, 1, 0),
                                                (good.replacingOccurrences(of: "\"VNI\":1", with: "\"VNI\":2"), 0, 1), (good, 1, 0)] {
                    _ = try await client.put(key, value: value)
                    try await state("\(value) is checked") { view, count in view.peers.count == peers && count == invalid }
                }
                _ = try await client.delete(key)
                try await state("the lease is gone") { view, invalid in view.peers.isEmpty && invalid == 0 }
                task.cancel()
                await task.value
                await registry.shutdown()
            }
        }
    }

    @Test("sync's read: with two leases claiming this node's IP, subnet.env decides; without it, an error naming both", etcdTests)
    func ownLeaseFromSubnetEnv() async throws {
        try await withEtcd { etcd in
            try await withClient([etcd.endpoint]) { client in
                _ = try await client.put(Flannel.configKey(prefix: Self.prefix), value: HostileLeases.network)
                let mine = LeaseAttributes(publicIP: Self.publicIP, vni: 1, vtepMAC: .vtep(vni: 1, publicIP: Self.publicIP)).json
                for subnet in ["10.244.13.0-24", "10.244.14.0-24"] { _ = try await client.put("\(Self.prefix)/subnets/\(subnet)", value: mine) }
                let directory = try makeTemporaryDirectory("hostile-leases")
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let config = try AgentConfig.parse(Data("""
                    {"node": "h1", "publicIP": "\(HostileLeases.publicIP)", "etcd": {"endpoints": ["\(etcd.endpoint)"]},
                     "subnetFile": "\(directory)/subnet.env"}
                    """.utf8), source: "c.json")
                do {
                    _ = try await clusterSource(config: config, node: "h1", log: Logger(label: "test")).read()
                    Issue.record("two leases claim this node's IP and nothing says which is its own")
                } catch {
                    #expect("\(error)" == "several leases in etcd have PublicIP 198.18.0.1 (\(Self.prefix)/subnets/10.244.13.0-24, "
                            + "\(Self.prefix)/subnets/10.244.14.0-24) and \(directory)/subnet.env names none of their subnets: "
                            + "which one is this node's is unknown; delete the ones that are not")
                }
                try SubnetEnv(network: IPv4Prefix("10.244.0.0/16")!, subnet: IPv4Prefix("10.244.14.0/24")!, mtu: 1450, ipMasq: true)
                    .text.write(toFile: "\(directory)/subnet.env", atomically: true, encoding: .utf8)
                let (view, _) = try await clusterSource(config: config, node: "h1", log: Logger(label: "test")).read()
                #expect(view.local.subnet == IPv4Prefix("10.244.14.0/24"))
                #expect(view.peers.map(\.origin) == ["\(Self.prefix)/subnets/10.244.13.0-24"], "a peer, which the reconciler skips (this host's IP)")

                // No lease this node would keep: the error says what sync looks for.
                _ = try await client.delete("\(Self.prefix)/subnets/10.244.14.0-24")
                _ = try await client.delete("\(Self.prefix)/subnets/10.244.13.0-24")
                _ = try await client.put("\(Self.prefix)/subnets/10.244.60.0-24", value: mine)
                do {
                    _ = try await clusterSource(config: config, node: "h1", log: Logger(label: "test")).read()
                    Issue.record("a lease outside SubnetMin..SubnetMax is not this node's")
                } catch {
                    #expect("\(error)".hasPrefix("no lease in etcd under \(Self.prefix)/subnets/ has PublicIP 198.18.0.1 and a /24 between "
                                                 + "SubnetMin 10.244.13.0 and SubnetMax 10.244.14.0 of 10.244.0.0/16"), "\(error)")
                }
            }
        }
    }
}
