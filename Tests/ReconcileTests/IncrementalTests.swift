import Foundation
import Model
@testable import Reconcile
import Testing

/// The daemon's incremental path (`KernelPicture`, `DesiredIndex`, `Differ.plan(keys:)`)
/// against the full diff: whatever it does, the kernel ends where a full sync
/// would leave it, and what it cannot decide alone it hands to a full pass.
@Suite("Incremental reconcile")
struct IncrementalTests {
    static let proto = AgentSettings.defaultProtocol
    static let index: Int32 = 7

    static func host() -> HostFacts { HostFacts(underlay: Fixture.underlay) }

    static func peer(_ n: Int, ip: Int? = nil, subnet: Int? = nil, mac: String? = nil) -> NodeRecord {
        NodeRecord(name: "198.18.1.\(ip ?? n)", publicIP: IPv4Address("198.18.1.\(ip ?? n)")!,
                   subnet: IPv4Prefix("10.244.\(subnet ?? n).0/24")!, vtepMAC: mac.flatMap { MACAddress($0) },
                   origin: "/coreos.com/network/subnets/lease-\(n)")
    }

    static func view(_ peers: [NodeRecord]) -> ClusterView { Fixture.view(peers: peers) }

    /// A kernel in memory, written by the same changes the dataplane sends,
    /// with the kernel's own rules (a replaced FDB entry rewrites the MAC's
    /// first remote; deleting a nexthop deletes its routes).
    struct Kernel {
        var device: LinkState
        var address: [IPv4Prefix]
        var fdb: [MACAddress: [FDBEntry]] = [:]
        var neighbors: [IPv4Address: Neighbor] = [:]
        var nexthops: [UInt32: Nexthop] = [:]
        var routes: [RouteKey: Route] = [:]

        init(holding desired: DesiredState) {
            let snapshot = Fixture.kernel(holding: desired, index: IncrementalTests.index)
            device = snapshot.device!
            address = snapshot.addresses
            for e in snapshot.fdb { fdb[e.mac, default: []].append(e) }
            for n in snapshot.neighbors { neighbors[n.ip] = n }
            for n in snapshot.nexthops { nexthops[n.id] = n }
            for r in snapshot.routes { routes[r.key] = r }
        }

        var snapshot: KernelSnapshot {
            KernelSnapshot(device: device, addresses: address, fdb: fdb.values.flatMap { $0 }, neighbors: Array(neighbors.values),
                           nexthops: Array(nexthops.values), routes: Array(routes.values))
        }

        /// Applies a change; returns the events the kernel sends for it.
        mutating func apply(_ change: Change, own: Bool = true) -> [KernelEvent] {
            switch change {
            case .add(let entry), .replace(_, let entry):
                switch entry {
                case .fdb(let e):
                    if var remotes = fdb[e.mac], !remotes.isEmpty { remotes[0] = e; fdb[e.mac] = remotes } else { fdb[e.mac] = [e] }
                    return [KernelEvent(.entry(entry))]  // FDB notifications carry port 0
                case .neighbor(let n): neighbors[n.ip] = n
                case .nexthop(var n): n.deviceIndex = IncrementalTests.index; nexthops[n.id] = n
                case .route(var r): if r.nexthopID == nil { r.deviceIndex = IncrementalTests.index }; routes[r.key] = r
                case .address: break
                }
                return [KernelEvent(.entry(entry), own: own, replace: true)]
            case .remove(let entry):
                switch entry {
                case .fdb(let e):
                    fdb[e.mac]?.removeAll { $0 == e }
                    if fdb[e.mac]?.isEmpty == true { fdb[e.mac] = nil }
                    return [KernelEvent(.entry(entry), deleted: true)]
                case .neighbor(let n): neighbors[n.ip] = nil
                case .nexthop(let n):
                    nexthops[n.id] = nil
                    routes = routes.filter { $0.value.nexthopID != n.id }  // silently
                case .route(let r): routes[r.key] = nil
                case .address: break
                }
                return [KernelEvent(.entry(entry), deleted: true, own: own)]
            default:
                Issue.record("device change in an incremental pass: \(change)")
                return []
            }
        }
    }

