import Model

// The daemon's incremental reconcile: a picture of what the kernel holds (filled
// by a full pass's dump, kept current by the agent's own writes and by netlink
// events), the desired state indexed by key (filled by a full pass, kept current
// lease by lease), and a diff of the keys an event touched. The rules per key are
// the full diff's own (`Differ.fdbChanges`, ...): the two cannot disagree.
// Whatever the incremental path cannot decide alone (the device, addresses, a
// peer that collides with another, an ambiguous event) it hands to a full pass.

/// What the kernel holds of what the agent owns in one plane, by key
/// (`KernelPicture`: `flannel.<VNI>`, `KernelPicture6`: `flannel-v6.<VNI>`).
///
/// Sized for 50,000 peers: each table stores its entries packed (an FDB entry
/// as its destination, a neighbor as its MAC, ...: 12 to 28 bytes a slot instead
/// of 28 to 48 for IPv4), see `PackedTable`.
///
/// Generic, with a public entry point per family (the extensions below), so no
/// caller outside this module runs the unspecialized code.
public struct KernelPictureOf<A: IPFamilyAddress>: Sendable {
    public typealias Key = EntryKeyOf<A>
    public var device: LinkState?
    public var addresses: [A.Prefix]
    /// The first remote of each MAC; the other remotes (only `bridge fdb append`
    /// makes them) in `extraFDB`.
    public internal(set) var fdb = PackedTable<FDBEntryOf<A>>()
    public internal(set) var extraFDB: [MACAddress: [FDBEntryOf<A>]] = [:]
    public internal(set) var neighbors = PackedTable<NeighborOf<A>>()
    public internal(set) var nexthops = PackedTable<NexthopOf<A>>()
    public internal(set) var routes = PackedTable<RouteOf<A>>()
    /// Routes with a key another route has too (kept apart, like extra remotes).
    public internal(set) var extraRoutes: [RouteKeyOf<A>: [RouteOf<A>]] = [:]
    public var nexthopUsers: [UInt32: String]

    init(snapshot: KernelSnapshotOf<A>) {
        device = snapshot.device
        addresses = snapshot.addresses
        nexthopUsers = snapshot.nexthopUsers
        fdb.reserveCapacity(snapshot.fdb.count)
        for entry in snapshot.fdb {
            if fdb[entry.mac] == nil { fdb[entry.mac] = entry } else { extraFDB[entry.mac, default: []].append(entry) }
        }
        neighbors.reserveCapacity(snapshot.neighbors.count)
        for entry in snapshot.neighbors where neighbors[entry.ip] == nil { neighbors[entry.ip] = entry }
        nexthops.reserveCapacity(snapshot.nexthops.count)
        for entry in snapshot.nexthops where nexthops[entry.id] == nil { nexthops[entry.id] = entry }
        routes.reserveCapacity(snapshot.routes.count)
        for route in snapshot.routes {
            if routes[route.key] == nil { routes[route.key] = route } else { extraRoutes[route.key, default: []].append(route) }
        }
    }

    public var deviceIndex: Int32? { device?.index }

    func fdbRemotes(_ mac: MACAddress) -> [FDBEntryOf<A>] { (fdb[mac].map { [$0] } ?? []) + (extraFDB[mac] ?? []) }
    func routesAt(_ key: RouteKeyOf<A>) -> [RouteOf<A>] { (routes[key].map { [$0] } ?? []) + (extraRoutes[key] ?? []) }

    // MARK: the agent's own writes

    /// Takes in a change the kernel accepted. Entries only: a device change is
    /// followed by a full pass.
    mutating func recordOf(_ change: ChangeOf<A>) {
        switch change {
        case .add(let entry): put(entry, replacing: nil)
        case .replace(let old, let new): put(new, replacing: old)
        case .remove(let entry): drop(entry)
        default: break
        }
    }

    /// Takes in a batch the kernel accepted, in order. The routes that used a
    /// removed nexthop are looked for once for the batch, not once per nexthop
    /// (each look is a walk of every route: a burst of k removals at n peers
    /// was k walks of n), and before any later change that adds a route or
    /// nexthop with one of those ids.
    mutating func recordAllOf(_ changes: [ChangeOf<A>]) {
        var gone = Set<UInt32>()
        for change in changes {
            switch change {
            case .remove(.nexthop(let n)):
                nexthops[n.id] = nil
                gone.insert(n.id)
                continue
            case .add(let entry), .replace(_, let entry):
                let id: UInt32? = switch entry {
                case .nexthop(let n): n.id
                case .route(let r): r.nexthopID
                default: nil
                }
                if let id, gone.contains(id) {
                    dropRoutes(using: gone)
                    gone = []
                }
            default: break
            }
            recordOf(change)
        }
        if !gone.isEmpty { dropRoutes(using: gone) }
    }

