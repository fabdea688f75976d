import Dataplane
import Model
import Reconcile

/// The daemon's reconciler: a full pass (the same `Syncer` as `sync`) when it
/// must, and between full passes, passes that touch only what changed.
///
/// After a full pass it keeps, for each plane (IPv4 `flannel.<VNI>`; dual stack
/// and IPv6-only: IPv6 `flannel-v6.<VNI>`), a picture of the kernel (the pass's
/// dump with its own writes taken in) and the desired state by key. A lease
/// that changed, or a kernel event, then costs a diff of the few keys it
/// touches in each plane and one small batch per plane, not a dump of every
/// table and a diff of every peer. Whatever the incremental path cannot decide
/// alone (see `KernelPicture.note` and `DesiredIndex.update`) it answers with
/// `.needsFullPass`, and so does every pass after a failure: the full pass is
/// the backstop, with the resync timer.
///
/// Not thread-safe: one thread owns it (and the dataplane's socket).
public final class LiveSync {
    public let dataplane: Dataplane
    public let proto: UInt8
    public private(set) var picture: KernelPicture?
    public private(set) var desired: DesiredIndex?
    /// The IPv6 plane's (nil when the network has none, or until a full pass built them).
    public private(set) var picture6: KernelPicture6?
    public private(set) var desired6: DesiredIndex6?
    /// Whether the last full pass planned an IPv6 plane: then an incremental
    /// pass needs its picture and index too.
    public private(set) var hasIPv6Plane = false
    var network: IPv4Prefix?
    var network6: IPv6Prefix?
    var deviceName = ""
    var deviceName6 = ""
    var deviceIndex: Int32?
    var deviceIndex6: Int32?

    var underlay: (index: Int32, name: String)?
    var underlay6: (index: Int32, name: String)?

    /// The IPv6 plane's part of the last incremental pass (nil: it wrote nothing there).
    public private(set) var applied6: (changes: [Change6], report: ApplyReport6, kept: [String])?

    /// How this engine's passes are shown: the devices, their indexes, the underlay, the agent's protocol.
    public var output: PlanOutput {
        var output = PlanOutput(renderer: Renderer(deviceName: deviceName, proto: proto, deviceIndex: picture?.deviceIndex ?? deviceIndex,
                                                   otherDevices: underlay.map { [$0.index: $0.name] } ?? [:]))
        if hasIPv6Plane {
            output.renderer6 = Renderer(deviceName: deviceName6, proto: proto, deviceIndex: picture6?.deviceIndex ?? deviceIndex6,
                                        otherDevices: (underlay6 ?? underlay).map { [$0.index: $0.name] } ?? [:])
        }
        return output
    }

    public init(dataplane: Dataplane, proto: UInt8 = AgentSettings.defaultProtocol) {
        self.dataplane = dataplane
        self.proto = proto
    }

    /// Forgets the pictures: the next pass is a full one.
    public func invalidate() {
        picture = nil
        desired = nil
        picture6 = nil
        desired6 = nil
    }

    /// A full pass: dump, diff everything, apply. Afterwards each plane's picture
    /// is the dump with the applied changes taken in; after a device change or a
    /// failed change in either plane they are dropped, so the next pass dumps again.
    ///
    /// `peers` holds the view's peers (the daemon's one table, see `PeerTable`):
    /// the indexes read their records from it, and the caller puts each lease
    /// change in it before `incremental`. Without it each index keeps a table
    /// of its own, and takes the changes in itself.
    public func full(_ syncer: Syncer, peers: PeerTable? = nil) throws -> SyncOutcome {
        invalidate()
        let outcome = try syncer.run(dataplane: dataplane, dryRun: false)
        guard let host = outcome.host, let report = outcome.report else { return outcome }
        let network = syncer.view.network
        self.network = network.enableIPv4 ? network.network : nil
        deviceName = syncer.deviceName ?? network.deviceName
        deviceIndex = outcome.deviceIndex
        underlay = (host.underlay.index, host.underlay.name)
        desired = DesiredIndex(desired: outcome.desired, view: syncer.view, host: host, table: peers)
        var failed = !report.failures.isEmpty || outcome.plan.changes.contains { $0.target == nil }
        // The IPv6 plane: kept alongside when the pass planned one (dual stack, IPv6-only).
        hasIPv6Plane = outcome.desired6 != nil
        if let desired6 = outcome.desired6, let snapshot6 = outcome.snapshot6, let plan6 = outcome.plan6 {
            network6 = desired6.network
            deviceName6 = syncer.ipv6DeviceName
            deviceIndex6 = outcome.output.renderer6?.deviceIndex
            let link6 = host.ipv6Underlay ?? host.underlay
            underlay6 = (link6.index, link6.name)
            self.desired6 = try? DesiredIndex6(desired: desired6, view: syncer.view, host: host, table: peers)
            failed = failed || self.desired6 == nil || !(outcome.report6?.failures.isEmpty ?? true)
                || plan6.changes.contains { $0.target == nil }
            if !failed {
                var picture6 = KernelPicture6(snapshot6)
                picture6.record(plan6.changes)
                self.picture6 = picture6
            }
        }
        if !failed {
            var picture = KernelPicture(outcome.snapshot)
            picture.record(outcome.plan.changes)
            self.picture = picture
        } else {
            picture6 = nil
        }
        return outcome
    }

