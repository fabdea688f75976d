import Model

/// The Reconcile module's error: a state the agent must not change by itself.
public enum ReconcileError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A device of another kind holds the agent's device name.
    case foreignDevice(name: String, kind: String)
    /// The same, where the agent's device is udp's TUN device.
    case foreignTUN(name: String, kind: String)
    /// Dual stack: this node's IPv6 half is missing or unusable (the IPv6 plane cannot be built).
    case localIPv6(node: String, reason: String)

    public var description: String {
        switch self {
        case .localIPv6(let node, let reason):
            "this node (\(node)): \(reason); the IPv6 plane cannot be programmed"
        case .foreignTUN(let name, let kind):
            "\(name) exists and is \(kind == "non-TUN" ? "not a TUN device" : "a \(kind) device, not TUN"); "
                + "the agent will not touch it. Set \"device\" to another name (or, if it is a leftover of yours, remove it)"
        case .foreignDevice(let name, let kind):
            "\(name) exists and is \(kind == "non-VXLAN" ? "not a VXLAN device" : "a \(kind) device, not VXLAN"); "
                + "the agent will not touch it. Set \"device\" to another name (or, if it is a leftover of yours, remove it)"
        }
    }
}

/// The changes that take the kernel from a snapshot to the desired state, in
/// one address family's plane (`Plan`: IPv4, `Plan6`: IPv6).
public struct PlanOf<A: IPFamilyAddress>: Sendable, Hashable {
    public var changes: [ChangeOf<A>]
    /// Peers left out of the desired state.
    public var skipped: [SkippedPeer]
    /// Peers in the desired state.
    public var peerCount: Int
    /// Entries the agent would remove but keeps, and why (a nexthop that a
    /// route or group of someone else still uses).
    public var kept: [String]

    public init(changes: [ChangeOf<A>] = [], skipped: [SkippedPeer] = [], peerCount: Int = 0, kept: [String] = []) {
        self.changes = changes
        self.skipped = skipped
        self.peerCount = peerCount
        self.kept = kept
    }

    public var isEmpty: Bool { changes.isEmpty }

    public typealias Counts = PlanCounts

    public var counts: PlanCounts {
        var counts = PlanCounts()
        for change in changes {
            switch change {
            case .createDevice, .createTUN, .add: counts.add += 1
            case .recreateDevice, .updateDevice, .updateTUN, .replace: counts.change += 1
            case .deleteDevice, .remove: counts.remove += 1
            }
        }
        return counts
    }
}

/// How many changes of a plan add, change and remove.
public struct PlanCounts: Sendable, Hashable {
    public var add = 0, change = 0, remove = 0

    public init(add: Int = 0, change: Int = 0, remove: Int = 0) {
        self.add = add
        self.change = change
        self.remove = remove
    }

    public static func + (a: PlanCounts, b: PlanCounts) -> PlanCounts {
        PlanCounts(add: a.add + b.add, change: a.change + b.change, remove: a.remove + b.remove)
    }
}

public typealias Plan = PlanOf<IPv4Address>
public typealias Plan6 = PlanOf<IPv6Address>

/// The diff: desired state and kernel snapshot in, plan out. Pure; the same
/// code serves `sync`, `sync --dry-run` and the daemon.
public enum Differ {
    public static func plan(desired: DesiredState, snapshot: KernelSnapshot) throws(ReconcileError) -> Plan {
        try plan(device: desired.device, tun: desired.tun, deviceName: desired.deviceName, address: desired.address,
                 fdb: desired.fdb, neighbors: desired.neighbors, nexthops: desired.nexthops, routes: desired.routes,
                 proto: desired.settings.proto, skipped: desired.skipped, peerCount: desired.peerCount, snapshot: snapshot)
    }

    /// The IPv6 plane's diff (dual stack: `flannel-v6.<VNI>`), by the same rules
    /// and the same code as the IPv4 plane's. What the kernel gives an IPv6
    /// device of its own accord is left alone, as flanneld leaves it: the
    /// link-local address (`fe80::/64` from the MAC), and the prefix route of
    /// each address (`fe80::/64` and `fd00:10:244:1::/128 dev flannel-v6.1 proto
    /// kernel metric 256`: IPv6 adds one even for a /128, measured). A stray
    /// address is removed, and its prefix route goes with it.
    public static func plan(desired: DesiredState6, snapshot: KernelSnapshot6) throws(ReconcileError) -> Plan6 {
        let snapshot = withoutKernelOwn(snapshot)
        return try plan(device: desired.device, tun: nil, deviceName: desired.deviceName, address: desired.address,
                        fdb: desired.fdb, neighbors: desired.neighbors, nexthops: desired.nexthops, routes: desired.routes,
                        proto: desired.settings.proto, skipped: desired.skipped, peerCount: desired.peerCount, snapshot: snapshot)
    }