    /// The kernel deletes the routes that use a nexthop with it, and says nothing.
    mutating func dropRoutes(using ids: Set<UInt32>) {
        for (key, route) in routes.filter({ $0.value.nexthopID.map(ids.contains) ?? false }) { dropRoute(route, at: key) }
        for (key, extra) in extraRoutes {
            for route in extra where route.nexthopID.map(ids.contains) ?? false { dropRoute(route, at: key) }
        }
    }

    mutating func put(_ entry: EntryOf<A>, replacing old: EntryOf<A>?) {
        let index = deviceIndex
        switch entry {
        case .fdb(let e):
            // A replace rewrites the MAC's first remote, as the kernel does.
            if case .fdb(let was)? = old, fdb[e.mac] != was, var extra = extraFDB[e.mac], let at = extra.firstIndex(of: was) {
                extra[at] = e
                extraFDB[e.mac] = extra
            } else {
                fdb[e.mac] = e
            }
        case .neighbor(let n): neighbors[n.ip] = n
        case .nexthop(var n):
            n.deviceIndex = n.deviceIndex ?? index
            nexthops[n.id] = n
        case .route(var r):
            r.deviceIndex = r.deviceIndex ?? index
            routes[r.key] = r
        case .address(let a):
            if !addresses.contains(a) { addresses.append(a) }
        }
    }

    mutating func drop(_ entry: EntryOf<A>) {
        switch entry {
        case .fdb(let e):
            if fdb[e.mac] == e {
                if var extra = extraFDB[e.mac], !extra.isEmpty {
                    fdb[e.mac] = extra.removeFirst()
                    extraFDB[e.mac] = extra.isEmpty ? nil : extra
                } else {
                    fdb[e.mac] = nil
                }
            } else if var extra = extraFDB[e.mac], let at = extra.firstIndex(of: e) {
                extra.remove(at: at)
                extraFDB[e.mac] = extra.isEmpty ? nil : extra
            }
        case .neighbor(let n): neighbors[n.ip] = nil
        case .nexthop(let n):
            nexthops[n.id] = nil
            dropRoutes(using: [n.id])
        case .route(let r):
            let key = r.key
            if let same = routesAt(key).first(where: { Self.sameRoute($0, r) }) { dropRoute(same, at: key) } else if let first = routes[key] { dropRoute(first, at: key) }
        case .address(let a): addresses.removeAll { $0 == a }
        }
    }

    mutating func dropRoute(_ route: RouteOf<A>, at key: RouteKeyOf<A>) {
        if routes[key] == route {
            if var extra = extraRoutes[key], !extra.isEmpty {
                routes[key] = extra.removeFirst()
                extraRoutes[key] = extra.isEmpty ? nil : extra
            } else {
                routes[key] = nil
            }
        } else if var extra = extraRoutes[key], let at = extra.firstIndex(of: route) {
            extra.remove(at: at)
            extraRoutes[key] = extra.isEmpty ? nil : extra
        }
    }

    /// `IPv4Prefix.overlaps`, for either family.
    static func overlap(_ a: A.Prefix, _ b: A.Prefix) -> Bool { a.contains(b.network) || b.contains(a.network) }

    /// The same route as far as a delete is concerned (the kernel fills in fields a request leaves out).
    static func sameRoute(_ a: RouteOf<A>, _ b: RouteOf<A>) -> Bool {
        a.key == b.key && a.nexthopID == b.nexthopID && a.gateway == b.gateway && a.proto == b.proto && a.type == b.type
    }

    // MARK: events

    /// What an event did to the picture.
    public enum Noted: Sendable, Hashable {
        /// The entries at these keys changed: diff them.
        case touched([EntryKeyOf<A>])
        /// Nothing to do: the agent's own write came back (the picture holds
        /// it already), or a change that does not concern the agent.
        case ignored
        /// Only a full pass can tell: the device or its addresses changed, a
        /// route of someone else's appeared where a peer's goes, or an event
        /// does not say whether it replaced an entry or added one beside it.
        case fullPass(String)
    }