    /// The agent's side: the picture, the index, and the peers it knows.
    struct Agent {
        var picture: KernelPicture
        var desired: DesiredIndex
        var peers: [String: NodeRecord]
        var fullPasses = 0

        init(peers: [NodeRecord], kernel: Kernel) {
            self.peers = Dictionary(uniqueKeysWithValues: peers.map { ($0.origin, $0) })
            let view = IncrementalTests.view(peers)
            picture = KernelPicture(kernel.snapshot)
            desired = DesiredIndex(desired: DesiredState(view: view, host: IncrementalTests.host(), settings: AgentSettings()),
                                   view: view, host: IncrementalTests.host())
        }

        /// A full pass: as `sync` does it, then a fresh picture and index.
        mutating func full(_ kernel: inout Kernel) {
            fullPasses += 1
            let view = IncrementalTests.view(peers.values.sorted { $0.origin < $1.origin })
            let desiredState = DesiredState(view: view, host: IncrementalTests.host(), settings: AgentSettings())
            let plan = try! Differ.plan(desired: desiredState, snapshot: kernel.snapshot)
            for change in plan.changes { _ = kernel.apply(change) }
            picture = KernelPicture(kernel.snapshot)
            desired = DesiredIndex(desired: desiredState, view: view, host: IncrementalTests.host())
        }

        /// One pass of what arrived; returns the changes written (nil: it took a full pass).
        @discardableResult
        mutating func pass(_ kernel: inout Kernel, upserts: [NodeRecord] = [], removals: [String] = [],
                           events: [KernelEvent] = []) -> [Change]? {
            var previous: [String: NodeRecord] = [:]
            for key in removals { previous[key] = peers.removeValue(forKey: key) }
            for record in upserts { previous[record.origin] = peers.updateValue(record, forKey: record.origin) }
            var keys = Set<EntryKey>()
            for event in events {
                switch picture.note(event, proto: IncrementalTests.proto, network: Fixture.network.network) {
                case .ignored: continue
                case .touched(let touched): keys.formUnion(touched)
                case .fullPass: full(&kernel); return nil
                }
            }
            guard let touched = desired.update(upserts: upserts, removals: removals, previous: previous) else { full(&kernel); return nil }
            keys.formUnion(touched)
            let changes = Differ.plan(keys: keys, desired: desired, picture: picture).changes
            var echoes: [KernelEvent] = []
            for change in changes { echoes += kernel.apply(change) }
            // As LiveSync: the batch taken in at once.
            picture.record(changes)
            // The echoes of its own writes change nothing.
            if !echoes.isEmpty {
                let echoed = pass(&kernel, events: echoes)
                #expect(echoed == [], "the echoes of \(changes) made changes: \(echoed ?? [])")
            }
            return changes
        }

        /// The full diff of the same view against the kernel: empty when the incremental path got it right.
        func remaining(_ kernel: Kernel) -> [Change] {
            let view = IncrementalTests.view(peers.values.sorted { $0.origin < $1.origin })
            let desiredState = DesiredState(view: view, host: IncrementalTests.host(), settings: AgentSettings())
            return try! Differ.plan(desired: desiredState, snapshot: kernel.snapshot).changes
        }
    }

    static func start(_ peers: [NodeRecord]) -> (Kernel, Agent) {
        let desired = DesiredState(view: view(peers), host: host(), settings: AgentSettings())
        let kernel = Kernel(holding: desired)
        return (kernel, Agent(peers: peers, kernel: kernel))
    }

