import Agent
import CLibMnl
import Dataplane
import Foundation
import Model
import Netlink
import Reconcile
import Registry
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `sync` (`Syncer.run`, as the command and the daemon call it) over a real
/// netlink socket in a private namespace, with a `FaultInjector` between the
/// socket and the kernel: the kernel refuses a chosen request, an exchange
/// breaks, a dump is interrupted. Everything above the socket (batching, ACK
/// matching, dump retries, the phases of `Dataplane.apply` and its dependency
/// skipping) meets the failure as it would in production.
@Suite("Sync over a faulty netlink transport", kernelTests, .blocking)
struct FaultInjectionTests {
    /// node-1 of `inventory(peers:skip:)`, with its route layout.
    static func syncer(peers: Int, skip: Set<Int> = [], layout: RouteLayout? = .nexthop) throws -> Syncer {
        // Past 254 peers the subnets leave 10.244.0.0/16.
        let network = peers > 250 ? "10.0.0.0/8" : "10.244.0.0/16"
        let config = try AgentConfig.parse(Data(inventory(peers: peers, skip: skip, network: network).utf8), source: "inventory.json")
        let (view, interface) = try config.view(node: "node-1")
        return Syncer(view: view, interface: interface, layout: layout, deviceName: config.deviceName)
    }

    /// One pass with `faults` in front of the kernel: over a new socket, as
    /// `vxlan-agent sync` makes it, or over `dataplane`, which the daemon keeps.
    static func pass(_ host: TestHost, _ syncer: Syncer, faults: FaultInjector? = nil, dryRun: Bool = false,
                     on dataplane: Dataplane? = nil) throws -> SyncOutcome {
        try host.inNamespace {
            let dataplane = try dataplane ?? Dataplane(socket: NetlinkSocket())
            dataplane.socket.interposer = faults
            defer { dataplane.socket.interposer = nil }
            return try syncer.run(dataplane: dataplane, dryRun: dryRun)
        }
    }

    static func isFDB(_ message: Message) -> Bool { Parse.fdb(message) != nil }
    static func isNeighbor(_ message: Message) -> Bool { Parse.neighbor(message) != nil }
    static func isDump(of type: some BinaryInteger) -> (Message) -> Bool {
        { $0.type == UInt16(type) && $0.flags & UInt16(NLM_F_DUMP) == UInt16(NLM_F_DUMP) }
    }

    /// The failures of a report whose cause is a skip, a refusal, a broken exchange.
    static func skipped(_ report: ApplyReport) -> [ChangeFailure] { report.failures.filter { $0.cause == .skipped } }
    static func refused(_ report: ApplyReport) -> [ChangeFailure] {
        report.failures.filter { if case .refused = $0.cause { true } else { false } }
    }
    static func broken(_ report: ApplyReport) -> [ChangeFailure] {
        report.failures.filter { if case .exchange = $0.cause { true } else { false } }
    }

    /// A pass without faults applies what is left, without failure; the one after plans nothing.
    static func expectRepaired(_ host: TestHost, _ syncer: Syncer, missing: Set<Change>? = nil,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        let repair = try pass(host, syncer)
        let report = try #require(repair.report, sourceLocation: sourceLocation)
        #expect(report.failures.isEmpty, "\(report.failures.prefix(3))", sourceLocation: sourceLocation)
        if let missing {
            #expect(Set(repair.plan.changes) == missing, sourceLocation: sourceLocation)
        }
        #expect(try pass(host, syncer, dryRun: true).plan.changes.isEmpty, sourceLocation: sourceLocation)
    }

    @Test("a refused FDB add skips its neighbor, nexthop and route, each with a reason; the errno decides transient",
          arguments: zip([EEXIST, ENODEV, EBUSY, ENOBUFS], [false, false, true, true]))
    func refusedFDB(code: Int32, transient: Bool) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let syncer = try Self.syncer(peers: 20)
        let faults = FaultInjector.nth(3, where: Self.isFDB, .refuse(code))
        let outcome = try Self.pass(host, syncer, faults: faults)
        let report = try #require(outcome.report)
        #expect(faults.injections.count == 1)