    /// What an incremental pass did.
    public enum Outcome: Sendable {
        /// Applied (or nothing to apply): the IPv4 plane's changes, the kernel's
        /// answer, and nexthops kept because something else uses them (the IPv6
        /// plane's: `applied6`).
        case applied(changes: [Change], report: ApplyReport, kept: [String])
        /// The picture cannot answer this alone: run a full pass (why, for logs).
        case needsFullPass(String)
    }

    /// Applies leases that changed and kernel events, touching only their keys,
    /// in both planes. `previous` holds the record each changed lease had before
    /// (none: it is new); `events6` are the IPv6 device's events.
    public func incremental(upserts: [NodeRecord], removals: [String], previous: [String: NodeRecord],
                            events: [KernelEvent], events6: [KernelEvent6] = []) -> Outcome {
        applied6 = nil
        guard var picture, var desired else { return .needsFullPass("no picture of the kernel yet") }
        var picture6 = self.picture6, desired6 = self.desired6
        if hasIPv6Plane && (picture6 == nil || desired6 == nil) { return .needsFullPass("no picture of the IPv6 plane yet") }
        // The pictures are left nil until this pass ends well: a return from the
        // middle leaves them half-updated, and the next pass is then a full one.
        invalidate()
        var keys = Set<EntryKey>()
        let hasVXLAN = desired.device != nil
        for event in events {
            // Neighbors and FDB entries are only the VXLAN device's (the kernel keeps a
            // NOARP neighbor of its own on udp's TUN device).
            if !hasVXLAN, case .entry(let entry) = event.subject, entry.isNeighborOrFDB { continue }
            switch picture.note(event, proto: proto, network: network, followsRoutes: desired.followsRoutes) {
            case .ignored: continue
            case .touched(let touched): keys.formUnion(touched)
            case .fullPass(let why): return .needsFullPass(why)
            }
        }
        var keys6 = Set<EntryKey6>()
        if var picture = picture6, let desired = desired6 {
            let hasVXLAN6 = desired.device != nil
            for event in events6 {
                if !hasVXLAN6, case .entry(let entry) = event.subject, entry.isNeighborOrFDB { continue }
                switch picture.note(event, proto: proto, network: network6, followsRoutes: desired.followsRoutes) {
                case .ignored: continue
                case .touched(let touched): keys6.formUnion(touched)
                case .fullPass(let why): return .needsFullPass("IPv6: \(why)")
                }
            }
            picture6 = picture
        } else if let event = events6.first(where: { !$0.own }) {
            return .needsFullPass("IPv6 event without an IPv6 plane: \(event)")
        }
        if !upserts.isEmpty || !removals.isEmpty {
            guard let touched = desired.update(upserts: upserts, removals: removals, previous: previous) else {
                return .needsFullPass("a changed lease collides with another peer, or was skipped")
            }
            keys.formUnion(touched)
            if var index = desired6 {
                guard let touched6 = index.update(upserts: upserts, removals: removals, previous: previous) else {
                    return .needsFullPass("a changed lease's IPv6 half collides with another peer's, or was left out")
                }
                keys6.formUnion(touched6)
                desired6 = index
            }
        }
        let (changes, kept) = Differ.plan(keys: keys, desired: desired, picture: picture)
        var report = ApplyReport()
        var failed = false
        if !changes.isEmpty {
            report = dataplane.apply(changes, deviceName: deviceName)
            failed = !report.failures.isEmpty
            if !failed { picture.record(changes) }
        }
        if var plane = picture6, let index = desired6, !failed {
            let (changes6, kept6) = Differ.plan(keys: keys6, desired: index, picture: plane)
            if !changes6.isEmpty || !kept6.isEmpty {
                var report6 = ApplyReport6()
                if !changes6.isEmpty {
                    report6 = dataplane.apply(changes6, deviceName: deviceName6)
                    failed = !report6.failures.isEmpty
                    if !failed { plane.record(changes6) }
                }
                applied6 = (changes6, report6, kept6)
            }
            picture6 = plane
        }
        // After a failure the indexes stay (they are the desired state) and the
        // pictures go: the retry is a full pass.
        self.desired = desired
        self.desired6 = desired6
        if !failed {
            self.picture = picture
            self.picture6 = picture6
        }
        return .applied(changes: changes, report: report, kept: kept)
    }
}

extension EntryOf {
    var isNeighborOrFDB: Bool {
        switch self {
        case .neighbor, .fdb: true
        default: false
        }
    }
}