    /// Takes in a kernel event. `proto` is the agent's route protocol,
    /// `network` the plane's pod network (a foreign route inside it changes
    /// which peers may be programmed; nil: the plane programs no peer, as the
    /// IPv4 plane of an IPv6-only cluster); `followsRoutes`: the backend decides
    /// by the host's routes which peers are on its segment (host-gw,
    /// DirectRouting), so any change of someone else's route may change that.
    mutating func noteOf(_ event: KernelEventOf<A>, proto: UInt8, network: A.Prefix?, followsRoutes: Bool) -> Noted {
        let entry: EntryOf<A>
        switch event.subject {
        case .device(let what): return event.own ? .ignored : .fullPass(what)
        case .entry(let e): entry = e
        }
        if case .route(let r) = entry, r.proto != proto, deviceIndex == nil || r.deviceIndex != deviceIndex {
            // Someone else's route: it matters if it took the key of one of ours,
            // or overlaps the network (a peer's subnet may collide with it now, or no longer).
            if routes[r.key] != nil && !event.deleted { return .fullPass("a route of protocol \(Renderer.protocolName(r.proto)) to \(r.dst)") }
            guard let network else { return .ignored }
            let isIPv6 = A.family == IPv6Address.family
            // The kernel's link-local routes (fe80::/64 on every IPv6 link) never decide a peer.
            if isIPv6, let dst = r.dst.network as? IPv6Address, dst.isLinkLocal { return .ignored }
            if followsRoutes && !Self.overlap(r.dst, network) {
                return .fullPass("route \(r.dst) \(event.deleted ? "deleted" : "changed"): which peers are on this host's segment is decided again")
            }
            // IPv6 has no link scope: a connected network is a route with a device and no gateway.
            let connected = r.scope == 253 || (isIPv6 && r.type == 1 && r.gateway == nil && r.nexthopID == nil && r.deviceIndex != nil)
            let overlaps = Self.overlap(r.dst, network) && (connected || r.dst.length >= network.length)
            return overlaps ? .fullPass("route \(r.dst) of protocol \(Renderer.protocolName(r.proto)) \(event.deleted ? "deleted" : "changed")") : .ignored
        }
        guard let key = entry.key else { return event.own ? .ignored : .fullPass("address of the device changed") }
        if event.deleted {
            // The echo of the agent's own delete, taken in when it was written
            // (the routes that used the nexthop with it): nothing to walk.
            if event.own, case .nexthop(let n) = entry, nexthops[n.id] == nil { return .ignored }
            var keys = [key]
            if case .nexthop(let n) = entry {
                // The kernel deletes the routes that use a nexthop with it, and says nothing.
                keys += routes.filter { $0.value.nexthopID == n.id }.map { .route($0.key) }
            }
            drop(entry)
            return event.own ? .ignored : .touched(keys)
        }
        switch entry {
        case .fdb(let e):
            // A new remote for a MAC that has another: a replace or an append
            // (`bridge fdb append`)? The kernel's message does not say.
            let remotes = fdbRemotes(e.mac)
            if remotes.contains(e) { return .touched([key]) }
            if !remotes.isEmpty && !event.replace && !event.own {
                return .fullPass("a second remote for \(e.mac) (replaced or appended?)")
            }
            put(entry, replacing: remotes.first.map { .fdb($0) })
        case .route(let r):
            if let have = routes[r.key], !Self.sameRoute(have, r), !event.replace, !event.own {
                return .fullPass("a second route to \(r.dst) (replaced or appended?)")
            }
            routes[r.key] = r
        default:
            put(entry, replacing: nil)
        }
        return event.own ? .ignored : .touched([key])
    }
}

public typealias KernelPicture = KernelPictureOf<IPv4Address>
public typealias KernelPicture6 = KernelPictureOf<IPv6Address>

extension KernelPictureOf where A == IPv4Address {
    public init(_ snapshot: KernelSnapshot) { self.init(snapshot: snapshot) }

    /// Takes in a change the kernel accepted (see `recordOf`).
    public mutating func record(_ change: Change) { recordOf(change) }

    /// Takes in a batch the kernel accepted (see `recordAllOf`).
    public mutating func record(_ changes: [Change]) { recordAllOf(changes) }

    /// Takes in a kernel event (see `noteOf`).
    public mutating func note(_ event: KernelEvent, proto: UInt8, network: IPv4Prefix?, followsRoutes: Bool = false) -> Noted {
        noteOf(event, proto: proto, network: network, followsRoutes: followsRoutes)
    }
}

extension KernelPictureOf where A == IPv6Address {
    /// The IPv6 plane's picture. What the kernel keeps on an IPv6 device by
    /// itself (the link-local address, each address's own route) is left out,
    /// as the full diff leaves it out.
    public init(_ snapshot: KernelSnapshot6) { self.init(snapshot: Differ.withoutKernelOwn(snapshot)) }