        let refused = Self.refused(report)
        try #require(refused.count == 1, "\(report.failures)")
        let failure = refused[0]
        guard case .add(.fdb(let entry)) = failure.change else {
            Issue.record("the refused change is \(failure.change), not an FDB add")
            return
        }
        #expect(failure.code == code)
        #expect(failure.isTransient == transient)
        let name = NetlinkError(operation: "", code: code).codeName
        #expect(outcome.output.describe(failure).hasPrefix("add fdb \(entry.mac) dev flannel.1 dst \(entry.dst): \(name)"), "\(outcome.output.describe(failure))")
        #expect(outcome.output.describe(failure).contains("kernel: \(FaultInjector.kernelMessage)"), "\(outcome.output.describe(failure))")

        // Its dependents are skipped, each saying why; nothing else failed.
        let skipped = Self.skipped(report)
        let neighbor = try #require(outcome.desired.neighbors.first { $0.mac == entry.mac })
        let gateway = neighbor.ip
        let nexthop = try #require(outcome.desired.nexthops.first { $0.gateway == gateway })
        let route = try #require(outcome.desired.routes.first { $0.gateway == gateway })
        #expect(Set(skipped.map(\.change)) == [.add(.neighbor(neighbor)), .add(.nexthop(nexthop)), .add(.route(route))],
                "\(skipped)")
        #expect(report.failures.count == 4, "\(report.failures)")
        for skip in skipped {
            let reason = if case .add(.neighbor) = skip.change { "skipped, its fdb entry for \(entry.mac) failed" }
                         else { "skipped, its neighbor \(gateway) failed" }
            #expect(outcome.output.describe(skip).hasSuffix(reason), "\(outcome.output.describe(skip))")
            #expect(skip.code == nil && !skip.isTransient)
        }

        // The kernel holds every other peer, and nothing of this one.
        let fdb = try host.json("bridge -j fdb show dev flannel.1")
        #expect(fdb.count == 19)
        #expect(!fdb.contains { $0["mac"] as? String == entry.mac.description })
        #expect(try host.json("ip -j neigh show dev flannel.1").count == 19)
        #expect(try host.json("ip -j neigh show \(gateway) dev flannel.1").isEmpty)
        #expect(!(try host.json("ip -j nexthop show")).contains { $0["id"] as? Int == Int(nexthop.id) })
        #expect(try host.json("ip -j route show \(route.dst)").isEmpty)
        #expect(try host.json("ip -j route show proto 152").count == 19)

        try Self.expectRepaired(host, syncer, missing: Set(report.failures.map(\.change)))
    }

    @Test("a refused neighbor skips its nexthop and route; its FDB entry stays", arguments: RouteLayout.allCases)
    func refusedNeighbor(layout: RouteLayout) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let syncer = try Self.syncer(peers: 10, layout: layout)
        let faults = FaultInjector.nth(4, where: Self.isNeighbor, .refuse(EEXIST))
        let outcome = try Self.pass(host, syncer, faults: faults)
        let report = try #require(outcome.report)

        let refused = Self.refused(report)
        try #require(refused.count == 1, "\(report.failures)")
        guard case .add(.neighbor(let neighbor)) = refused[0].change else {
            Issue.record("the refused change is \(refused[0].change), not a neighbor add")
            return
        }
        #expect(outcome.output.describe(refused[0]).hasPrefix("add neigh \(neighbor.ip) lladdr \(neighbor.mac) dev flannel.1"), "\(outcome.output.describe(refused[0]))")
        #expect(!refused[0].isTransient)
        var dependents: Set<Change> = [.add(.route(try #require(outcome.desired.routes.first { $0.gateway == neighbor.ip })))]
        if layout == .nexthop {
            dependents.insert(.add(.nexthop(try #require(outcome.desired.nexthops.first { $0.gateway == neighbor.ip }))))
        }
        let skipped = Self.skipped(report)
        #expect(Set(skipped.map(\.change)) == dependents, "\(skipped)")
        #expect(skipped.allSatisfy { outcome.output.describe($0).hasSuffix("skipped, its neighbor \(neighbor.ip) failed") }, "\(skipped)")
        #expect(report.failures.count == 1 + dependents.count)

        #expect(try host.json("bridge -j fdb show dev flannel.1").contains { $0["mac"] as? String == neighbor.mac.description })
        #expect(try host.json("ip -j neigh show \(neighbor.ip) dev flannel.1").isEmpty)
        #expect(try host.json("ip -j route show proto 152").count == 9)
        try Self.expectRepaired(host, syncer, missing: Set(report.failures.map(\.change)))
    }

    @Test("a broken exchange reports every change of its batch as .exchange (transient), skips their dependents, and the next pass repairs",
          arguments: [FaultInjector.Fault.breakSend(ENOBUFS), .breakReceive(ENOBUFS), .breakSend(EPIPE)])
    func brokenExchange(fault: FaultInjector.Fault) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let peers = 20
        let syncer = try Self.syncer(peers: peers)
        let faults = FaultInjector.nth(5, where: Self.isFDB, fault)
        let outcome = try Self.pass(host, syncer, faults: faults)
        let report = try #require(outcome.report)

        let broken = Self.broken(report)
        #expect(Set(broken.map(\.change)) == Set(outcome.desired.fdb.map { Change.add(.fdb($0)) }), "\(broken.prefix(3))")
        #expect(broken.allSatisfy { $0.isTransient && $0.code == (fault == .breakSend(EPIPE) ? EPIPE : ENOBUFS) })
        let name = NetlinkError(operation: "", code: broken.first?.code ?? 0).codeName
        #expect(broken.allSatisfy { outcome.output.describe($0).contains("fdb ") && outcome.output.describe($0).contains(": \(name)") }, "\(broken.prefix(2).map(outcome.output.describe))")
        #expect(Self.refused(report).isEmpty)
        // Nothing that needs an FDB entry was sent.
        #expect(Self.skipped(report).count == 3 * peers)
        #expect(try host.json("ip -j neigh show dev flannel.1").isEmpty)
        #expect(try host.json("ip -j route show proto 152").isEmpty)
        // Which FDB entries landed: the four before the break, or all of them when the send went through.
        let landed = try host.json("bridge -j fdb show dev flannel.1").count
        if case .breakReceive = fault { #expect(landed == peers) } else { #expect(landed == 4) }
        try Self.expectRepaired(host, syncer)
    }

    @Test("an interrupted dump is read again, never taken as the truth",
          arguments: [RTM_GETADDR, RTM_GETNEIGH, RTM_GETNEXTHOP, RTM_GETROUTE])
    func interruptedDump(type: Int) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let syncer = try Self.syncer(peers: 300)
        try Self.expectRepaired(host, syncer)
        // The 1st, 3rd, ... dump of this type is cut short after its first reply,
        // which says so (NLM_F_DUMP_INTR): each dump the pass makes of this table
        // (one per table; RTM_GETNEIGH twice: the neighbors and the FDB) is
        // interrupted once, and its retry goes through.
        var dumps = 0
        let faults = FaultInjector { request in
            guard Self.isDump(of: type)(request.message) else { return nil }
            dumps += 1
            return dumps % 2 == 1 ? .interruptDump : nil
        }
        let outcome = try Self.pass(host, syncer, faults: faults, dryRun: true)
        #expect(faults.injections.count == (type == RTM_GETNEIGH ? 2 : 1))
        #expect(outcome.plan.changes.isEmpty, "\(outcome.plan.changes.count) changes planned from an interrupted dump")
    }

    @Test("a dump interrupted at every attempt fails the pass, says which, and writes nothing")
    func dumpAlwaysInterrupted() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let syncer = try Self.syncer(peers: 50)
        try Self.expectRepaired(host, syncer)
        let before = try host.kernelState()
        let faults = FaultInjector { Self.isDump(of: RTM_GETROUTE)($0.message) ? .interruptDump : nil }
        #expect {
            _ = try Self.pass(host, syncer, faults: faults)
        } throws: { error in
            "\(error)".contains("dump routes") && "\(error)".contains("EINTR") && "\(error)".contains("interrupted")
        }
        #expect(faults.injections.count > 1)
        let difference = try host.kernelStateDifference(settlingTo: before)
        #expect(difference == nil, "\(difference ?? "")")
    }

    @Test("a dump whose receive broke does not poison the socket: the next dump on it reads the whole table")
    func brokenDumpThenDumpAgain() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let peers = 500
        let syncer = try Self.syncer(peers: peers)
        try Self.expectRepaired(host, syncer)
        let routes = try host.inNamespace { () throws -> Int in
            let socket = try NetlinkSocket()
            let faults = FaultInjector.nth(1, where: Self.isDump(of: RTM_GETROUTE), .breakReceive(ENOBUFS))
            socket.interposer = faults
            let dataplane = Dataplane(socket: socket)
            do {
                _ = try dataplane.snapshot(deviceName: "flannel.1", proto: AgentSettings.defaultProtocol)
                Issue.record("the snapshot did not see the broken receive")
            } catch {
                #expect("\(error)".contains("ENOBUFS"), "\(error)")
            }
            // The daemon keeps its dataplane: the next pass uses the same socket,
            // and starts with a dump (the host's addresses).
            #expect(try dataplane.addresses().contains { $0.prefix.address == IPv4Address("198.18.0.1")! })
            return try dataplane.snapshot(deviceName: "flannel.1", proto: AgentSettings.defaultProtocol).routes.count
        }
        #expect(routes == peers)
    }

    @Test("a failed nexthop probe is not remembered; a kernel that does not know nexthops is",
          arguments: zip([ENOBUFS, EBUSY, EOPNOTSUPP], [RouteLayout.nexthop, .nexthop, .classic]))
    func nexthopProbe(code: Int32, layout: RouteLayout) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let syncer = try Self.syncer(peers: 5, layout: nil)  // auto: the probe decides
        let dataplane = try host.inNamespace { try Dataplane() }
        let faults = FaultInjector.nth(1, where: Self.isDump(of: RTM_GETNEXTHOP), .refuse(code))
        let first = try Self.pass(host, syncer, faults: faults, on: dataplane)
        #expect(faults.injections.count == 1)
        #expect(first.layout == layout)
        #expect(first.report?.failures.isEmpty == true)
        // The daemon's next pass, on the same dataplane, without faults.
        let second = try Self.pass(host, syncer, on: dataplane)
        #expect(second.layout == layout)
        #expect(second.plan.changes.isEmpty)
        #expect(try host.json("ip -j nexthop show").count == (layout == .nexthop ? 5 : 0))
    }

    // MARK: Randomized

    /// Failure patterns drawn at random for a few passes, then none: within three
    /// clean passes the namespace is what a clean sync makes of it, and a further
    /// pass plans nothing. `VXA_FAULT_SEED` and `VXA_FAULT_ROUNDS` replay or widen it.
    @Test("any failure pattern converges within 3 clean passes; then a pass plans nothing",
          arguments: [false, true])
    func randomFailuresConverge(oneSocket: Bool) throws {
        try requireKernel()
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["VXA_FAULT_SEED"].flatMap { UInt64($0) } ?? 20_261_130
        let rounds = environment["VXA_FAULT_ROUNDS"].flatMap { Int($0) } ?? 50
        let host = try TestHost()
        defer { host.close() }
        let errnos = [ENOBUFS, EEXIST, ENODEV, EBUSY]

        for round in 0..<rounds {
            let random = RandomSource(seed: seed &+ UInt64(round))
            // Now and then enough peers that a dump takes several datagrams.
            let peers = random.chance(0.2) ? random.int(in: 260...400) : random.int(in: 3...40)
            let skip = Set((2..<(peers + 2)).filter { _ in random.chance(0.2) })
            let layout: RouteLayout = random.chance(0.3) ? .classic : .nexthop
            let syncer = try Self.syncer(peers: peers, skip: skip, layout: layout)
            var story = ["seed \(seed) round \(round) (replay: VXA_FAULT_SEED=\(seed) VXA_FAULT_ROUNDS=\(round + 1)): "
                         + "\(peers) peers, \(skip.count) left out, \(layout) layout, "
                         + (oneSocket ? "one socket for all passes (the daemon's)" : "a socket per pass (sync's)")]
            // The daemon keeps one dataplane, and its socket, for its life.
            let shared = oneSocket ? try host.inNamespace { try Dataplane() } : nil
            let history = { () -> String in story.joined(separator: "\n") }

            for faulty in 0..<random.int(in: 1...4) {
                let refuse = random.double() * 0.15, breakAt = random.double() * 0.03, interrupt = random.double() * 0.5
                let faults = FaultInjector { request in
                    if request.isDump && random.chance(interrupt) { return .interruptDump }
                    if random.chance(breakAt) {
                        let code = random.chance(0.5) ? ENOBUFS : EPIPE
                        return random.chance(0.5) ? .breakSend(code) : .breakReceive(code)
                    }
                    if random.chance(refuse) { return .refuse(errnos[random.int(in: 0...(errnos.count - 1))]) }
                    return nil
                }
                do {
                    let outcome = try Self.pass(host, syncer, faults: faults, on: shared)
                    let failures = outcome.report?.failures ?? []
                    story.append("faulty pass \(faulty): \(faults.injections.count) injected, \(outcome.plan.changes.count) planned, "
                                 + "\(failures.count) failed")
                    // Every failure names its change and says why.
                    for failure in failures {
                        #expect(outcome.output.describe(failure).count > 10 && (failure.cause != .skipped || outcome.output.describe(failure).contains("skipped")),
                                "\(outcome.output.describe(failure))\n\(history())")
                    }
                } catch {
                    // A refused or broken lookup or dump fails the whole pass, before any write.
                    story.append("faulty pass \(faulty): \(faults.injections.count) injected, failed: \(error)")
                    #expect(!"\(error)".isEmpty, "\(history())")
                }
                story.append("  " + faults.injections.map(\.description).joined(separator: "; "))
            }

            var converged = false
            for clean in 0..<3 {
                do {
                    let outcome = try Self.pass(host, syncer, on: shared)
                    let failures = outcome.report?.failures ?? []
                    story.append("clean pass \(clean): \(outcome.plan.changes.count) planned, \(failures.count) failed "
                                 + failures.prefix(3).map(outcome.output.describe).joined(separator: "; "))
                    if failures.isEmpty { converged = true; break }
                } catch {
                    story.append("clean pass \(clean) failed: \(error)")
                }
            }
            #expect(converged, "\(history())")
            let state = try host.kernelState()
            let again = try Self.pass(host, syncer, dryRun: true, on: shared)
            #expect(again.plan.changes.isEmpty, "\(again.plan.changes.prefix(5))\n\(history())")

            // A clean sync from nothing of ours: the witness.
            try host.exec("ip link del flannel.1")
            let fresh = try Self.pass(host, syncer, on: shared)
            #expect(fresh.report?.failures.isEmpty == true, "\(history())")
            let reference = try host.kernelState()
            #expect(state == reference, "\(history())")
            if !converged || state != reference || !again.plan.changes.isEmpty { return }
        }
    }
}

