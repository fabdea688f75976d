import Foundation
import Model
@testable import Reconcile
import Testing

/// The daemon's incremental path for the IPv6 plane (`KernelPicture6`,
/// `DesiredIndex6`, `Differ.plan(keys:)`) beside the IPv4 plane's, in a
/// dual-stack and an IPv6-only cluster: whatever it does, both planes end where
/// a full sync would leave them, and what it cannot decide alone (a peer whose
/// IPv6 half collides with another's claim, the device) goes to a full pass.
@Suite("Incremental reconcile, IPv6 plane")
struct IncrementalIPv6Tests {
    static let proto = AgentSettings.defaultProtocol
    static let index: Int32 = 7
    static let index6: Int32 = 8

    static func host() -> HostFacts { HostFacts(underlay: Fixture.underlay) }

    /// A dual-stack peer: IPv4 10.244.N.0/24 at 198.18.1.N, IPv6 fd00:10:244:N::/64 at 2001:2::N.
    static func peer(_ n: Int, ip6: Int? = nil, subnet6: Int? = nil, ipv6: Bool = true) -> NodeRecord {
        var record = IncrementalTests.peer(n)
        if ipv6 {
            record.ipv6 = NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:\(String(subnet6 ?? n, radix: 16))::/64")!,
                                              publicIP: IPv6Address("2001:2::\(String(ip6 ?? n, radix: 16))")!)
        }
        return record
    }

    /// An IPv6-only peer (`NodeRecord.ipv6Only`: flannel's empty IPv4 half).
    static func peer6(_ n: Int, ip6: Int? = nil, subnet6: Int? = nil) -> NodeRecord {
        .ipv6Only(name: "node-\(n)", ipv6: NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:\(String(subnet6 ?? n, radix: 16))::/64")!,
                                                              publicIP: IPv6Address("2001:2::\(String(ip6 ?? n, radix: 16))")!),
                  origin: "/coreos.com/network/subnets/0.0.0.0-0&fd00:10:244:\(String(n, radix: 16))::-64")
    }

    /// The two clusters: dual stack, and IPv6-only (the IPv4 plane holds nothing).
    enum Stack: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case dual, ipv6Only
        var testDescription: String { rawValue }

        var network: NetworkConfig {
            switch self {
            case .dual:
                var network = Fixture.network
                network.ipv6 = NetworkConfig.IPv6Part(network: Fixture6.network)
                return network
            case .ipv6Only: return .ipv6Only(NetworkConfig.IPv6Part(network: Fixture6.network))
            }
        }

        var local: NodeRecord { self == .dual ? Fixture6.node(1) : IncrementalIPv6Tests.peer6(1) }
        func peer(_ n: Int, ip6: Int? = nil, subnet6: Int? = nil) -> NodeRecord {
            self == .dual ? IncrementalIPv6Tests.peer(n, ip6: ip6, subnet6: subnet6) : IncrementalIPv6Tests.peer6(n, ip6: ip6, subnet6: subnet6)
        }
        func view(_ peers: [NodeRecord]) -> ClusterView {
            ClusterView(network: network, local: local, peers: peers.sorted { $0.origin < $1.origin })
        }
    }

    /// One plane of a kernel in memory, written by the same changes the dataplane
    /// sends, with the kernel's own rules (a replaced FDB entry rewrites the MAC's
    /// first remote; deleting a nexthop deletes its routes, silently).
    struct Plane<A: IPFamilyAddress> {
        var device: LinkState?
        var addresses: [A.Prefix]
        var fdb: [MACAddress: [FDBEntryOf<A>]] = [:]
        var neighbors: [A: NeighborOf<A>] = [:]
        var nexthops: [UInt32: NexthopOf<A>] = [:]
        var routes: [RouteKeyOf<A>: RouteOf<A>] = [:]
        let index: Int32

        init(_ snapshot: KernelSnapshotOf<A>, index: Int32) {
            self.index = index
            device = snapshot.device
            addresses = snapshot.addresses
            for e in snapshot.fdb { fdb[e.mac, default: []].append(e) }
            for n in snapshot.neighbors { neighbors[n.ip] = n }
            for n in snapshot.nexthops { nexthops[n.id] = n }
            for r in snapshot.routes { routes[r.key] = r }
        }

        var snapshot: KernelSnapshotOf<A> {
            KernelSnapshotOf(device: device, addresses: addresses, fdb: fdb.values.flatMap { $0 }, neighbors: Array(neighbors.values),
                             nexthops: Array(nexthops.values), routes: Array(routes.values))
        }

        /// Applies a change; returns the events the kernel sends for it.
        mutating func apply(_ change: ChangeOf<A>, own: Bool = true) -> [KernelEventOf<A>] {
            switch change {
            case .add(let entry), .replace(_, let entry):
                switch entry {
                case .fdb(let e):
                    if var remotes = fdb[e.mac], !remotes.isEmpty { remotes[0] = e; fdb[e.mac] = remotes } else { fdb[e.mac] = [e] }
                    return [KernelEventOf(.entry(entry))]  // FDB notifications carry port 0
                case .neighbor(let n): neighbors[n.ip] = n
                case .nexthop(var n): n.deviceIndex = n.deviceIndex ?? index; nexthops[n.id] = n
                case .route(var r): if r.nexthopID == nil { r.deviceIndex = r.deviceIndex ?? index }; routes[r.key] = r
                case .address: break
                }
                return [KernelEventOf(.entry(entry), own: own, replace: true)]
            case .remove(let entry):
                switch entry {
                case .fdb(let e):
                    fdb[e.mac]?.removeAll { $0 == e }
                    if fdb[e.mac]?.isEmpty == true { fdb[e.mac] = nil }
                    return [KernelEventOf(.entry(entry), deleted: true)]
                case .neighbor(let n): neighbors[n.ip] = nil
                case .nexthop(let n):
                    nexthops[n.id] = nil
                    routes = routes.filter { $0.value.nexthopID != n.id }
                case .route(let r): routes[r.key] = nil
                case .address: break
                }
                return [KernelEventOf(.entry(entry), deleted: true, own: own)]
            default:
                Issue.record("device change in an incremental pass: \(change)")
                return []
            }
        }
    }

    /// The kernel of a dual-stack (or IPv6-only) node: both planes.
    struct Kernel {
        var v4: Plane<IPv4Address>
        var v6: Plane<IPv6Address>

        init(holding desired: DesiredState, _ desired6: DesiredState6) {
            v4 = Plane(desired.device == nil ? KernelSnapshot() : Fixture.kernel(holding: desired, index: IncrementalIPv6Tests.index),
                       index: IncrementalIPv6Tests.index)
            // With what the kernel keeps on an IPv6 device by itself: fe80::/64, the address's own route.
            v6 = Plane(Fixture6.kernel(holding: desired6), index: IncrementalIPv6Tests.index6)
        }
    }

    /// The agent's side, as the daemon keeps it: each plane's picture and index,
    /// and the peers it knows in one `PeerTable` both indexes read (the
    /// reconciler's), changed before each pass and settled after it.
    struct Agent {
        let stack: Stack
        var picture: KernelPicture
        var desired: DesiredIndex
        var picture6: KernelPicture6
        var desired6: DesiredIndex6
        let peers: PeerTable
        var fullPasses: [String] = []

        init(stack: Stack, peers: [NodeRecord], kernel: Kernel) throws {
            try self.init(stack: stack, table: PeerTable(peers), kernel: kernel)
        }

        init(stack: Stack, table: PeerTable, kernel: Kernel) throws {
            self.stack = stack
            peers = table
            let records = table.sorted
            let (state, state6) = try Self.states(stack, records)
            let view = stack.view(records)
            picture = KernelPicture(kernel.v4.snapshot)
            desired = DesiredIndex(desired: state, view: view, host: IncrementalIPv6Tests.host(), table: table)
            picture6 = KernelPicture6(kernel.v6.snapshot)
            desired6 = try DesiredIndex6(desired: state6, view: view, host: IncrementalIPv6Tests.host(), table: table)
            #expect(!desired.ownsTable && !desired6.ownsTable, "both indexes read the one table")
        }

        static func states(_ stack: Stack, _ peers: [NodeRecord]) throws -> (DesiredState, DesiredState6) {
            let view = stack.view(peers)
            return (DesiredState(view: view, host: IncrementalIPv6Tests.host(), settings: AgentSettings()),
                    try DesiredState6(view: view, network: Fixture6.network, host: IncrementalIPv6Tests.host(), settings: AgentSettings()))
        }

        /// A full pass of both planes, as `sync` does it, then fresh pictures and indexes.
        mutating func full(_ kernel: inout Kernel, why: String) throws {
            let passes = fullPasses + [why]
            let (state, state6) = try Self.states(stack, peers.sorted)
            for change in try Differ.plan(desired: state, snapshot: kernel.v4.snapshot).changes { _ = kernel.v4.apply(change) }
            for change in try Differ.plan(desired: state6, snapshot: kernel.v6.snapshot).changes { _ = kernel.v6.apply(change) }
            self = try Agent(stack: stack, table: peers, kernel: kernel)
            fullPasses = passes
        }

        /// One pass of what arrived, as `LiveSync.incremental` makes it; returns
        /// the changes written in each plane (nil: it took a full pass).
        @discardableResult
        mutating func pass(_ kernel: inout Kernel, upserts: [NodeRecord] = [], removals: [String] = [],
                           events: [KernelEvent] = [], events6: [KernelEvent6] = []) throws -> (v4: [Change], v6: [Change6])? {
            // As the reconciler: the last pass's removals are taken in, their slots free for these upserts.
            peers.settle()
            var previous: [String: NodeRecord] = [:]
            for key in removals { previous[key] = peers.remove(key) }
            for record in upserts { previous[record.origin] = peers.upsert(record) }
            let network = stack.network
            var keys = Set<EntryKey>(), keys6 = Set<EntryKey6>()
            for event in events {
                switch picture.note(event, proto: IncrementalIPv6Tests.proto, network: network.enableIPv4 ? network.network : nil) {
                case .ignored: continue
                case .touched(let touched): keys.formUnion(touched)
                case .fullPass(let why): try full(&kernel, why: why); return nil
                }
            }
            for event in events6 {
                switch picture6.note(event, proto: IncrementalIPv6Tests.proto, network: Fixture6.network) {
                case .ignored: continue
                case .touched(let touched): keys6.formUnion(touched)
                case .fullPass(let why): try full(&kernel, why: why); return nil
                }
            }
            guard let touched = desired.update(upserts: upserts, removals: removals, previous: previous) else {
                try full(&kernel, why: "IPv4 lease"); return nil
            }
            guard let touched6 = desired6.update(upserts: upserts, removals: removals, previous: previous) else {
                try full(&kernel, why: "IPv6 lease"); return nil
            }
            keys.formUnion(touched)
            keys6.formUnion(touched6)
            let changes = Differ.plan(keys: keys, desired: desired, picture: picture).changes
            let changes6 = Differ.plan(keys: keys6, desired: desired6, picture: picture6).changes
            var echoes: [KernelEvent] = [], echoes6: [KernelEvent6] = []
            for change in changes { echoes += kernel.v4.apply(change) }
            for change in changes6 { echoes6 += kernel.v6.apply(change) }
            // As LiveSync: each plane's batch taken in at once.
            picture.record(changes)
            picture6.record(changes6)
            // The echoes of its own writes change nothing.
            if !echoes.isEmpty || !echoes6.isEmpty {
                let echoed = try pass(&kernel, events: echoes, events6: echoes6)
                #expect(echoed.map { $0.v4.isEmpty && $0.v6.isEmpty } == true, "the echoes of \(changes) \(changes6) made changes: \(String(describing: echoed))")
            }
            return (changes, changes6)
        }

        /// The full diff of both planes of the same view against the kernel: empty when the incremental path got it right.
        func remaining(_ kernel: Kernel) throws -> [String] {
            let (state, state6) = try Self.states(stack, peers.sorted)
            return try Differ.plan(desired: state, snapshot: kernel.v4.snapshot).changes.map { "\($0)" }
                + Differ.plan(desired: state6, snapshot: kernel.v6.snapshot).changes.map { "\($0)" }
        }
    }

    static func start(_ stack: Stack, _ peers: [NodeRecord]) throws -> (Kernel, Agent) {
        let (state, state6) = try Agent.states(stack, peers)
        let kernel = Kernel(holding: state, state6)
        return (kernel, try Agent(stack: stack, peers: peers, kernel: kernel))
    }

    static func kinds<A>(_ changes: [ChangeOf<A>]) -> [String] { changes.map { $0.target?.kind ?? "device" }.sorted() }
    static func allAdds<A>(_ changes: [ChangeOf<A>]) -> Bool { changes.allSatisfy { if case .add = $0 { true } else { false } } }
    static func allRemovals<A>(_ changes: [ChangeOf<A>]) -> Bool { changes.allSatisfy { if case .remove = $0 { true } else { false } } }

    @Test("a new lease is four writes in each plane (none in IPv4 when IPv6-only), a lease gone as many removals; no full pass",
          arguments: Stack.allCases)
    func oneLease(stack: Stack) throws {
        var (kernel, agent) = try Self.start(stack, (2...30).map { stack.peer($0) })
        let added = try #require(try agent.pass(&kernel, upserts: [stack.peer(60)]))
        #expect(Self.kinds(added.v6) == ["fdb", "neigh", "nexthop", "route"] && Self.allAdds(added.v6))
        #expect(Self.kinds(added.v4) == (stack == .dual ? ["fdb", "neigh", "nexthop", "route"] : []) && Self.allAdds(added.v4))
        let route = try #require(added.v6.compactMap { if case .add(.route(let r)) = $0 { r } else { nil } }.first)
        #expect(route.dst == IPv6Prefix("fd00:10:244:3c::/64")! && route.priority == DesiredState6.routeMetric)
        let removed = try #require(try agent.pass(&kernel, removals: [stack.peer(7).origin]))
        #expect(removed.v6.count == 4 && Self.allRemovals(removed.v6))
        #expect(removed.v4.count == (stack == .dual ? 4 : 0) && Self.allRemovals(removed.v4))
        #expect(try agent.remaining(kernel) == [])
        #expect(agent.fullPasses == [])
    }

    @Test("a lease gone and a new one in one pass, both indexes on the one table: the new lease does not take the gone one's slot while the indexes still read it; no full pass",
          arguments: Stack.allCases)
    func goneAndNewInOnePass(stack: Stack) throws {
        var (kernel, agent) = try Self.start(stack, (2...30).map { stack.peer($0) })
        let both = try #require(try agent.pass(&kernel, upserts: [stack.peer(60)], removals: [stack.peer(7).origin]))
        #expect(both.v6.count == 8 && both.v4.count == (stack == .dual ? 8 : 0))
        #expect(agent.peers.count == 29 && agent.peers[stack.peer(7).origin] == nil && agent.peers[stack.peer(60).origin] != nil)
        // The next pass's lease takes the freed slot.
        let next = try #require(try agent.pass(&kernel, upserts: [stack.peer(61)]))
        #expect(next.v6.count == 4 && Self.allAdds(next.v6))
        #expect(agent.desired6.isProgrammed(stack.peer(61).origin) && !agent.desired6.isProgrammed(stack.peer(7).origin))
        #expect(agent.desired6.peerCount == 30 && agent.desired.peerCount == (stack == .dual ? 30 : 0))
        #expect(try agent.remaining(kernel) == [])
        #expect(agent.fullPasses == [])
    }

    @Test("a lease's IPv6 half moves to another public IPv6: one FDB replace in the IPv6 plane, nothing in the IPv4 plane",
          arguments: Stack.allCases)
    func ipv6HalfMoves(stack: Stack) throws {
        var (kernel, agent) = try Self.start(stack, (2...20).map { stack.peer($0) })
        var moved = stack.peer(5)
        moved.ipv6?.vtepMAC = MACAddress("0a:01:00:00:00:05")!
        var (k2, a2) = try Self.start(stack, (2...20).map { $0 == 5 ? moved : stack.peer($0) })
        moved.ipv6?.publicIP = IPv6Address("2001:2::105")!
        let changes = try #require(try a2.pass(&k2, upserts: [moved]))
        #expect(changes.v4 == [])
        guard changes.v6.count == 1, case .replace(.fdb(let old), .fdb(let new)) = changes.v6[0] else {
            Issue.record("expected one IPv6 FDB replace, got \(changes.v6)")
            return
        }
        #expect(old.dst == IPv6Address("2001:2::5")! && new.dst == IPv6Address("2001:2::105")! && new.mac == old.mac)
        #expect(try a2.remaining(k2) == [] && a2.fullPasses == [])
        _ = try agent.pass(&kernel)
        #expect(try agent.remaining(kernel) == [])
    }

    @Test("a lease's IPv6 half that takes another subnet replaces its IPv6 entries only (dual: the IPv4 plane untouched)")
    func ipv6SubnetChanges() throws {
        var (kernel, agent) = try Self.start(.dual, (2...20).map { Self.peer($0) })
        let changed = Self.peer(6, subnet6: 0x66)
        let changes = try #require(try agent.pass(&kernel, upserts: [changed]))
        #expect(changes.v4 == [])
        #expect(changes.v6.contains(.add(.route(Route6(dst: IPv6Prefix("fd00:10:244:66::/64")!, gateway: IPv6Address("fd00:10:244:66::")!,
                                                         nexthopID: AgentSettings.nexthopIDBase6 + 0x66, proto: Self.proto,
                                                         priority: DesiredState6.routeMetric)))), "\(changes.v6)")
        #expect(changes.v6.contains { if case .remove(.route(let r)) = $0 { r.dst == IPv6Prefix("fd00:10:244:6::/64")! } else { false } })
        #expect(try agent.remaining(kernel) == [] && agent.fullPasses == [])
    }

    @Test("a lease whose IPv6 half collides with another's claim, or is wrong on its own, is left to a full pass",
          arguments: [
            ("the IPv6 subnet of another peer", IncrementalIPv6Tests.peer(60, subnet6: 3)),
            ("the public IPv6 of another peer", IncrementalIPv6Tests.peer(60, ip6: 4)),
            ("this node's IPv6 subnet", IncrementalIPv6Tests.peer(60, subnet6: 1)),
            ("this node's public IPv6", IncrementalIPv6Tests.peer(60, ip6: 1)),
            ("an IPv6 subnet outside the IPv6 network", IncrementalIPv6Tests.peer(60, subnet6: 0x1000)),
          ])
    func collisions(what: String, record: NodeRecord) throws {
        var (kernel, agent) = try Self.start(.dual, (2...10).map { Self.peer($0) })
        #expect(try agent.pass(&kernel, upserts: [record]) == nil, "\(what)")
        #expect(agent.fullPasses == ["IPv6 lease"], "\(what)")
        #expect(try agent.remaining(kernel) == [])
        // The IPv4 half was programmed by the full pass; the IPv6 half was left out.
        #expect(kernel.v4.routes.keys.contains { $0.dst == record.subnet })
    }

    @Test("dual stack: a lease without an IPv6 half changes the IPv4 plane alone, without a full pass; given one later, it joins the IPv6 plane")
    func leaseWithoutIPv6Half() throws {
        var (kernel, agent) = try Self.start(.dual, (2...10).map { Self.peer($0) } + [Self.peer(11, ipv6: false)])
        #expect(kernel.v6.routes.keys.allSatisfy { $0.dst != IPv6Prefix("fd00:10:244:b::/64")! })
        var moved = Self.peer(11, ipv6: false)
        moved.publicIP = IPv4Address("198.18.1.111")!
        moved.name = "198.18.1.111"
        let changes = try #require(try agent.pass(&kernel, upserts: [moved]))
        // Its derived VTEP MAC moves with its public IP: FDB entry and neighbor, in the IPv4 plane only.
        #expect(Self.kinds(changes.v4) == ["fdb", "fdb", "neigh"] && changes.v6 == [])
        let joined = try #require(try agent.pass(&kernel, upserts: [Self.peer(11)]))
        #expect(Self.kinds(joined.v6) == ["fdb", "neigh", "nexthop", "route"])
        let gone = try #require(try agent.pass(&kernel, upserts: [Self.peer(11, ipv6: false)]))
        #expect(gone.v6.count == 4 && Self.allRemovals(gone.v6))
        #expect(try agent.remaining(kernel) == [] && agent.fullPasses == [])
    }

    @Test("tampering with one IPv6 entry is repaired by diffing that key alone", arguments: Stack.allCases)
    func tampering(stack: Stack) throws {
        var (kernel, agent) = try Self.start(stack, (2...30).map { stack.peer($0) })
        let victim = try #require(stack.peer(9).ipv6)
        let route = try #require(kernel.v6.routes.values.first { $0.dst == victim.subnet })
        let neighbor = try #require(kernel.v6.neighbors[victim.vtepAddress])
        let fdb = try #require(kernel.v6.fdb[victim.mac(vni: 1)]?.first)
        let cases: [(String, Change6)] = [
            ("route deleted (ip -6 route del)", .remove(.route(route))),
            ("neighbor deleted", .remove(.neighbor(neighbor))),
            ("FDB entry deleted", .remove(.fdb(fdb))),
            ("neighbor with another MAC", .replace(from: .neighbor(neighbor), to: .neighbor(Neighbor6(ip: neighbor.ip, mac: MACAddress("02:00:00:00:00:99")!)))),
            ("stray neighbor", .add(.neighbor(Neighbor6(ip: IPv6Address("fd00:10:244:c8::")!, mac: MACAddress("02:00:00:00:00:98")!)))),
            ("stray route on the device", .add(.route(Route6(dst: IPv6Prefix("fd00:10:244:c9::/64")!, gateway: nil, proto: 4,
                                                             priority: 1024, deviceIndex: IncrementalIPv6Tests.index6)))),
        ]
        for (what, tamper) in cases {
            let events = kernel.v6.apply(tamper, own: false)
            let repair = try #require(try agent.pass(&kernel, events6: events), "\(what)")
            #expect(repair.v6.count == 1 && repair.v4 == [], "\(what): \(repair)")
            #expect(try agent.remaining(kernel) == [], "\(what)")
        }
        // A deleted IPv6 nexthop takes its route with it, silently; both come back.
        let nexthop = try #require(kernel.v6.nexthops.values.first)
        let repair = try #require(try agent.pass(&kernel, events6: kernel.v6.apply(.remove(.nexthop(nexthop)), own: false)))
        #expect(Set(repair.v6.map { $0.target?.kind ?? "" }) == ["nexthop", "route"])
        #expect(try agent.remaining(kernel) == [])
        #expect(agent.fullPasses == [])
    }

    @Test("IPv6 events the incremental path ignores, and those only a full pass can decide")
    func ipv6Events() throws {
        var (kernel, agent) = try Self.start(.dual, (2...5).map { Self.peer($0) })
        let ignored: [(String, KernelEvent6)] = [
            ("the kernel's fe80::/64 on a new link", KernelEvent6(.entry(.route(Route6(dst: IPv6Prefix("fe80::/64")!, gateway: nil, onlink: false,
                                                                                        proto: 2, priority: 256, deviceIndex: 31))))),
            ("a route outside the IPv6 network", KernelEvent6(.entry(.route(Route6(dst: IPv6Prefix("2001:db8::/32")!, gateway: IPv6Address("2001:2::fe")!,
                                                                                    onlink: false, proto: 3, priority: 1024, deviceIndex: 2))))),
            ("the agent's own device change", KernelEvent6(.device("device flannel-v6.1 changed"), own: true)),
        ]
        for (what, event) in ignored {
            #expect(agent.picture6.note(event, proto: Self.proto, network: Fixture6.network) == .ignored, "\(what)")
        }
        let full: [(String, KernelEvent6)] = [
            ("the device changed", KernelEvent6(.device("device flannel-v6.1 changed"))),
            ("a connected network inside the IPv6 pod network", KernelEvent6(.entry(.route(Route6(dst: IPv6Prefix("fd00:10:244:80::/57")!, gateway: nil,
                                                                                                   onlink: false, proto: 2, priority: 256, deviceIndex: 2))))),
            ("someone else's route takes a peer's key", KernelEvent6(.entry(.route(Route6(dst: IPv6Prefix("fd00:10:244:3::/64")!, gateway: IPv6Address("2001:2::fe")!,
                                                                                          onlink: false, proto: 4, priority: 1024, deviceIndex: 2))), replace: true)),
        ]
        for (what, event) in full {
            var picture = agent.picture6
            guard case .fullPass = picture.note(event, proto: Self.proto, network: Fixture6.network) else {
                Issue.record("\(what): not a full pass")
                continue
            }
        }
        #expect(try agent.pass(&kernel, events6: [full[0].1]) == nil)
        #expect(agent.fullPasses == ["device flannel-v6.1 changed"])
    }

    @Test("IPv6-only: the IPv4 plane holds nothing and decides nothing; no foreign IPv4 route sends a lease to a full pass")
    func ipv6OnlyIPv4Plane() throws {
        var (kernel, agent) = try Self.start(.ipv6Only, (2...10).map { Self.peer6($0) })
        #expect(agent.desired.peerCount == 0 && agent.desired.device == nil && agent.desired6.peerCount == 9)
        // flannel's empty IPv4 values (0.0.0.0, 0.0.0.0/0) are never read: every peer "shares" them.
        let changes = try #require(try agent.pass(&kernel, upserts: [Self.peer6(20)], removals: [Self.peer6(3).origin]))
        #expect(changes.v4 == [] && changes.v6.count == 8)
        let foreign = KernelEvent(.entry(.route(Route(dst: IPv4Prefix("10.0.0.0/8")!, gateway: nil, onlink: false, proto: 2, deviceIndex: 2, scope: 253))))
        #expect(try agent.pass(&kernel, events: [foreign]).map { $0.v4.isEmpty && $0.v6.isEmpty } == true)
        #expect(try agent.remaining(kernel) == [] && agent.fullPasses == [])
    }

    @Test("the IPv6 desired index derives, for every key, the entry DesiredState6 holds", arguments: RouteLayout.allCases)
    func derivedEntries(layout: RouteLayout) throws {
        let settings = AgentSettings(layout: layout)
        let peers = (2...40).map { Self.peer($0) }
        let view = Stack.dual.view(peers)
        let full = try DesiredState6(view: view, network: Fixture6.network, host: Self.host(), settings: settings)
        let index = try DesiredIndex6(desired: full, view: view, host: Self.host())
        let entries = full.fdb.map(Entry6.fdb) + full.neighbors.map(Entry6.neighbor) + full.nexthops.map(Entry6.nexthop) + full.routes.map(Entry6.route)
        #expect(entries.count == (layout == .nexthop ? 4 : 3) * peers.count)
        for entry in entries { #expect(index.want(try #require(entry.key)) == entry) }
        #expect(index.want(.route(RouteKey6(dst: IPv6Prefix("fd00:10:244:99::/64")!, priority: 1024))) == nil)
        #expect(index.peerCount == peers.count)
    }

    @Test("the packed IPv6 picture gives back every entry it took")
    func packedTables() {
        let ip = IPv6Address("2001:2::2")!
        var fdb = PackedTable<FDBEntry6>()
        let remotes = [FDBEntry6(mac: MACAddress(value: 1), dst: ip), FDBEntry6(mac: MACAddress(value: 2), dst: ip, port: 4789)]
        for entry in remotes { fdb[entry.mac] = entry }
        #expect(remotes.allSatisfy { fdb[$0.mac] == $0 } && fdb.count == 2)
        var routes = PackedTable<Route6>()
        let all = [Route6(dst: IPv6Prefix("fd00:10:244:2::/64")!, gateway: IPv6Address("fd00:10:244:2::")!, nexthopID: 5, proto: 152,
                          priority: 1024, deviceIndex: 8),
                   Route6(dst: IPv6Prefix("fd00:10:244:3::/64")!, gateway: nil, nexthopID: nil, onlink: false, proto: 4, priority: 9,
                          deviceIndex: nil, type: 6)]
        for route in all { routes[route.key] = route }
        #expect(all.allSatisfy { routes[$0.key] == $0 })
        var nexthops = PackedTable<Nexthop6>()
        let hop = Nexthop6(id: 1, gateway: ip, proto: 152, deviceIndex: 8)
        nexthops[1] = hop
        #expect(nexthops[1] == hop)
    }

    /// Random leases (both halves), random tampering in both planes, seeded: after
    /// every pass both planes are what a full sync of the same view leaves.
    @Test("randomized: every incremental pass leaves both planes as a full sync would", arguments: Stack.allCases, 1...12)
    func randomized(stack: Stack, seed: UInt64) throws {
        var rng = SeededRandom(seed: seed &* 7919)
        var leases = (2...40).map { stack.peer($0) }
        var (kernel, agent) = try Self.start(stack, leases)
        var next = 100
        for step in 0..<60 {
            switch rng.next() % 9 {
            case 0: // a new lease, sometimes colliding with another in the IPv6 plane
                let collide = rng.next() % 4 == 0
                let record = collide ? stack.peer(next, ip6: Int(rng.next() % 40) + 2) : stack.peer(next, subnet6: 100 + next % 150)
                next += 1
                leases.append(record)
                try agent.pass(&kernel, upserts: [record])
            case 1: // a lease gone
                guard !leases.isEmpty else { continue }
                let gone = leases.remove(at: Int(rng.next() % UInt64(leases.count)))
                try agent.pass(&kernel, removals: [gone.origin])
            case 2: // a lease's IPv6 half moves to another public IPv6
                guard !leases.isEmpty else { continue }
                let at = Int(rng.next() % UInt64(leases.count))
                leases[at].ipv6?.publicIP = IPv6Address("2001:3::\(String(rng.next() % 250 + 2, radix: 16))")!
                try agent.pass(&kernel, upserts: [leases[at]])
            case 3: // a lease's IPv6 half goes (dual) or its IPv4 half moves
                guard !leases.isEmpty, stack == .dual else { continue }
                let at = Int(rng.next() % UInt64(leases.count))
                if rng.next() % 2 == 0 { leases[at].ipv6 = nil } else { leases[at].publicIP = IPv4Address("198.18.2.\(rng.next() % 250 + 2)")! }
                try agent.pass(&kernel, upserts: [leases[at]])
            case 4: // an IPv6 route deleted by someone
                guard let route = kernel.v6.routes.values.filter({ $0.proto == Self.proto }).randomElement(using: &rng) else { continue }
                try agent.pass(&kernel, events6: kernel.v6.apply(.remove(.route(route)), own: false))
            case 5: // an IPv6 FDB entry deleted by someone
                guard let entry = kernel.v6.fdb.values.randomElement(using: &rng)?.first else { continue }
                try agent.pass(&kernel, events6: kernel.v6.apply(.remove(.fdb(entry)), own: false))
            case 6: // an IPv6 neighbor's MAC changed by someone
                guard let neighbor = kernel.v6.neighbors.values.randomElement(using: &rng) else { continue }
                var changed = neighbor
                changed.mac = MACAddress(value: 0x0200_0000_0000 | rng.next() % 0xffff)
                try agent.pass(&kernel, events6: kernel.v6.apply(.replace(from: .neighbor(neighbor), to: .neighbor(changed)), own: false))
            case 8: // a lease gone and a new one in one pass: the gone one's slot is not the new one's
                guard !leases.isEmpty else { continue }
                let gone = leases.remove(at: Int(rng.next() % UInt64(leases.count)))
                let record = stack.peer(next, subnet6: 100 + next % 150)
                next += 1
                leases.append(record)
                try agent.pass(&kernel, upserts: [record], removals: [gone.origin])
            default: // an IPv4 route deleted by someone (dual stack)
                guard let route = kernel.v4.routes.values.randomElement(using: &rng) else { continue }
                try agent.pass(&kernel, events: kernel.v4.apply(.remove(.route(route)), own: false))
            }
            let left = try agent.remaining(kernel)
            #expect(left == [], "\(stack) seed \(seed), step \(step): a full diff still finds \(left)")
            if !left.isEmpty { return }
        }
    }
}