    public mutating func record(_ change: Change6) { recordOf(change) }

    public mutating func record(_ changes: [Change6]) { recordAllOf(changes) }

    public mutating func note(_ event: KernelEvent6, proto: UInt8, network: IPv6Prefix?, followsRoutes: Bool = false) -> Noted {
        noteOf(event, proto: proto, network: network, followsRoutes: followsRoutes)
    }
}

/// A table of kernel entries by key that stores each entry packed: what the
/// agent writes (a permanent FDB entry, a nexthop via a gateway, ...) in a few
/// bytes; any other entry whole, beside. Reads and writes whole entries, and
/// packs an entry only when unpacking gives it back equal, so nothing is lost
/// whatever fields the entry gains.
public struct PackedTable<Value: Packable>: Sendable, Sequence {
    public typealias Key = Value.Key
    var packed: [Key: Value.Packed] = [:]
    /// Entries the packed form cannot hold.
    var whole: [Key: Value] = [:]

    public init() {}

    public subscript(key: Key) -> Value? {
        get {
            if let entry = packed[key] { return Value(key: key, packed: entry) }
            return whole.isEmpty ? nil : whole[key]
        }
        set {
            if let newValue, let entry = newValue.packed, Value(key: key, packed: entry) == newValue {
                packed[key] = entry
                if !whole.isEmpty { whole[key] = nil }
            } else {
                if let newValue { whole[key] = newValue } else if !whole.isEmpty { whole[key] = nil }
                packed[key] = nil
            }
        }
    }

    public var count: Int { packed.count + whole.count }

    mutating func reserveCapacity(_ count: Int) { packed.reserveCapacity(count) }

    public func makeIterator() -> AnyIterator<(key: Key, value: Value)> {
        var packed = self.packed.makeIterator()
        var whole = self.whole.makeIterator()
        return AnyIterator {
            if let (key, entry) = packed.next() { return (key, Value(key: key, packed: entry)) }
            return whole.next()
        }
    }
}

/// A kernel entry with a packed form for `PackedTable`.
public protocol Packable: Equatable, Sendable {
    associatedtype Key: Hashable, Sendable
    associatedtype Packed: Sendable
    /// The packed form, if this entry has one (the table checks that it unpacks equal).
    var packed: Packed? { get }
    init(key: Key, packed: Packed)
}

extension FDBEntryOf: Packable {
    /// A permanent remote on the device's own port and VNI: its destination.
    @inline(__always) public var packed: A? { permanent && port == nil && vni == nil && via == nil ? dst : nil }
    @inline(__always) public init(key: MACAddress, packed: A) { self.init(mac: key, dst: packed) }
}

extension NeighborOf: Packable {
    /// A permanent neighbor: its MAC.
    @inline(__always) public var packed: MACAddress? { permanent ? mac : nil }
    @inline(__always) public init(key: A, packed: MACAddress) { self.init(ip: key, mac: packed) }
}

/// A nexthop via a gateway on a device, not a group.
public struct PackedNexthopOf<A: IPFamilyAddress>: Sendable {
    var gateway: A
    var deviceIndex: Int32
    var onlink: Bool
    var proto: UInt8
}

extension NexthopOf: Packable {
    @inline(__always) public var packed: PackedNexthopOf<A>? {
        guard let gateway, let deviceIndex, group == nil else { return nil }
        return PackedNexthopOf(gateway: gateway, deviceIndex: deviceIndex, onlink: onlink, proto: proto)
    }

    @inline(__always) public init(key: UInt32, packed: PackedNexthopOf<A>) {
        self.init(id: key, gateway: packed.gateway, onlink: packed.onlink, proto: packed.proto, deviceIndex: packed.deviceIndex)
    }
}

/// A route without its key, its optional fields' presence in `flags`.
public struct PackedRouteOf<A: IPFamilyAddress>: Sendable {
    var gateway: A
    var nexthopID: UInt32
    var deviceIndex: Int32
    /// 1: gateway, 2: nexthop id, 4: device index, 8: onlink.
    var flags: UInt8
    var proto: UInt8
    var type: UInt8
    var scope: UInt8
}

extension RouteOf: Packable {
    @inline(__always) public var packed: PackedRouteOf<A>? {
        var flags: UInt8 = onlink ? 8 : 0
        if gateway != nil { flags |= 1 }
        if nexthopID != nil { flags |= 2 }
        if deviceIndex != nil { flags |= 4 }
        return PackedRouteOf(gateway: gateway ?? A.zero, nexthopID: nexthopID ?? 0, deviceIndex: deviceIndex ?? 0, flags: flags,
                             proto: proto, type: type, scope: scope)
    }