    /// `RTPROT_KERNEL`: routes the kernel derives from addresses.
    static let kernelProtocol: UInt8 = 2

    /// The IPv6 snapshot without what the kernel keeps on an IPv6 device by itself.
    static func withoutKernelOwn(_ snapshot: KernelSnapshot6) -> KernelSnapshot6 {
        var snapshot = snapshot
        if !snapshot.routes.isEmpty {
            let prefixes = Set(snapshot.addresses.map { IPv6Prefix($0.network, $0.length) })
            snapshot.routes.removeAll {
                $0.proto == kernelProtocol && $0.gateway == nil && $0.nexthopID == nil
                    && ($0.dst.network.isLinkLocal || prefixes.contains($0.dst))
            }
        }
        snapshot.addresses.removeAll { $0.address.isLinkLocal }
        return snapshot
    }

    /// The diff of one family's plane. Generic, but called only from the two
    /// entry points above in this file, with concrete families: the optimizer
    /// specializes it for each, so the IPv4 path pays no generic call per entry.
    static func plan<A: IPFamilyAddress>(
        device wantDevice: VXLANDevice?, tun wantTUN: TUNDevice?, deviceName: String, address: A.Prefix?,
        fdb desiredFDB: [FDBEntryOf<A>], neighbors desiredNeighbors: [NeighborOf<A>], nexthops desiredNexthops: [NexthopOf<A>],
        routes desiredRoutes: [RouteOf<A>], proto: UInt8, skipped: [SkippedPeer], peerCount: Int, snapshot: KernelSnapshotOf<A>
    ) throws(ReconcileError) -> PlanOf<A> {
        var changes: [ChangeOf<A>] = []
        var current = snapshot

        // The device. A recreated device loses every entry on it: remove our
        // routes and nexthops first (cheap for the kernel), then add everything.
        var deviceIndex: Int32?
        if let want = wantDevice {
            if let link = snapshot.device {
                guard link.kind == "vxlan", let existing = link.vxlan else {
                    throw .foreignDevice(name: link.name, kind: link.kind ?? "non-VXLAN")
                }
                if !want.sameIdentity(as: existing) {
                    changes += snapshot.routes.map { .remove(.route($0)) }
                    changes += snapshot.nexthops.map { .remove(.nexthop($0)) }
                    changes.append(.recreateDevice(from: link, to: want))
                    current = KernelSnapshotOf<A>()
                } else {
                    deviceIndex = link.index
                    if link.mtu != want.mtu || link.mac != want.mac || !link.isUp {
                        changes.append(.updateDevice(from: link, to: want))
                    }
                }
            } else {
                changes.append(.createDevice(want))
                // Our routes elsewhere (the device vanished with its own) are still removed below.
                current.addresses = []
                current.fdb = []
                current.neighbors = []
            }
        } else if let want = wantTUN {
            if let link = snapshot.device {
                guard link.kind == "tun" else { throw .foreignTUN(name: link.name, kind: link.kind ?? "non-TUN") }
                if let have = link.tun, !want.sameIdentity(as: have) {
                    // Its queues' flags are fixed at creation: make it again.
                    changes += snapshot.routes.map { .remove(.route($0)) }
                    changes += snapshot.nexthops.map { .remove(.nexthop($0)) }
                    changes.append(.deleteDevice(link))
                    changes.append(.createTUN(want))
                    current = KernelSnapshotOf<A>()
                } else {
                    deviceIndex = link.index
                    if link.mtu != want.mtu || !link.isUp { changes.append(.updateTUN(from: link, to: want)) }
                }
            } else {
                changes.append(.createTUN(want))
                current.addresses = []
                current.fdb = []
                current.neighbors = []
            }
        } else if let link = snapshot.device, link.kind == "vxlan" {
            // A backend without a device (host-gw): a VXLAN device of the agent's
            // name is what the vxlan backend left (the node switched backends). It
            // goes with every route and nexthop of ours, which are then added
            // again on the underlay (the routes through it are about to vanish).
            changes += snapshot.routes.map { .remove(.route($0)) }
            changes += snapshot.nexthops.map { .remove(.nexthop($0)) }
            changes.append(.deleteDevice(link))
            current = KernelSnapshotOf<A>()
        } else {
            // No device of ours, and none wanted: a device of another kind that
            // has the name is not ours, nor is anything on it.
            current.addresses = []
            current.fdb = []
            current.neighbors = []
        }

        // Devices of the agent's other backends (a node that switched: udp's
        // flannel0, or vxlan's flannel.<VNI> on a udp node) go, with what is on them.
        for link in snapshot.leftovers { changes.append(.deleteDevice(link)) }

        // Address: exactly the VTEP /32 (IPv6: /128; none without a device).
        if let address, !current.addresses.contains(address) { changes.append(.add(.address(address))) }
        for have in current.addresses where have != address { changes.append(.remove(.address(have))) }

        // FDB: one remote per MAC. Extra remotes of one MAC (only `bridge fdb
        // append` makes them) are kept aside rather than in per-MAC arrays.
        var fdbByMAC: [MACAddress: FDBEntryOf<A>] = [:]
        var extraRemotes: [MACAddress: [FDBEntryOf<A>]] = [:]
        fdbByMAC.reserveCapacity(current.fdb.count)
        for entry in current.fdb {
            if fdbByMAC[entry.mac] == nil { fdbByMAC[entry.mac] = entry } else { extraRemotes[entry.mac, default: []].append(entry) }
        }
        for want in desiredFDB {
            var have = fdbByMAC.removeValue(forKey: want.mac).map { [$0] } ?? []
            if let extra = extraRemotes.removeValue(forKey: want.mac) { have += extra }
            changes += fdbChanges(want: want, have: have)
        }
        let strayFDB = Array(fdbByMAC.values) + extraRemotes.values.joined()
        for entry in strayFDB.sorted(by: { ($0.mac, $0.dst) < ($1.mac, $1.dst) }) {
            changes.append(.remove(.fdb(entry)))
        }

        // Neighbors: permanent, the right MAC.
        var neighbors = Dictionary(current.neighbors.map { ($0.ip, $0) }, uniquingKeysWith: { a, _ in a })
        for want in desiredNeighbors {
            if let change = neighborChange(want: want, have: neighbors.removeValue(forKey: want.ip)) { changes.append(change) }
        }
        for entry in neighbors.values.sorted(by: { $0.ip < $1.ip }) { changes.append(.remove(.neighbor(entry))) }

        // Nexthops of our protocol. An unchanged nexthop is never rewritten:
        // replacing one makes the kernel walk every route that uses it.
        var nexthops = Dictionary(current.nexthops.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for want in desiredNexthops {
            if let change = nexthopChange(want: want, have: nexthops.removeValue(forKey: want.id), deviceIndex: deviceIndex) {
                changes.append(change)
            }
        }

        // Routes: ours by key; anything else on our device or of our protocol goes.
        var routes = Dictionary(current.routes.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var removedRoutes: [RouteOf<A>] = []
        for want in desiredRoutes {
            if let change = routeChange(want: want, have: routes.removeValue(forKey: want.key), deviceIndex: deviceIndex, proto: proto) {
                changes.append(change)
            }
        }
        removedRoutes = routes.values.sorted(by: { $0.key < $1.key })
        // Duplicate keys (the same destination twice, e.g. two tables) are dropped by the dictionary: keep them listed.
        // A closure, not a key path: a key path into a generic struct is read through the runtime, per route.
        if current.routes.count != Set(current.routes.map { $0.key }).count {
            var seen = Set<RouteKeyOf<A>>()
            for route in current.routes where !seen.insert(route.key).inserted { removedRoutes.append(route) }
        }
        changes += removedRoutes.map { .remove(.route($0)) }
        // A nexthop someone else's route or group uses stays: deleting it would
        // make the kernel delete that route or shrink that group.
        var kept: [String] = []
        let renderer = Renderer(deviceName: deviceName, proto: proto, deviceIndex: deviceIndex)
        for nexthop in nexthops.values.sorted(by: { $0.id < $1.id }) {
            if let user = current.nexthopUsers[nexthop.id] {
                kept.append(keptLine(nexthop, user: user, renderer: renderer))
            } else {
                changes.append(.remove(.nexthop(nexthop)))
            }
        }

        return PlanOf(changes: changes, skipped: skipped, peerCount: peerCount, kept: kept)
    }

    // MARK: One key: the same rules for the full diff and the daemon's per-entry diff

    /// The remotes of one MAC against the one wanted (nil: none wanted).
    public static func fdbChanges<A: IPFamilyAddress>(want: FDBEntryOf<A>?, have: [FDBEntryOf<A>]) -> [ChangeOf<A>] {
        guard let want else { return have.map { .remove(.fdb($0)) } }
        if have.contains(where: { same($0, want) }) { return have.filter { !same($0, want) }.map { .remove(.fdb($0)) } }
        if let first = have.first { return [.replace(from: .fdb(first), to: .fdb(want))] + have.dropFirst().map { .remove(.fdb($0)) } }
        return [.add(.fdb(want))]
    }

    /// A neighbor: permanent, the right MAC.
    public static func neighborChange<A: IPFamilyAddress>(want: NeighborOf<A>?, have: NeighborOf<A>?) -> ChangeOf<A>? {
        switch (want, have) {
        case (let want?, let have?): same(have, want) ? nil : .replace(from: .neighbor(have), to: .neighbor(want))
        case (let want?, nil): .add(.neighbor(want))
        case (nil, let have?): .remove(.neighbor(have))
        case (nil, nil): nil
        }
    }

    /// A nexthop wanted. An unchanged nexthop is never rewritten: replacing one
    /// makes the kernel walk every route that uses it.
    /// `deviceIndex` is the agent's device: where an entry that names no device of its own goes.
    public static func nexthopChange<A: IPFamilyAddress>(want: NexthopOf<A>, have: NexthopOf<A>?, deviceIndex: Int32?) -> ChangeOf<A>? {
        guard let have else { return .add(.nexthop(want)) }
        let device = want.deviceIndex ?? deviceIndex
        let same = have.gateway == want.gateway && have.onlink == want.onlink && have.proto == want.proto
            && (device == nil || have.deviceIndex == device)
        return same ? nil : .replace(from: .nexthop(have), to: .nexthop(want))
    }

    /// A route wanted, against the one the kernel has at its key.
    public static func routeChange<A: IPFamilyAddress>(want: RouteOf<A>, have: RouteOf<A>?, deviceIndex: Int32?, proto: UInt8) -> ChangeOf<A>? {
        guard let have else { return .add(.route(want)) }
        return matches(have, want, deviceIndex: deviceIndex, proto: proto) ? nil : .replace(from: .route(have), to: .route(want))
    }

    // Field by field: the synthesized `==` of Model's generic structs is not
    // inlinable into this module, so it would be an unspecialized call per entry.
    @inline(__always)
    static func same<A: IPFamilyAddress>(_ a: FDBEntryOf<A>, _ b: FDBEntryOf<A>) -> Bool {
        a.mac == b.mac && a.dst == b.dst && a.permanent == b.permanent && a.port == b.port && a.vni == b.vni && a.via == b.via
    }

    @inline(__always)
    static func same<A: IPFamilyAddress>(_ a: NeighborOf<A>, _ b: NeighborOf<A>) -> Bool {
        a.ip == b.ip && a.mac == b.mac && a.permanent == b.permanent
    }

    static func keptLine<A: IPFamilyAddress>(_ nexthop: NexthopOf<A>, user: String, renderer: Renderer) -> String {
        "\(renderer.describeEntry(EntryOf<A>.nexthop(nexthop))): kept, \(user) uses it; the agent removes it once nothing else does"
    }

    static func matches<A: IPFamilyAddress>(_ have: RouteOf<A>, _ want: RouteOf<A>, deviceIndex: Int32?, proto: UInt8) -> Bool {
        guard have.proto == want.proto, have.type == want.type, have.priority == want.priority else { return false }
        if let id = want.nexthopID { return have.nexthopID == id }
        let device = want.deviceIndex ?? deviceIndex
        return have.nexthopID == nil && have.gateway == want.gateway && have.onlink == want.onlink
            && (device == nil || have.deviceIndex == device)
    }

    /// The plan that removes everything the agent owns: routes, nexthops, then the device.
    public static func cleanup(snapshot: KernelSnapshot) -> Plan { cleanupPlan(snapshot) }

    /// The same for the IPv6 plane (`flannel-v6.<VNI>`).
    public static func cleanup(snapshot: KernelSnapshot6) -> Plan6 { cleanupPlan(withoutKernelOwn(snapshot)) }

    static func cleanupPlan<A: IPFamilyAddress>(_ snapshot: KernelSnapshotOf<A>) -> PlanOf<A> {
        var changes: [ChangeOf<A>] = snapshot.routes.map { .remove(.route($0)) } + snapshot.nexthops.map { .remove(.nexthop($0)) }
        if let device = snapshot.device, device.kind == "vxlan" || device.kind == "tun" { changes.append(.deleteDevice(device)) }
        changes += snapshot.leftovers.map { .deleteDevice($0) }
        return PlanOf(changes: changes)
    }
}