/// SplitMix64: a seeded generator, so a failing round can be replayed.
final class RandomSource {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    func double() -> Double { Double(next() >> 11) / Double(1 << 53) }
    func chance(_ p: Double) -> Bool { double() < p }
    func int(in range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
}

/// The daemon's engine (`LiveSync`: per-lease passes on one socket, full passes
/// when it must) over the same faulty transport: leases come and go while the
/// kernel refuses requests and exchanges break; once the failures stop, the
/// daemon's own passes converge, and the kernel is what a clean sync leaves.
@Suite("The daemon's passes over a faulty netlink transport", kernelTests, .blocking)
struct LiveSyncFaultTests {
    @Test("random lease changes under random failures converge within 3 clean passes")
    func leasesUnderFailures() throws {
        try requireKernel()
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["VXA_FAULT_SEED"].flatMap { UInt64($0) } ?? 20_261_201
        let rounds = environment["VXA_FAULT_ROUNDS"].flatMap { Int($0) } ?? 20
        let host = try TestHost()
        defer { host.close() }
        let all = try FaultInjectionTests.syncer(peers: 60)
        let pool = all.view.peers
        let errnos = [ENOBUFS, EEXIST, ENODEV, EBUSY]

        for round in 0..<rounds {
            let random = RandomSource(seed: seed &+ UInt64(round))
            let live = try host.inNamespace { LiveSync(dataplane: try Dataplane()) }
            var peers = Dictionary(uniqueKeysWithValues: pool.filter { _ in random.chance(0.5) }.map { ($0.origin, $0) })
            var story = ["seed \(seed) round \(round) (replay: VXA_FAULT_SEED=\(seed) VXA_FAULT_ROUNDS=\(round + 1))"]
            let history = { () -> String in story.joined(separator: "\n") }
            func syncer() -> Syncer {
                var syncer = all
                syncer.view.peers = peers.values.sorted { $0.origin < $1.origin }
                return syncer
            }
            /// One daemon pass: per lease when it can, full when it must; returns whether it ended without failure.
            func pass(upserts: [NodeRecord], removals: [String], previous: [String: NodeRecord], faults: FaultInjector?) -> Bool {
                live.dataplane.socket.interposer = faults
                defer { live.dataplane.socket.interposer = nil }
                return (try? host.inNamespace { () -> Bool in
                    switch live.incremental(upserts: upserts, removals: removals, previous: previous, events: []) {
                    case .applied(let changes, let report, _):
                        story.append("  per lease: \(changes.count) changes, \(report.failures.count) failed")
                        return report.failures.isEmpty
                    case .needsFullPass(let why):
                        do {
                            let outcome = try live.full(syncer())
                            story.append("  full (\(why)): \(outcome.plan.changes.count) changes, \(outcome.report?.failures.count ?? 0) failed")
                            return outcome.report?.failures.isEmpty ?? false
                        } catch {
                            story.append("  full (\(why)) failed: \(error)")
                            return false
                        }
                    }
                }) ?? false
            }
            /// Some leases come, some go.
            func churn() -> (upserts: [NodeRecord], removals: [String], previous: [String: NodeRecord]) {
                var upserts: [NodeRecord] = [], removals: [String] = [], previous: [String: NodeRecord] = [:]
                for record in pool where random.chance(0.1) {
                    if let old = peers.removeValue(forKey: record.origin) {
                        removals.append(record.origin)
                        previous[record.origin] = old
                    } else {
                        peers[record.origin] = record
                        upserts.append(record)
                    }
                }
                return (upserts, removals, previous)
            }

            _ = pass(upserts: [], removals: [], previous: [:], faults: nil)
            for step in 0..<random.int(in: 2...6) {
                let refuse = random.double() * 0.2, breakAt = random.double() * 0.05
                let faults = FaultInjector { request in
                    if request.isDump { return nil }
                    if random.chance(breakAt) { return random.chance(0.5) ? .breakSend(ENOBUFS) : .breakReceive(ENOBUFS) }
                    if random.chance(refuse) { return .refuse(errnos[random.int(in: 0...(errnos.count - 1))]) }
                    return nil
                }
                let (upserts, removals, previous) = churn()
                story.append("faulty step \(step): +\(upserts.count) -\(removals.count) leases")
                _ = pass(upserts: upserts, removals: removals, previous: previous, faults: faults)
                story.append("  " + faults.injections.map(\.description).joined(separator: "; "))
            }
            // The failures stop; leases still change on the first clean pass.
            let (upserts, removals, previous) = churn()
            story.append("clean: +\(upserts.count) -\(removals.count) leases")
            var converged = pass(upserts: upserts, removals: removals, previous: previous, faults: nil)
            for _ in 0..<2 where !converged { converged = pass(upserts: [], removals: [], previous: [:], faults: nil) }
            #expect(converged, "\(history())")
            let state = try host.kernelState()
            let again = try FaultInjectionTests.pass(host, syncer(), dryRun: true)
            #expect(again.plan.changes.isEmpty, "\(again.plan.changes.prefix(5))\n\(history())")

            // A clean sync from nothing of ours: the witness.
            try host.exec("ip link del flannel.1")
            let fresh = try FaultInjectionTests.pass(host, syncer())
            #expect(fresh.report?.failures.isEmpty == true, "\(history())")
            let difference = try host.kernelStateDifference(settlingTo: state)
            #expect(difference == nil, "\(difference ?? "")\n\(history())")
            if !converged || !again.plan.changes.isEmpty { return }
            try host.exec("ip link del flannel.1")
        }
    }
}