    @inline(__always) public init(key: RouteKeyOf<A>, packed: PackedRouteOf<A>) {
        self.init(dst: key.dst, gateway: packed.flags & 1 != 0 ? packed.gateway : nil,
                  nexthopID: packed.flags & 2 != 0 ? packed.nexthopID : nil, onlink: packed.flags & 8 != 0, proto: packed.proto,
                  priority: key.priority, deviceIndex: packed.flags & 4 != 0 ? packed.deviceIndex : nil, type: packed.type,
                  scope: packed.scope)
    }
}

/// One plane's rules for the daemon's per-lease updates, the same the full
/// desired state applies (`PeerChecks` for the IPv4 plane, `PeerChecks6` for
/// the IPv6 plane): whether a peer takes part in the plane at all, why it
/// cannot be programmed, what it claims, and its kernel entries.
public protocol PlaneChecks: Sendable {
    associatedtype Family: IPFamilyAddress
    associatedtype Claim: Hashable
    /// The agent's route protocol.
    var proto: UInt8 { get }
    /// Whether a peer's entries depend on the host's routes (host-gw, DirectRouting).
    var followsRoutes: Bool { get }
    /// What this node claims: no peer may claim it too.
    var localClaims: [Claim] { get }
    /// Routes of the backend's own, not a peer's (udp: the network into its device).
    var ownRoutes: [RouteOf<Family>] { get }
    /// Whether the peer takes part in this plane at all (a peer without an IPv6
    /// half has nothing in the IPv6 plane; no peer has in the IPv4 plane of an
    /// IPv6-only cluster): one that does not claims nothing and has no entries.
    func inPlane(_ peer: NodeRecord) -> Bool
    /// Why the peer cannot be programmed, whatever the other peers are; nil if it can.
    func reason(_ peer: NodeRecord) -> String?
    /// What a peer claims, in the order conflicts are reported.
    func forEachClaim(_ peer: NodeRecord, _ body: (Claim) -> Void)
    /// The kernel entries of a peer that passed every check, in dependency order.
    func forEachEntry(_ peer: NodeRecord, _ body: (EntryOf<Family>) -> Void)
}

extension PeerChecks: PlaneChecks {
    public var proto: UInt8 { settings.proto }
    public var followsRoutes: Bool { backend.followsRoutes }
    public var ownRoutes: [Route] { backend.deviceEntries.compactMap { if case .route(let r) = $0 { r } else { nil } } }
    public func inPlane(_ peer: NodeRecord) -> Bool { network.enableIPv4 }
    public func forEachEntry(_ peer: NodeRecord, _ body: (Entry) -> Void) { backend.forEachEntry(peer, body) }
}

extension PeerChecks6: PlaneChecks {
    public var proto: UInt8 { routes.settings.proto }
    public var followsRoutes: Bool {
        if backend is HostGWBackend6 { return true }
        return (backend as? VXLANBackend6)?.lookup != nil
    }
    public var ownRoutes: [Route6] { [] }
    public func inPlane(_ peer: NodeRecord) -> Bool { peer.ipv6 != nil }

    /// The claims of a peer's IPv6 half, in the order `DesiredState6` checks them.
    public func forEachClaim(_ peer: NodeRecord, _ body: (PeerClaim6) -> Void) {
        guard let half = peer.ipv6 else { return }
        body(.subnet(half.subnet))
        if let own = backend.claim(half) { body(own) }
        body(.publicIP(half.publicIP))
        body(.name(peer.name))
    }

    public func forEachEntry(_ peer: NodeRecord, _ body: (Entry6) -> Void) {
        guard let half = peer.ipv6 else { return }
        backend.forEachEntry(half, body)
    }
}

