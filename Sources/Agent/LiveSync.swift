import Dataplane
import Model
import Reconcile

/// The daemon's reconciler: a full pass (the same `Syncer` as `sync`) when it
/// must, and between full passes, passes that touch only what changed.
///
/// After a full pass it keeps a picture of the kernel (the pass's dump with its
/// own writes taken in) and the desired state by key. A lease that changed, or
/// a kernel event, then costs a diff of the few keys it touches and one small
/// batch, not a dump of every table and a diff of every peer. Whatever the
/// incremental path cannot decide alone (see `KernelPicture.note` and
/// `DesiredIndex.update`) it answers with `.needsFullPass`, and so does every
/// pass after a failure: the full pass is the backstop, with the resync timer.
///
/// Not thread-safe: one thread owns it (and the dataplane's socket).
public final class LiveSync {
    public let dataplane: Dataplane
    public let proto: UInt8
    public private(set) var picture: KernelPicture?
    public private(set) var desired: DesiredIndex?
    var network = IPv4Prefix(IPv4Address(0), 0)
    var deviceName = ""
    var deviceIndex: Int32?

    var underlay: (index: Int32, name: String)?

    /// How this engine's passes are shown: the device, its index, the underlay, the agent's protocol.
    public var output: PlanOutput {
        PlanOutput(renderer: Renderer(deviceName: deviceName, proto: proto, deviceIndex: picture?.deviceIndex ?? deviceIndex,
                                      otherDevices: underlay.map { [$0.index: $0.name] } ?? [:]))
    }

    public init(dataplane: Dataplane, proto: UInt8 = AgentSettings.defaultProtocol) {
        self.dataplane = dataplane
        self.proto = proto
    }

    /// Forgets the picture: the next pass is a full one.
    public func invalidate() {
        picture = nil
        desired = nil
    }

    /// A full pass: dump, diff everything, apply. Afterwards the picture is the
    /// dump with the applied changes taken in; after a device change or a failed
    /// change it is dropped, so the next pass dumps again.
    public func full(_ syncer: Syncer) throws -> SyncOutcome {
        invalidate()
        let outcome = try syncer.run(dataplane: dataplane, dryRun: false)
        guard let host = outcome.host, let report = outcome.report else { return outcome }
        network = syncer.view.network.network
        deviceName = syncer.deviceName ?? syncer.view.network.deviceName
        deviceIndex = outcome.deviceIndex
        underlay = (host.underlay.index, host.underlay.name)
        desired = DesiredIndex(desired: outcome.desired, view: syncer.view, host: host)
        let deviceChanged = outcome.plan.changes.contains { $0.target == nil }
        if report.failures.isEmpty && !deviceChanged {
            var picture = KernelPicture(outcome.snapshot)
            for change in outcome.plan.changes { picture.record(change) }
            self.picture = picture
        }
        return outcome
    }

    /// What an incremental pass did.
    public enum Outcome: Sendable {
        /// Applied (or nothing to apply): the changes, the kernel's answer, and
        /// nexthops kept because something else uses them.
        case applied(changes: [Change], report: ApplyReport, kept: [String])
        /// The picture cannot answer this alone: run a full pass (why, for logs).
        case needsFullPass(String)
    }

    /// Applies leases that changed and kernel events, touching only their keys.
    /// `previous` holds the record each changed lease had before (none: it is new).
    public func incremental(upserts: [NodeRecord], removals: [String], previous: [String: NodeRecord],
                            events: [KernelEvent]) -> Outcome {
        guard var picture, var desired else { return .needsFullPass("no picture of the kernel yet") }
        // The picture is left nil until this pass ends well: a return from the
        // middle leaves it half-updated, and the next pass is then a full one.
        invalidate()
        var keys = Set<EntryKey>()
        let hasVXLAN = desired.device != nil
        for event in events {
            // Neighbors and FDB entries are only the VXLAN device's (the kernel keeps a
            // NOARP neighbor of its own on udp's TUN device).
            if !hasVXLAN, case .entry(let entry) = event.subject, entry.isNeighborOrFDB { continue }
            switch picture.note(event, proto: proto, network: network, followsRoutes: desired.checks.backend.followsRoutes) {
            case .ignored: continue
            case .touched(let touched): keys.formUnion(touched)
            case .fullPass(let why): return .needsFullPass(why)
            }
        }
        if !upserts.isEmpty || !removals.isEmpty {
            guard let touched = desired.update(upserts: upserts, removals: removals, previous: previous) else {
                return .needsFullPass("a changed lease collides with another peer, or was skipped")
            }
            keys.formUnion(touched)
        }
        let (changes, kept) = Differ.plan(keys: keys, desired: desired, picture: picture)
        var report = ApplyReport()
        if !changes.isEmpty {
            report = dataplane.apply(changes, deviceName: deviceName)
            guard report.failures.isEmpty else {
                self.desired = desired
                return .applied(changes: changes, report: report, kept: kept)
            }
            for change in changes { picture.record(change) }
        }
        self.picture = picture
        self.desired = desired
        return .applied(changes: changes, report: report, kept: kept)
    }
}

extension Entry {
    var isNeighborOrFDB: Bool {
        switch self {
        case .neighbor, .fdb: true
        default: false
        }
    }
}