    @Test("a new lease is four writes, a lease gone is four removals, and nothing else is touched")
    func oneLease() throws {
        var (kernel, agent) = Self.start((2...50).map { Self.peer($0) })
        let added = try #require(agent.pass(&kernel, upserts: [Self.peer(60)]))
        #expect(added.map { $0.target?.kind ?? "device" }.sorted() == ["fdb", "neigh", "nexthop", "route"])
        #expect(added.allSatisfy { if case .add = $0 { true } else { false } })
        let removed = try #require(agent.pass(&kernel, removals: [Self.peer(7).origin]))
        #expect(removed.count == 4)
        #expect(removed.allSatisfy { if case .remove = $0 { true } else { false } })
        #expect(agent.remaining(kernel) == [])
        #expect(agent.fullPasses == 0)
    }

    @Test("a lease that moves to another public IP replaces its FDB entry and nothing else")
    func leaseMoves() throws {
        var (kernel, agent) = Self.start((2...20).map { Self.peer($0) })
        // Same subnet and VTEP MAC, new public IP (a node re-addressed).
        let moved = Self.peer(5, ip: 205, mac: "0e:00:00:00:00:05")
        var (k2, a2) = Self.start((2...20).map { $0 == 5 ? Self.peer(5, mac: "0e:00:00:00:00:05") : Self.peer($0) })
        let changes = try #require(a2.pass(&k2, upserts: [moved]))
        #expect(changes.count == 1)
        guard case .replace(.fdb(let old), .fdb(let new))? = changes.first else {
            Issue.record("expected an FDB replace, got \(changes)")
            return
        }
        #expect(old.dst == IPv4Address("198.18.1.5")! && new.dst == IPv4Address("198.18.1.205")!)
        #expect(a2.remaining(k2) == [])
        _ = agent.pass(&kernel)
        #expect(agent.remaining(kernel) == [])
    }

    @Test("a lease that collides with another peer, or is skipped, is left to a full pass",
          arguments: [
            ("the subnet of another peer", IncrementalTests.peer(60, subnet: 3)),
            ("the public IP of another peer", IncrementalTests.peer(60, ip: 4)),
            ("this node's public IP", NodeRecord(name: "x", publicIP: Fixture.node(1).publicIP,
                                                 subnet: IPv4Prefix("10.244.60.0/24")!, origin: "/k/x")),
            ("a subnet outside the network", NodeRecord(name: "x", publicIP: IPv4Address("198.18.1.60")!,
                                                        subnet: IPv4Prefix("10.9.0.0/24")!, origin: "/k/x")),
          ])
    func collisions(what: String, record: NodeRecord) {
        var (kernel, agent) = Self.start((2...10).map { Self.peer($0) })
        #expect(agent.pass(&kernel, upserts: [record]) == nil, "\(what)")
        #expect(agent.fullPasses == 1)
        #expect(agent.remaining(kernel) == [])
    }

    @Test("tampering with one entry is repaired by diffing that key alone")
    func tampering() throws {
        var (kernel, agent) = Self.start((2...30).map { Self.peer($0) })
        let victim = Self.peer(9)
        let route = try #require(kernel.routes.values.first { $0.dst == victim.subnet })
        let neighbor = try #require(kernel.neighbors[victim.vtepAddress])
        let cases: [(String, Change)] = [
            ("route deleted", .remove(.route(route))),
            ("neighbor deleted", .remove(.neighbor(neighbor))),
            ("neighbor with another MAC", .replace(from: .neighbor(neighbor), to: .neighbor(Neighbor(ip: neighbor.ip, mac: MACAddress("02:00:00:00:00:99")!)))),
            ("stray neighbor", .add(.neighbor(Neighbor(ip: IPv4Address("10.244.200.0")!, mac: MACAddress("02:00:00:00:00:98")!)))),
            ("stray route on the device", .add(.route(Route(dst: IPv4Prefix("10.244.201.0/24")!, gateway: nil, proto: 4, deviceIndex: IncrementalTests.index)))),
        ]
        for (what, tamper) in cases {
            let events = kernel.apply(tamper, own: false)
            let repair = try #require(agent.pass(&kernel, events: events), "\(what)")
            #expect(repair.count == 1, "\(what): \(repair)")
            #expect(agent.remaining(kernel) == [], "\(what)")
        }
        #expect(agent.fullPasses == 0)
    }