/// One plane's desired state by key (`DesiredIndex`: IPv4, `DesiredIndex6`:
/// IPv6), with what the daemon needs to update it one peer at a time: which
/// peers are programmed, and which claims (subnet, public address, name, VTEP
/// MAC) more than one peer makes.
///
/// Sized for 50,000 peers: it stores the programmed peers, not their entries.
/// Every entry a backend makes for a peer is a function of the peer record (and
/// of the host facts the backend was built with), so each key names the peer
/// that wants it, and the entry itself is the backend's for that peer, derived
/// when the diff asks (`want(_:)`). Claims are kept as hashes: two claims with
/// the same hash look like a collision, which only sends that lease to a full pass.
public struct DesiredIndexOf<Checks: PlaneChecks>: Sendable {
    public typealias A = Checks.Family
    public let checks: Checks
    /// The plane's VXLAN device (nil: the backend keeps none, or the plane is off).
    public let device: VXLANDevice?
    public let deviceName: String
    /// The backend's own entries, not a peer's (udp: the route of the whole network into its device).
    var own: [RouteKeyOf<A>: RouteOf<A>] = [:]
    /// The peers, in slots: the daemon's one table (shared with the reconciler
    /// and the other plane's index), or one of this index's own.
    let table: PeerTable
    /// Whether the table is this index's own: then `update` puts the changes in
    /// it; a shared table has them already.
    let ownsTable: Bool
    /// Whether the peer in each slot is programmed in this plane.
    var programmed: [Bool] = []
    public private(set) var peerCount = 0
    /// The slot of the peer that wants each key, one table per kind of key
    /// (their keys are 4 to 12 bytes for IPv4; one table keyed by `EntryKey` would be 16).
    var byMAC: [MACAddress: Int32] = [:]
    var byAddress: [A: Int32] = [:]
    var byNexthop: [UInt32: Int32] = [:]
    var byRoute: [RouteKeyOf<A>: Int32] = [:]
    public private(set) var skipped: [SkippedPeer]
    /// The hash of every claim of every peer of the view, programmed or not;
    /// those made more than once, with their count.
    var claimed: Set<Int> = []
    var claimedAgain: [Int: Int] = [:]
    let localClaims: Set<Int>

    public var proto: UInt8 { checks.proto }
    public var followsRoutes: Bool { checks.followsRoutes }

    /// Indexes a plane's desired state computed in full from `peers` (the view's),
    /// whose records are `table`'s when one is given (nil: the index keeps its own).
    init(checks: Checks, device: VXLANDevice?, deviceName: String, skipped: [SkippedPeer], programmed origins: [String],
         peers: [NodeRecord], table: PeerTable?) {
        if let table, table.count == peers.count, peers.allSatisfy({ table.slot(of: $0.origin) != nil }) {
            self.table = table
            ownsTable = false
        } else {
            self.table = PeerTable(peers)
            ownsTable = true
        }
        self.checks = checks
        self.device = device
        self.deviceName = deviceName
        localClaims = Set(checks.localClaims.map(\.hashValue))
        self.skipped = skipped
        claimed.reserveCapacity(peers.count * 4)
        for peer in peers where checks.inPlane(peer) { claim(peer, 1) }
        for route in checks.ownRoutes { own[route.key] = route }
        let programmed = Set(origins)
        let count = programmed.count
        byMAC.reserveCapacity(count)
        byAddress.reserveCapacity(count)
        byNexthop.reserveCapacity(count)
        byRoute.reserveCapacity(count)
        for peer in peers where programmed.contains(peer.origin) { _ = add(peer) }
    }

    /// Whether the peer with this origin is programmed.
    public func isProgrammed(_ origin: String) -> Bool { programmedSlot(origin) != nil }

    /// The slot of a programmed peer (or of one removed from the table whose removal this index has not taken in).
    func programmedSlot(_ origin: String) -> Int32? {
        guard let slot = table.slot(of: origin), Int(slot) < programmed.count, programmed[Int(slot)] else { return nil }
        return slot
    }

    mutating func setProgrammed(_ slot: Int32, _ value: Bool) {
        let i = Int(slot)
        if i >= programmed.count { programmed += repeatElement(false, count: i - programmed.count + 1 + programmed.count / 4) }
        guard programmed[i] != value else { return }
        programmed[i] = value
        peerCount += value ? 1 : -1
    }

    /// The entry the desired state holds at `key`: the backend's entry with that
    /// key for the peer that wants it; nil when no programmed peer does.
    func wantOf(_ key: EntryKeyOf<A>) -> EntryOf<A>? {
        if case .route(let route) = key, let mine = own[route] { return .route(mine) }
        let slot: Int32? = switch key {
        case .fdb(let mac): byMAC[mac]
        case .neighbor(let ip): byAddress[ip]
        case .nexthop(let id): byNexthop[id]
        case .route(let route): byRoute[route]
        }
        guard let slot else { return nil }
        var found: EntryOf<A>?
        checks.forEachEntry(table.record(at: slot)) { entry in
            if found == nil, entry.key == key { found = entry }
        }
        return found
    }

    // A closure that captures `self` while `checks` (of a generic type) is
    // borrowed makes a copy of `checks` per call: the closures below capture
    // only locals and inout parameters.

