import Model

// The daemon's incremental reconcile: a picture of what the kernel holds (filled
// by a full pass's dump, kept current by the agent's own writes and by netlink
// events), the desired state indexed by key (filled by a full pass, kept current
// lease by lease), and a diff of the keys an event touched. The rules per key are
// the full diff's own (`Differ.fdbChanges`, ...): the two cannot disagree.
// Whatever the incremental path cannot decide alone (the device, addresses, a
// peer that collides with another, an ambiguous event) it hands to a full pass.

/// What the kernel holds of what the agent owns, by key.
public struct KernelPicture: Sendable {
    public var device: LinkState?
    public var addresses: [IPv4Prefix]
    /// The first remote of each MAC; the other remotes (only `bridge fdb append`
    /// makes them) in `extraFDB`.
    public var fdb: [MACAddress: FDBEntry] = [:]
    public var extraFDB: [MACAddress: [FDBEntry]] = [:]
    public var neighbors: [IPv4Address: Neighbor] = [:]
    public var nexthops: [UInt32: Nexthop] = [:]
    public var routes: [RouteKey: Route] = [:]
    /// Routes with a key another route has too (kept apart, like extra remotes).
    public var extraRoutes: [RouteKey: [Route]] = [:]
    public var nexthopUsers: [UInt32: String]