    @Test("a deleted nexthop takes its route with it, silently; both come back")
    func nexthopDeleted() throws {
        var (kernel, agent) = Self.start((2...10).map { Self.peer($0) })
        let nexthop = try #require(kernel.nexthops.values.first)
        let events = kernel.apply(.remove(.nexthop(nexthop)), own: false)
        let repair = try #require(agent.pass(&kernel, events: events))
        #expect(Set(repair.map { $0.target?.kind ?? "" }) == ["nexthop", "route"])
        #expect(agent.remaining(kernel) == [])
    }

    @Test("a batch taken in at once: a removed nexthop takes its routes with it, but not a route added after it with a nexthop of the same id")
    func batchRecording() throws {
        let peers = (2...6).map { Self.peer($0) }
        let state = DesiredState(view: Self.view(peers), host: Self.host(), settings: AgentSettings())
        let snapshot = Fixture.kernel(holding: state, index: Self.index)
        let hops = snapshot.nexthops.sorted { $0.id < $1.id }
        let via = { (hop: Nexthop) in try #require(snapshot.routes.first { $0.nexthopID == hop.id }) }
        let (first, second) = (hops[0], hops[1])
        let (route1, route2) = (try via(first), try via(second))
        // Two nexthops gone in one batch: both their routes go too, the others stay.
        var picture = KernelPicture(snapshot)
        picture.record([.remove(.nexthop(first)), .remove(.nexthop(second))])
        #expect(picture.nexthops[first.id] == nil && picture.routes[route1.key] == nil && picture.routes[route2.key] == nil)
        #expect(picture.routes.count == snapshot.routes.count - 2 && picture.nexthops.count == hops.count - 2)
        // The same nexthop removed, added again, and a route via it, in one batch: the new route stays.
        var again = KernelPicture(snapshot)
        again.record([.remove(.nexthop(first)), .add(.nexthop(first)), .add(.route(route1)), .remove(.nexthop(second))])
        #expect(again.nexthops[first.id] == first && again.routes[route1.key]?.nexthopID == first.id)
        #expect(again.routes[route2.key] == nil && again.nexthops[second.id] == nil)
        // Taken in one by one, the same batch leaves the same picture.
        var oneByOne = KernelPicture(snapshot)
        for change in [Change.remove(.nexthop(first)), .add(.nexthop(first)), .add(.route(route1)), .remove(.nexthop(second))] {
            oneByOne.record(change)
        }
        #expect(Set(oneByOne.routes.map(\.value)) == Set(again.routes.map(\.value)))
        #expect(Set(oneByOne.nexthops.map(\.value)) == Set(again.nexthops.map(\.value)))
    }

    @Test("events that do not say what they replaced go to a full pass")
    func ambiguous() throws {
        var (kernel, agent) = Self.start((2...10).map { Self.peer($0) })
        let fdb = try #require(kernel.fdb.values.first?.first)
        // `bridge fdb append`: a second remote for a MAC; the kernel's message looks like a replace.
        var appended = fdb
        appended.dst = IPv4Address("198.18.9.9")!
        kernel.fdb[fdb.mac]!.append(appended)
        #expect(agent.pass(&kernel, events: [KernelEvent(.entry(.fdb(appended)))]) == nil)
        #expect(agent.remaining(kernel) == [])
        // Someone else's route takes a peer's destination.
        let route = try #require(kernel.routes.values.first)
        var foreign = route
        foreign.proto = 4
        foreign.nexthopID = nil
        foreign.deviceIndex = 2
        kernel.routes[route.key] = foreign
        #expect(agent.pass(&kernel, events: [KernelEvent(.entry(.route(foreign)), replace: true)]) == nil)
        #expect(agent.fullPasses == 2)
    }

    @Test("own echoes change nothing; unrelated routes are ignored")
    func ignored() {
        var (_, agent) = Self.start((2...5).map { Self.peer($0) })
        let unrelated = Route(dst: IPv4Prefix("192.0.2.0/24")!, gateway: nil, proto: 4, deviceIndex: 2)
        #expect(agent.picture.note(KernelEvent(.entry(.route(unrelated))), proto: Self.proto, network: Fixture.network.network) == .ignored)
        #expect(agent.picture.note(KernelEvent(.device("device flannel.1 changed"), own: true), proto: Self.proto,
                                   network: Fixture.network.network) == .ignored)
        #expect(agent.picture.note(KernelEvent(.device("device flannel.1 changed")), proto: Self.proto,
                                   network: Fixture.network.network) == .fullPass("device flannel.1 changed"))
    }

    @Test("the desired index derives, for every key, the entry the full desired state holds; a peer gone takes its keys, the next peer its slot",
          arguments: RouteLayout.allCases)
    func derivedEntries(layout: RouteLayout) throws {
        let settings = AgentSettings(layout: layout)
        let peers = (2...60).map { Self.peer($0) }
        let full = DesiredState(view: Self.view(peers), host: Self.host(), settings: settings)
        var index = DesiredIndex(desired: full, view: Self.view(peers), host: Self.host())
        func entries(_ desired: DesiredState) -> [Entry] {
            desired.fdb.map(Entry.fdb) + desired.neighbors.map(Entry.neighbor) + desired.nexthops.map(Entry.nexthop)
                + desired.routes.map(Entry.route)
        }
        for entry in entries(full) { #expect(index.want(try #require(entry.key)) == entry) }
        #expect(index.want(.fdb(MACAddress(value: 0x0200_0000_00ff))) == nil)
        #expect(index.want(.route(Route(dst: IPv4Prefix("10.244.99.0/24")!, gateway: nil, proto: 152).key)) == nil)

        // Peer 7 goes, peer 70 comes (in peer 7's slot).
        let gone = Self.peer(7), new = Self.peer(70)
        let updated = index.update(upserts: [new], removals: [gone.origin], previous: [gone.origin: gone])
        let touched = try #require(updated)
        let before = DesiredState(view: Self.view([gone]), host: Self.host(), settings: settings)
        let after = DesiredState(view: Self.view([new]), host: Self.host(), settings: settings)
        #expect(touched == Set(entries(before).compactMap(\.key) + entries(after).compactMap(\.key)))
        for entry in entries(before) { #expect(index.want(try #require(entry.key)) == nil) }
        for entry in entries(after) { #expect(index.want(try #require(entry.key)) == entry) }
        #expect(index.peerCount == peers.count)
    }

    @Test("the packed picture gives back every entry it took, those it cannot pack too")
    func packedTables() {
        let ip = IPv4Address("198.18.1.2")!
        let macs = (1...4).map { MACAddress(value: 0x0200_0000_0000 | UInt64($0)) }
        var fdb = PackedTable<FDBEntry>()
        let remotes = [FDBEntry(mac: macs[0], dst: ip), FDBEntry(mac: macs[1], dst: ip, permanent: false),
                       FDBEntry(mac: macs[2], dst: ip, port: 4789, vni: 2, via: 3)]
        for entry in remotes { fdb[entry.mac] = entry }
        #expect(remotes.allSatisfy { fdb[$0.mac] == $0 } && fdb.count == 3)
        // A whole entry replaced by one that packs, and the other way round.
        fdb[macs[1]] = FDBEntry(mac: macs[1], dst: ip)
        fdb[macs[0]] = remotes[1].with(mac: macs[0])
        #expect(fdb[macs[1]] == FDBEntry(mac: macs[1], dst: ip) && fdb[macs[0]] == remotes[1].with(mac: macs[0]) && fdb.count == 3)
        fdb[macs[2]] = nil
        #expect(fdb[macs[2]] == nil && fdb[macs[3]] == nil && fdb.count == 2)
        #expect(Set(fdb.map(\.value)) == [FDBEntry(mac: macs[1], dst: ip), remotes[1].with(mac: macs[0])])

        var neighbors = PackedTable<Neighbor>()
        let stale = Neighbor(ip: ip, mac: macs[0], permanent: false)
        neighbors[ip] = stale
        #expect(neighbors[ip] == stale)

        var nexthops = PackedTable<Nexthop>()
        let hops = [Nexthop(id: 1, gateway: ip, proto: 152, deviceIndex: 7), Nexthop(id: 2, gateway: ip, onlink: false, proto: 4),
                    Nexthop(id: 3, gateway: nil, proto: 152, group: [1, 2])]
        for hop in hops { nexthops[hop.id] = hop }
        #expect(hops.allSatisfy { nexthops[$0.id] == $0 })

        var routes = PackedTable<Route>()
        let all = [Route(dst: IPv4Prefix("10.244.2.0/24")!, gateway: ip, nexthopID: 5, proto: 152, deviceIndex: 7),
                   Route(dst: IPv4Prefix("10.244.3.0/24")!, gateway: nil, nexthopID: nil, onlink: false, proto: 4, priority: 9,
                         deviceIndex: nil, type: 6, scope: 253)]
        for route in all { routes[route.key] = route }
        #expect(all.allSatisfy { routes[$0.key] == $0 })
        #expect(Set(routes.map(\.value)) == Set(all))
    }

    /// Random leases and random tampering, seeded: after every pass the kernel is
    /// what a full sync of the same view leaves (a full diff finds nothing).
    @Test("randomized: every incremental pass leaves the kernel as a full sync would", arguments: 1...20)
    func randomized(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        var leases = (2...40).map { Self.peer($0) }
        var (kernel, agent) = Self.start(leases)
        var next = 100
        for step in 0..<60 {
            switch rng.next() % 6 {
            case 0: // a new lease, sometimes colliding with another
                let collide = rng.next() % 4 == 0
                let record = collide ? Self.peer(next, ip: Int(rng.next() % 40) + 2) : Self.peer(next, subnet: 100 + next % 150)
                next += 1
                leases.append(record)
                agent.pass(&kernel, upserts: [record])
            case 1: // a lease gone
                guard !leases.isEmpty else { continue }
                let gone = leases.remove(at: Int(rng.next() % UInt64(leases.count)))
                agent.pass(&kernel, removals: [gone.origin])
            case 2: // a lease changed: new public IP
                guard !leases.isEmpty else { continue }
                let at = Int(rng.next() % UInt64(leases.count))
                var record = leases[at]
                record.publicIP = IPv4Address("198.18.2.\(rng.next() % 250 + 2)")!
                record.name = "\(record.publicIP)"
                leases[at] = record
                agent.pass(&kernel, upserts: [record])
            case 3: // a route deleted by someone
                guard let route = kernel.routes.values.randomElement(using: &rng) else { continue }
                agent.pass(&kernel, events: kernel.apply(.remove(.route(route)), own: false))
            case 4: // an FDB entry deleted by someone
                guard let entry = kernel.fdb.values.randomElement(using: &rng)?.first else { continue }
                agent.pass(&kernel, events: kernel.apply(.remove(.fdb(entry)), own: false))
            default: // a neighbor's MAC changed by someone
                guard let neighbor = kernel.neighbors.values.randomElement(using: &rng) else { continue }
                var changed = neighbor
                changed.mac = MACAddress(value: 0x0200_0000_0000 | rng.next() % 0xffff)
                agent.pass(&kernel, events: kernel.apply(.replace(from: .neighbor(neighbor), to: .neighbor(changed)), own: false))
            }
            let left = agent.remaining(kernel)
            #expect(left == [], "seed \(seed), step \(step): a full diff still finds \(left)")
            if !left.isEmpty { return }
        }
    }
}

/// SplitMix64: the same sequence for the same seed on every machine.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension FDBEntry {
    func with(mac: MACAddress) -> FDBEntry {
        var entry = self
        entry.mac = mac
        return entry
    }
}