    mutating func claim(_ peer: NodeRecord, _ delta: Int) {
        Self.count(peer, delta, checks: checks, claimed: &claimed, claimedAgain: &claimedAgain)
    }

    static func count(_ peer: NodeRecord, _ delta: Int, checks: Checks, claimed: inout Set<Int>, claimedAgain: inout [Int: Int]) {
        checks.forEachClaim(peer) { claim in
            let hash = claim.hashValue
            if delta > 0 {
                if !claimed.insert(hash).inserted { claimedAgain[hash, default: 1] += 1 }
            } else if let count = claimedAgain[hash] {
                claimedAgain[hash] = count > 2 ? count - 1 : nil
            } else {
                claimed.remove(hash)
            }
        }
    }

    /// The keys of a peer's entries, in dependency order.
    func keys(_ record: NodeRecord) -> [EntryKeyOf<A>] {
        var keys: [EntryKeyOf<A>] = []
        keys.reserveCapacity(4)
        checks.forEachEntry(record) { entry in
            if let key = entry.key { keys.append(key) }
        }
        return keys
    }

    /// Sets (or clears, with nil) who wants `key`; clearing leaves a key another slot took.
    mutating func point(_ key: EntryKeyOf<A>, to slot: Int32?, from old: Int32? = nil) {
        func set<K: Hashable>(_ table: inout [K: Int32], _ k: K) {
            if let slot { table[k] = slot } else if table[k] == old { table[k] = nil }
        }
        switch key {
        case .fdb(let mac): set(&byMAC, mac)
        case .neighbor(let ip): set(&byAddress, ip)
        case .nexthop(let id): set(&byNexthop, id)
        case .route(let route): set(&byRoute, route)
        }
    }

    /// Programs a peer (the table's record of its origin): its slot is marked, its keys point to it; returns the keys.
    mutating func add(_ record: NodeRecord) -> [EntryKeyOf<A>] {
        guard let slot = table.slot(of: record.origin) else { preconditionFailure("a peer programmed is in the table") }
        setProgrammed(slot, true)
        let keys = keys(record)
        for key in keys { point(key, to: slot) }
        return keys
    }

    /// Whether a peer claims nothing another peer or this node claims.
    func alone(_ peer: NodeRecord) -> Bool {
        var alone = true
        checks.forEachClaim(peer) { claim in
            let hash = claim.hashValue
            if claimedAgain[hash] != nil || localClaims.contains(hash) { alone = false }
        }
        return alone
    }

    /// Applies leases that changed (`upserts`) and leases that went (`removals`,
    /// by origin); `previous` holds the record each changed origin had before
    /// (none: it is new). Returns the keys whose desired entries changed, or nil
    /// when a full computation must decide: a peer that shares a claim with
    /// another (which one wins depends on the others), a peer skipped before or
    /// now (its reason is kept in order with the others'). A peer that is not
    /// in the plane (`PlaneChecks.inPlane`), before or now, has nothing there to
    /// decide. The index is unusable after nil.
    mutating func updateOf(upserts: [NodeRecord], removals: [String], previous: [String: NodeRecord]) -> Set<EntryKeyOf<A>>? {
        if ownsTable {
            for origin in removals { table.remove(origin) }
            for record in upserts { table.upsert(record) }
        }
        defer { if ownsTable { table.settle() } }
        var touched = Set<EntryKeyOf<A>>()
        var gone = Set<String>()
        func remove(_ origin: String) -> Bool {
            guard !gone.contains(origin), let old = previous[origin] else { return programmedSlot(origin) == nil }
            guard checks.inPlane(old) else {
                gone.insert(origin)
                return programmedSlot(origin) == nil
            }
            guard let slot = programmedSlot(origin), alone(old) else { return false }
            gone.insert(origin)
            claim(old, -1)
            setProgrammed(slot, false)
            // `old` is the record this index programmed: the table's before the change.
            for key in keys(old) {
                point(key, to: nil, from: slot)
                touched.insert(key)
            }
            return true
        }
        for origin in removals { guard remove(origin) else { return nil } }
        for record in upserts {
            // The same record as before: the same outcome (programmed, or skipped for the same reason).
            if previous[record.origin] == record { continue }
            guard remove(record.origin) else { return nil }
            guard checks.inPlane(record) else { continue }
            claim(record, 1)
            guard alone(record), checks.reason(record) == nil else { return nil }
            touched.formUnion(add(record))
        }
        return touched
    }