    public init(_ snapshot: KernelSnapshot) {
        device = snapshot.device
        addresses = snapshot.addresses
        nexthopUsers = snapshot.nexthopUsers
        fdb.reserveCapacity(snapshot.fdb.count)
        for entry in snapshot.fdb {
            if fdb[entry.mac] == nil { fdb[entry.mac] = entry } else { extraFDB[entry.mac, default: []].append(entry) }
        }
        neighbors = Dictionary(snapshot.neighbors.map { ($0.ip, $0) }, uniquingKeysWith: { a, _ in a })
        nexthops = Dictionary(snapshot.nexthops.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        routes.reserveCapacity(snapshot.routes.count)
        for route in snapshot.routes {
            if routes[route.key] == nil { routes[route.key] = route } else { extraRoutes[route.key, default: []].append(route) }
        }
    }

    public var deviceIndex: Int32? { device?.index }

    func fdbRemotes(_ mac: MACAddress) -> [FDBEntry] { (fdb[mac].map { [$0] } ?? []) + (extraFDB[mac] ?? []) }
    func routesAt(_ key: RouteKey) -> [Route] { (routes[key].map { [$0] } ?? []) + (extraRoutes[key] ?? []) }

    // MARK: the agent's own writes

    /// Takes in a change the kernel accepted. Entries only: a device change is
    /// followed by a full pass.
    public mutating func record(_ change: Change) {
        switch change {
        case .add(let entry): put(entry, replacing: nil)
        case .replace(let old, let new): put(new, replacing: old)
        case .remove(let entry): drop(entry)
        default: break
        }
    }

    mutating func put(_ entry: Entry, replacing old: Entry?) {
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

    mutating func drop(_ entry: Entry) {
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
            // The kernel deletes the routes that use a nexthop with it, and says nothing.
            for (key, route) in routes where route.nexthopID == n.id { dropRoute(route, at: key) }
            for (key, extra) in extraRoutes { for route in extra where route.nexthopID == n.id { dropRoute(route, at: key) } }
        case .route(let r):
            let key = r.key
            if let same = routesAt(key).first(where: { Self.sameRoute($0, r) }) { dropRoute(same, at: key) } else if let first = routes[key] { dropRoute(first, at: key) }
        case .address(let a): addresses.removeAll { $0 == a }
        }
    }

    mutating func dropRoute(_ route: Route, at key: RouteKey) {
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

    /// The same route as far as a delete is concerned (the kernel fills in fields a request leaves out).
    static func sameRoute(_ a: Route, _ b: Route) -> Bool {
        a.key == b.key && a.nexthopID == b.nexthopID && a.gateway == b.gateway && a.proto == b.proto && a.type == b.type
    }

    // MARK: events

    /// What an event did to the picture.
    public enum Noted: Sendable, Hashable {
        /// The entries at these keys changed: diff them.
        case touched([EntryKey])
        /// Nothing to do: the agent's own write came back (the picture holds
        /// it already), or a change that does not concern the agent.
        case ignored
        /// Only a full pass can tell: the device or its addresses changed, a
        /// route of someone else's appeared where a peer's goes, or an event
        /// does not say whether it replaced an entry or added one beside it.
        case fullPass(String)
    }

    /// Takes in a kernel event. `proto` is the agent's route protocol,
    /// `network` the cluster network (a foreign route inside it changes which
    /// peers may be programmed); `followsRoutes`: the backend decides by the
    /// host's routes which peers are on its segment (host-gw, DirectRouting), so
    /// any change of someone else's route may change that.
    public mutating func note(_ event: KernelEvent, proto: UInt8, network: IPv4Prefix, followsRoutes: Bool = false) -> Noted {
        let entry: Entry
        switch event.subject {
        case .device(let what): return event.own ? .ignored : .fullPass(what)
        case .entry(let e): entry = e
        }
        if case .route(let r) = entry, r.proto != proto, deviceIndex == nil || r.deviceIndex != deviceIndex {
            // Someone else's route: it matters if it took the key of one of ours,
            // or overlaps the network (a peer's subnet may collide with it now, or no longer).
            if routes[r.key] != nil && !event.deleted { return .fullPass("a route of protocol \(Renderer.protocolName(r.proto)) to \(r.dst)") }
            if followsRoutes && !r.dst.overlaps(network) {
                return .fullPass("route \(r.dst) \(event.deleted ? "deleted" : "changed"): which peers are on this host's segment is decided again")
            }
            let overlaps = r.dst.overlaps(network) && (r.scope == 253 || r.dst.length >= network.length)
            return overlaps ? .fullPass("route \(r.dst) of protocol \(Renderer.protocolName(r.proto)) \(event.deleted ? "deleted" : "changed")") : .ignored
        }
        guard let key = entry.key else { return event.own ? .ignored : .fullPass("address of the device changed") }
        if event.deleted {
            var keys = [key]
            if case .nexthop(let n) = entry {
                // The kernel deletes the routes that use a nexthop with it, and says nothing.
                keys += routes.values.filter { $0.nexthopID == n.id }.map { .route($0.key) }
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

/// The desired state by key, with what the daemon needs to update it one peer
/// at a time: which peers are programmed, and which claims (subnet, public IP,
/// name, VTEP MAC) more than one peer makes.
///
/// Sized for 50,000 peers: the peers themselves are the caller's (it passes the
/// previous record of a changed lease), a programmed peer's entries are the
/// backend's for it (computed again on removal, not stored), and claims are kept
/// as hashes. Two claims with the same hash look like a collision, which only
/// sends that lease to a full pass.
public struct DesiredIndex: Sendable {
    public let checks: PeerChecks
    public var device: VXLANDevice? { checks.backend.device }
    public let deviceName: String
    public var fdb: [MACAddress: FDBEntry] = [:]
    public var neighbors: [IPv4Address: Neighbor] = [:]
    public var nexthops: [UInt32: Nexthop] = [:]
    public var routes: [RouteKey: Route] = [:]
    /// The origins (lease keys) of the programmed peers.
    public private(set) var accepted: Set<String> = []
    public private(set) var skipped: [SkippedPeer]
    /// The hash of every claim of every peer of the view, programmed or not;
    /// those made more than once, with their count.
    var claimed: Set<Int> = []
    var claimedAgain: [Int: Int] = [:]
    let localClaims: Set<Int>

    public var peerCount: Int { accepted.count }

    /// Indexes a desired state computed in full from `view`.
    public init(desired: DesiredState, view: ClusterView, host: HostFacts) {
        checks = PeerChecks(view: view, host: host, settings: desired.settings)
        deviceName = desired.deviceName
        localClaims = Set(checks.localClaims.map(\.hashValue))
        skipped = desired.skipped
        claimed.reserveCapacity(view.peers.count * 4)
        for peer in view.peers { claim(peer, 1) }
        // The backend's own entries (udp: the route of the whole network into its device).
        for case .route(let r) in checks.backend.deviceEntries { routes[r.key] = r }
        let programmed = Set(desired.peerOrigins)
        accepted.reserveCapacity(programmed.count)
        for peer in view.peers where programmed.contains(peer.origin) { _ = add(peer) }
    }

    mutating func claim(_ peer: NodeRecord, _ delta: Int) {
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

    /// Programs a peer: its entries into the index; returns their keys.
    mutating func add(_ record: NodeRecord) -> [EntryKey] {
        accepted.insert(record.origin)
        var keys: [EntryKey] = []
        checks.backend.forEachEntry(record) { entry in
            switch entry {
            case .fdb(let e): fdb[e.mac] = e
            case .neighbor(let n): neighbors[n.ip] = n
            case .nexthop(let n): nexthops[n.id] = n
            case .route(let r): routes[r.key] = r
            case .address: break
            }
            if let key = entry.key { keys.append(key) }
        }
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
    /// now (its reason is kept in order with the others'). The index is
    /// unusable after nil.
    public mutating func update(upserts: [NodeRecord], removals: [String], previous: [String: NodeRecord]) -> Set<EntryKey>? {
        var touched = Set<EntryKey>()
        var gone = Set<String>()
        func remove(_ origin: String) -> Bool {
            guard !gone.contains(origin), let old = previous[origin] else { return !accepted.contains(origin) }
            guard accepted.contains(origin), alone(old) else { return false }
            gone.insert(origin)
            claim(old, -1)
            accepted.remove(origin)
            checks.backend.forEachEntry(old) { entry in
                switch entry {
                case .fdb(let e): fdb[e.mac] = nil
                case .neighbor(let n): neighbors[n.ip] = nil
                case .nexthop(let n): nexthops[n.id] = nil
                case .route(let r): routes[r.key] = nil
                case .address: break
                }
                if let key = entry.key { touched.insert(key) }
            }
            return true
        }
        for origin in removals { guard remove(origin) else { return nil } }
        for record in upserts {
            // The same record as before: the same outcome (programmed, or skipped for the same reason).
            if previous[record.origin] == record { continue }
            guard remove(record.origin) else { return nil }
            claim(record, 1)
            guard alone(record), checks.reason(record) == nil else { return nil }
            touched.formUnion(add(record))
        }
        return touched
    }
}

extension Differ {
    /// The changes for the entries at `keys` only: the picture's against the
    /// desired index's, by the full diff's rules. The device and its address
    /// are the full diff's. `kept` lists nexthops left because something else uses them.
    public static func plan(keys: Set<EntryKey>, desired: DesiredIndex, picture: KernelPicture) -> (changes: [Change], kept: [String]) {
        var changes: [Change] = []
        var kept: [String] = []
        let deviceIndex = picture.deviceIndex
        let proto = desired.checks.settings.proto
        let renderer = Renderer(deviceName: desired.deviceName, proto: proto, deviceIndex: deviceIndex)
        for key in keys {
            switch key {
            case .fdb(let mac):
                changes += fdbChanges(want: desired.fdb[mac], have: picture.fdbRemotes(mac))
            case .neighbor(let ip):
                if let change = neighborChange(want: desired.neighbors[ip], have: picture.neighbors[ip]) { changes.append(change) }
            case .nexthop(let id):
                if let want = desired.nexthops[id] {
                    if let change = nexthopChange(want: want, have: picture.nexthops[id], deviceIndex: deviceIndex) { changes.append(change) }
                } else if let have = picture.nexthops[id] {
                    if let user = picture.nexthopUsers[id] {
                        kept.append(keptLine(have, user: user, renderer: renderer))
                    } else {
                        changes.append(.remove(.nexthop(have)))
                    }
                }
            case .route(let routeKey):
                let have = picture.routesAt(routeKey)
                if let want = desired.routes[routeKey] {
                    if let change = routeChange(want: want, have: have.first, deviceIndex: deviceIndex, proto: proto) { changes.append(change) }
                    changes += have.dropFirst().map { .remove(.route($0)) }
                } else {
                    changes += have.map { .remove(.route($0)) }
                }
            }
        }
        return (changes, kept)
    }
}