    /// The changes for the entries at `keys` only: the picture's against this
    /// index's, by the full diff's rules. The device and its address are the
    /// full diff's. `kept` lists nexthops left because something else uses them.
    func planOf(keys: Set<EntryKeyOf<A>>, picture: KernelPictureOf<A>) -> (changes: [ChangeOf<A>], kept: [String]) {
        var changes: [ChangeOf<A>] = []
        var kept: [String] = []
        let deviceIndex = picture.deviceIndex
        let proto = checks.proto
        let renderer = Renderer(deviceName: deviceName, proto: proto, deviceIndex: deviceIndex)
        for key in keys {
            let wanted = wantOf(key)
            switch key {
            case .fdb(let mac):
                let want: FDBEntryOf<A>? = if case .fdb(let e)? = wanted { e } else { nil }
                changes += Differ.fdbChanges(want: want, have: picture.fdbRemotes(mac))
            case .neighbor(let ip):
                let want: NeighborOf<A>? = if case .neighbor(let n)? = wanted { n } else { nil }
                if let change = Differ.neighborChange(want: want, have: picture.neighbors[ip]) { changes.append(change) }
            case .nexthop(let id):
                if case .nexthop(let want)? = wanted {
                    if let change = Differ.nexthopChange(want: want, have: picture.nexthops[id], deviceIndex: deviceIndex) {
                        changes.append(change)
                    }
                } else if let have = picture.nexthops[id] {
                    if let user = picture.nexthopUsers[id] {
                        kept.append(Differ.keptLine(have, user: user, renderer: renderer))
                    } else {
                        changes.append(.remove(.nexthop(have)))
                    }
                }
            case .route(let routeKey):
                let have = picture.routesAt(routeKey)
                if case .route(let want)? = wanted {
                    if let change = Differ.routeChange(want: want, have: have.first, deviceIndex: deviceIndex, proto: proto) {
                        changes.append(change)
                    }
                    changes += have.dropFirst().map { .remove(.route($0)) }
                } else {
                    changes += have.map { .remove(.route($0)) }
                }
            }
        }
        return (changes, kept)
    }
}

public typealias DesiredIndex = DesiredIndexOf<PeerChecks>
public typealias DesiredIndex6 = DesiredIndexOf<PeerChecks6>

extension DesiredIndexOf where Checks == PeerChecks {
    /// Indexes the IPv4 plane's desired state computed in full from `view`.
    public init(desired: DesiredState, view: ClusterView, host: HostFacts, table: PeerTable? = nil) {
        self.init(checks: PeerChecks(view: view, host: host, settings: desired.settings), device: desired.device,
                  deviceName: desired.deviceName, skipped: desired.skipped, programmed: desired.peerOrigins, peers: view.peers,
                  table: table)
    }

    public func want(_ key: EntryKey) -> Entry? { wantOf(key) }

    /// See `updateOf`.
    public mutating func update(upserts: [NodeRecord], removals: [String], previous: [String: NodeRecord]) -> Set<EntryKey>? {
        updateOf(upserts: upserts, removals: removals, previous: previous)
    }
}

extension DesiredIndexOf where Checks == PeerChecks6 {
    /// Indexes the IPv6 plane's desired state computed in full from `view`
    /// (throws what building that state threw: this node's IPv6 half is unusable).
    public init(desired: DesiredState6, view: ClusterView, host: HostFacts, table: PeerTable? = nil) throws(ReconcileError) {
        let checks = try PeerChecks6(view: view, network: desired.network, subnetLen: desired.subnetLen, host: host,
                                     settings: desired.settings)
        self.init(checks: checks, device: desired.device, deviceName: desired.deviceName, skipped: desired.skipped,
                  programmed: desired.peers.map(\.origin), peers: view.peers, table: table)
    }

    public func want(_ key: EntryKey6) -> Entry6? { wantOf(key) }

    /// See `updateOf`.
    public mutating func update(upserts: [NodeRecord], removals: [String], previous: [String: NodeRecord]) -> Set<EntryKey6>? {
        updateOf(upserts: upserts, removals: removals, previous: previous)
    }
}

extension Differ {
    /// The IPv4 plane's changes for the entries at `keys` only (see `DesiredIndexOf.planOf`).
    public static func plan(keys: Set<EntryKey>, desired: DesiredIndex, picture: KernelPicture) -> (changes: [Change], kept: [String]) {
        desired.planOf(keys: keys, picture: picture)
    }

    /// The IPv6 plane's changes for the entries at `keys` only.
    public static func plan(keys: Set<EntryKey6>, desired: DesiredIndex6, picture: KernelPicture6) -> (changes: [Change6], kept: [String]) {
        desired.planOf(keys: keys, picture: picture)
    }
}
