import Model

/// What the kernel should hold in the IPv6 plane of a dual-stack (or IPv6-only)
/// cluster: flannel's `flannel-v6.<VNI>` device with this node's public IPv6 as
/// its local address, its IPv6 subnet's first address as a /128, and per peer
/// with a usable IPv6 half a permanent neighbor (NDP), an FDB entry with an IPv6
/// destination, and a route to its IPv6 subnet (through a nexthop object in the
/// nexthop layout). The IPv4 plane (`DesiredState`) is independent: a peer left
/// out of one plane keeps its entries in the other.
public struct DesiredState6: Sendable, Hashable {
    /// The IPv6 VXLAN device; nil when the backend keeps none (host-gw, udp).
    public var device: VXLANDevice?
    /// The IPv6 device's name (or a leftover's): `flannel-v6.<VNI>`.
    public var deviceName: String
    /// The device's address: the first address of this node's IPv6 subnet, /128.
    public var address: IPv6Prefix?
    public var fdb: [FDBEntry6] = []
    public var neighbors: [Neighbor6] = []
    public var nexthops: [Nexthop6] = []
    public var routes: [Route6] = []
    public var settings: AgentSettings
    /// The IPv6 device's MTU (an IPv6 underlay's MTU - 70), or the underlay's without a device.
    public var mtu: UInt32
    public var network: IPv6Prefix
    public var subnetLen: UInt8
    /// The peers in the IPv6 plane, in (IPv6 subnet, name) order.
    public var peers: [NodeRecord] = []
    /// Peers left out of the IPv6 plane (`ipv6` set), with why.
    public var skipped: [SkippedPeer] = []

    public var peerCount: Int { peers.count }

    /// What flannel adds for an IPv6 route written with metric 0: the kernel
    /// stores it with metric 1024 (measured), so the desired route says 1024 and
    /// the diff converges.
    public static let routeMetric: UInt32 = 1024
    /// An IPv6 underlay's encapsulation: 40 (IPv6) + 8 (UDP) + 8 (VXLAN) + 14 (inner Ethernet).
    public static let encapOverhead: UInt32 = 70

    /// Builds the IPv6 plane of `view`: `network` is the cluster's IPv6 network
    /// (net-conf's `IPv6Network`), `subnetLen` its `IPv6SubnetLen`. This node
    /// must have a usable IPv6 half (else `ReconcileError.localIPv6`); peers
    /// without one, or with one that is wrong on its own or claims what another
    /// already claims, are left out with a reason that names them.
    public init(view: ClusterView, network: IPv6Prefix, subnetLen: UInt8 = 64, host: HostFacts,
                settings: AgentSettings) throws(ReconcileError) {
        let checks = try PeerChecks6(view: view, network: network, subnetLen: subnetLen, host: host, settings: settings)
        self.network = network
        self.subnetLen = subnetLen
        self.settings = settings
        device = checks.backend.device
        deviceName = settings.deviceName6 ?? view.network.ipv6DeviceName
        address = device == nil ? nil : IPv6Prefix(checks.localHalf.vtepAddress, 128)
        mtu = checks.backend.mtu

        var claims = ClaimTable<IPv6Address>(capacity: view.peers.count + 1)
        for claim in checks.localClaims { claims.record(claim, by: view.local.name) }

        var withHalf: [(peer: NodeRecord, half: NodeRecord.IPv6Half)] = []
        withHalf.reserveCapacity(view.peers.count)
        for peer in view.peers {
            if let half = peer.ipv6 {
                withHalf.append((peer, half))
            } else {
                skipped.append(SkippedPeer(name: peer.name, origin: peer.origin, reason: PeerChecks6.noIPv6Half, ipv6: true))
            }
        }
        withHalf.sort { ($0.half.subnet, $0.peer.name) < ($1.half.subnet, $1.peer.name) }
        for (peer, half) in withHalf {
            func skip(_ reason: String) { skipped.append(SkippedPeer(name: peer.name, origin: peer.origin, reason: reason, ipv6: true)) }
            if let reason = checks.reason(peer) { skip(reason); continue }
            if let conflict = claims.claim(subnet: half.subnet, own: checks.backend.claim(half), publicIP: half.publicIP, name: peer.name) {
                skip(conflict)
                continue
            }

            peers.append(peer)
            checks.backend.forEachEntry(half) { entry in
                switch entry {
                case .fdb(let e): fdb.append(e)
                case .neighbor(let n): neighbors.append(n)
                case .nexthop(let n): nexthops.append(n)
                case .route(let r): routes.append(r)
                case .address: break
                }
            }
        }
    }

    /// Names the peer behind each entry of the IPv6 plane.
    public typealias PeerIndex = PeerIndexOf<IPv6Address>

    public func peerIndex() -> PeerIndex {
        var index = PeerIndex(capacity: peers.count)
        for peer in peers {
            guard let half = peer.ipv6 else { continue }
            index.add(peer.name, vtep: half.vtepAddress, publicIP: half.publicIP, subnet: half.subnet)
        }
        return index
    }
}

extension NetworkConfig {
    /// The IPv6 VXLAN device, as flannel names it (`flannel-v6.<VNI>`).
    public var ipv6DeviceName: String { "flannel-v6.\(vni)" }
}

/// What no two peers (nor a peer and this node) may share in the IPv6 plane.

/// How packets reach the peers in the IPv6 plane (the IPv6 half of flannel's backends).
public protocol Backend6: Sendable {
    /// The IPv6 VXLAN device; nil when the backend keeps none.
    var device: VXLANDevice? { get }
    var mtu: UInt32 { get }
    /// What this node claims beyond its IPv6 subnet, public IPv6 and name.
    var localClaims: [PeerClaim6] { get }
    /// Why this backend cannot reach the peer's IPv6 half; nil if it can.
    func reason(_ half: NodeRecord.IPv6Half) -> String?
    func claim(_ half: NodeRecord.IPv6Half) -> PeerClaim6?
    /// The kernel entries of a peer's IPv6 half that passed every check, in dependency order.
    func forEachEntry(_ half: NodeRecord.IPv6Half, _ body: (Entry6) -> Void)
}

/// The IPv6 plane's routing shared by its backends: nexthop ids, and a route
/// to the peer's IPv6 subnet through a nexthop object or classic.
struct IPv6Routes: Sendable {
    let network: IPv6Prefix
    let subnetLen: UInt8
    let settings: AgentSettings

    /// The subnet's index in the network (`(subnet - network) >> (128 - subnetLen)`),
    /// nil if it does not fit in 64 bits.
    static func index(_ subnet: IPv6Prefix, in network: IPv6Prefix, subnetLen: UInt8) -> UInt64? {
        let a = subnet.network, b = network.network
        let (low, borrow) = a.low.subtractingReportingOverflow(b.low)
        let high = a.high &- b.high &- (borrow ? 1 : 0)
        let shift = 128 - Int(subnetLen)
        if shift >= 64 { return high >> UInt64(shift - 64) }
        if shift == 0 { return high == 0 ? low : nil }
        guard high >> UInt64(shift) == 0 else { return nil }
        return high << UInt64(64 - shift) | low >> UInt64(shift)
    }

    /// `nexthopIDBase6 + index`: stable per peer, disjoint from the IPv4 plane's ids.
    func nexthopID(_ subnet: IPv6Prefix) -> UInt32? {
        guard let index = Self.index(subnet, in: network, subnetLen: subnetLen),
              index <= UInt64(UInt32.max - AgentSettings.nexthopIDBase6) else { return nil }
        return AgentSettings.nexthopIDBase6 + UInt32(index)
    }

    /// Why a subnet has no nexthop id in the nexthop layout; nil if it has one.
    func reason(_ subnet: IPv6Prefix) -> String? {
        guard settings.layout == .nexthop, nexthopID(subnet) == nil else { return nil }
        return "IPv6 subnet \(subnet) is too far into the IPv6 network \(network) for a nexthop id of the agent's range "
            + "(use the classic route layout, or a smaller IPv6Network)"
    }

    func route(to subnet: IPv6Prefix, via gateway: IPv6Address, deviceIndex: Int32?, onlink: Bool, _ body: (Entry6) -> Void) {
        let metric = DesiredState6.routeMetric
        if settings.layout == .nexthop, let id = nexthopID(subnet) {
            body(.nexthop(Nexthop6(id: id, gateway: gateway, onlink: onlink, proto: settings.proto, deviceIndex: deviceIndex)))
            body(.route(Route6(dst: subnet, gateway: gateway, nexthopID: id, onlink: onlink, proto: settings.proto,
                               priority: metric, deviceIndex: deviceIndex)))
        } else {
            body(.route(Route6(dst: subnet, gateway: gateway, nexthopID: nil, onlink: onlink, proto: settings.proto,
                               priority: metric, deviceIndex: deviceIndex)))
        }
    }
}

/// flannel's vxlan backend, IPv6 half: the device `flannel-v6.<VNI>` (local: this
/// node's public IPv6; MTU: the underlay's - 70), and per peer a permanent FDB
/// entry (IPv6 VTEP MAC -> public IPv6), a permanent neighbor (IPv6 VTEP address
/// -> IPv6 VTEP MAC) and a route to the IPv6 subnet via the VTEP address, onlink.
/// With `DirectRouting`, a peer whose public IPv6 is on this host's segment gets
/// host-gw's direct route instead, as flannel's v6 DirectRouting.
public struct VXLANBackend6: Backend6 {
    public let vxlan: VXLANDevice
    public let vni: UInt32
    let routes: IPv6Routes
    /// Set with DirectRouting: which peers are on this host's segment.
    let lookup: RouteLookup6?

    init(view: ClusterView, local: NodeRecord.IPv6Half, routes: IPv6Routes, underlay: LinkState, settings: AgentSettings,
         lookup: RouteLookup6? = nil) {
        vni = view.network.vni
        self.routes = routes
        self.lookup = lookup
        let mtu = view.network.mtu
            ?? (underlay.mtu > DesiredState6.encapOverhead ? underlay.mtu - DesiredState6.encapOverhead : underlay.mtu)
        vxlan = VXLANDevice(name: settings.deviceName6 ?? view.network.ipv6DeviceName, vni: vni, localIP: .zero,
                            underlayIndex: underlay.index, underlayName: underlay.name, port: view.network.port,
                            learning: false, mtu: mtu, mac: local.mac(vni: vni), localIPv6: local.publicIP)
    }

    public var device: VXLANDevice? { vxlan }
    public var mtu: UInt32 { vxlan.mtu }
    public var localClaims: [PeerClaim6] { [.vtepMAC(vxlan.mac)] }

    public func reason(_ half: NodeRecord.IPv6Half) -> String? {
        let mac = half.mac(vni: vni)
        return mac.isValidUnicast ? nil : "IPv6 vtepMAC \(mac) is not a unicast MAC"
    }

    public func claim(_ half: NodeRecord.IPv6Half) -> PeerClaim6? { .vtepMAC(half.mac(vni: vni)) }

    public func forEachEntry(_ half: NodeRecord.IPv6Half, _ body: (Entry6) -> Void) {
        if let lookup, case .direct(let device) = lookup.reach(half.publicIP) {
            routes.route(to: half.subnet, via: half.publicIP, deviceIndex: device, onlink: false, body)
            return
        }
        let mac = half.mac(vni: vni)
        body(.fdb(FDBEntry6(mac: mac, dst: half.publicIP)))
        body(.neighbor(Neighbor6(ip: half.vtepAddress, mac: mac)))
        routes.route(to: half.subnet, via: half.vtepAddress, deviceIndex: nil, onlink: true, body)
    }
}

/// Longest-prefix match over the main table's IPv6 routes that are not the
/// agent's: which peers' public IPv6 addresses are on this host's segment
/// (host-gw, DirectRouting). A host has few routes: a scan, longest first.
struct RouteLookup6: Sendable {
    /// Longest prefix first; of equal prefixes, the lowest metric first.
    let routes: [Route6]

    init(_ routes: [Route6]) {
        self.routes = routes.sorted { ($1.dst.length, $0.priority) < ($0.dst.length, $1.priority) }
    }

    func reach(_ ip: IPv6Address) -> Reach6 {
        guard let route = routes.first(where: { $0.dst.contains(ip) }) else { return .none("no route to it") }
        guard route.type == 1 else {
            let kind = [2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"][Int(route.type)]
                ?? "type \(route.type)"
            return .none("the route \(route.dst) is \(kind)")
        }
        if let gateway = route.gateway { return .gateway(gateway, route: route.dst) }
        if let id = route.nexthopID { return .none("the route \(route.dst) uses nexthop object \(id), which the agent does not follow") }
        guard let device = route.deviceIndex else { return .none("the route \(route.dst) has several next hops") }
        return .direct(device)
    }
}

/// How this host reaches an IPv6 address by its main table.
enum Reach6: Sendable, Hashable {
    case direct(Int32)
    case gateway(IPv6Address, route: IPv6Prefix)
    case none(String)
}

/// flannel's host-gw backend, IPv6 half: no device; per peer a route to its IPv6
/// subnet via its public IPv6 on the underlay (`ip -6 route replace
/// fd00:10:244:2::/64 via 2001:2::2 dev eth0`). Every peer must be on the
/// underlay's segment: one behind a router is left out with the router named.
struct HostGWBackend6: Backend6 {
    let underlay: LinkState
    let routes: IPv6Routes
    let lookup: RouteLookup6

    var device: VXLANDevice? { nil }
    var mtu: UInt32 { underlay.mtu }
    var localClaims: [PeerClaim6] { [] }

    func reason(_ half: NodeRecord.IPv6Half) -> String? {
        let ip = half.publicIP
        switch lookup.reach(ip) {
        case .direct(let device) where device == underlay.index:
            return nil
        case .direct(let device):
            return "publicIPv6 \(ip) is on a network of interface #\(device), not of the underlay \(underlay.name): "
                + "host-gw routes to peers over the underlay only"
        case .gateway(let gateway, let route):
            return "publicIPv6 \(ip) is not on this host's segment: it is reached via the gateway \(gateway) (route \(route)); "
                + "host-gw needs every node on one L2 segment (use vxlan, or vxlan with DirectRouting, across routers)"
        case .none(let why):
            return "publicIPv6 \(ip) is not reachable from this host: \(why)"
        }
    }

    func claim(_ half: NodeRecord.IPv6Half) -> PeerClaim6? { nil }

    func forEachEntry(_ half: NodeRecord.IPv6Half, _ body: (Entry6) -> Void) {
        routes.route(to: half.subnet, via: half.publicIP, deviceIndex: underlay.index, onlink: false, body)
    }
}

/// A backend without an IPv6 data path of its own (udp: flannel's udp backend is
/// IPv4 only): no device, no entries. A `flannel-v6.<VNI>` left by the vxlan
/// backend is removed, as the IPv4 plane removes `flannel.<VNI>`.
struct NoBackend6: Backend6 {
    let mtu: UInt32
    var device: VXLANDevice? { nil }
    var localClaims: [PeerClaim6] { [] }
    func reason(_ half: NodeRecord.IPv6Half) -> String? { "the udp backend has no IPv6 data path" }
    func claim(_ half: NodeRecord.IPv6Half) -> PeerClaim6? { nil }
    func forEachEntry(_ half: NodeRecord.IPv6Half, _ body: (Entry6) -> Void) {}
}

/// The checks a peer's IPv6 half must pass on its own, whatever the backend, then the backend's.
public struct PeerChecks6: Sendable {
    public let network: IPv6Prefix
    public let subnetLen: UInt8
    public let local: NodeRecord
    public let localHalf: NodeRecord.IPv6Half
    public let host: HostFacts
    public let backend: any Backend6
    let routes: IPv6Routes
    let connected: [Route6]
    let exact: [IPv6Prefix: Route6]

    public init(view: ClusterView, network: IPv6Prefix, subnetLen: UInt8 = 64, host: HostFacts,
                settings: AgentSettings) throws(ReconcileError) {
        let name = view.local.name
        guard let half = view.local.ipv6 else {
            throw .localIPv6(node: name, reason: "no IPv6 subnet and public IPv6 (set publicIPv6 and take an IPv6 lease)")
        }
        guard network.isCanonical, subnetLen > network.length, subnetLen <= 128 else {
            throw .localIPv6(node: name, reason: "the IPv6 network \(network) cannot hold /\(subnetLen) subnets")
        }
        if let why = Self.notGlobalUnicast(half.publicIP) {
            throw .localIPv6(node: name, reason: "publicIPv6 \(half.publicIP) \(why)")
        }
        guard half.subnet.isCanonical, half.subnet.length == subnetLen, network.contains(half.subnet) else {
            throw .localIPv6(node: name, reason: "IPv6 subnet \(half.subnet) is not a /\(subnetLen) inside the IPv6 network \(network)")
        }
        self.network = network
        self.subnetLen = subnetLen
        local = view.local
        localHalf = half
        self.host = host
        routes = IPv6Routes(network: network, subnetLen: subnetLen, settings: settings)
        let underlay = host.ipv6Underlay ?? host.underlay
        switch view.network.backendType {
        case "udp":
            backend = NoBackend6(mtu: underlay.mtu)
        case "host-gw":
            backend = HostGWBackend6(underlay: underlay, routes: routes, lookup: RouteLookup6(host.ipv6ForeignRoutes))
        default:
            backend = VXLANBackend6(view: view, local: half, routes: routes, underlay: underlay, settings: settings,
                                    lookup: view.network.directRouting ? RouteLookup6(host.ipv6ForeignRoutes) : nil)
        }
        // IPv6 routes are all of scope universe: a connected network is a
        // kernel route with a device and no gateway.
        connected = host.ipv6ForeignRoutes.filter {
            $0.type == 1 && $0.gateway == nil && $0.nexthopID == nil && $0.deviceIndex != nil && !$0.dst.network.isLinkLocal
        }
        exact = Dictionary(host.ipv6ForeignRoutes.filter { $0.priority == DesiredState6.routeMetric }.map { ($0.dst, $0) },
                           uniquingKeysWith: { a, _ in a })
    }

    /// What this node claims in the IPv6 plane.
    public var localClaims: [PeerClaim6] {
        backend.localClaims + [.subnet(localHalf.subnet), .publicIP(localHalf.publicIP), .name(local.name)]
    }

    /// Why a peer without an IPv6 half is not in the IPv6 plane.
    public static let noIPv6Half = "no IPv6 subnet and public IPv6 (an IPv4-only lease)"

    /// Why an address cannot carry VXLAN to a peer (`is link-local`, ...); nil for a global unicast address.
    static func notGlobalUnicast(_ ip: IPv6Address) -> String? {
        if ip.isUnspecified { return "is not a unicast address" }
        if ip.isLoopback { return "is loopback" }
        if ip.isMulticast { return "is multicast" }
        if ip.isLinkLocal { return "is link-local: VXLAN over IPv6 needs a global address" }
        if ip.isIPv4Mapped { return "is an IPv4-mapped address, not an IPv6 one" }
        return nil
    }

    /// Why the peer's IPv6 half cannot be programmed, whatever the other peers are; nil if it can.
    public func reason(_ peer: NodeRecord) -> String? {
        guard let half = peer.ipv6 else { return Self.noIPv6Half }
        let ip = half.publicIP
        if let why = Self.notGlobalUnicast(ip) { return "publicIPv6 \(ip) \(why)" }
        if host.ipv6Addresses.contains(ip) { return "publicIPv6 \(ip) is an address of this host" }
        if network.contains(ip) {
            return "publicIPv6 \(ip) is inside the IPv6 pod network \(network): its VXLAN packets would be routed back into the overlay"
        }
        let subnet = half.subnet
        guard subnet.isCanonical, subnet.length == subnetLen, network.contains(subnet) else {
            return "IPv6 subnet \(subnet) is not a /\(subnetLen) inside the IPv6 network \(network)"
        }
        if subnet.overlaps(localHalf.subnet) { return "IPv6 subnet \(subnet) overlaps this host's IPv6 subnet \(localHalf.subnet)" }
        if let route = connected.first(where: { $0.dst.overlaps(subnet) }) {
            return "IPv6 subnet \(subnet) overlaps \(route.dst), a network this host is connected to"
        }
        if let route = exact[subnet] {
            return "route \(subnet) already exists with protocol \(Renderer.protocolName(route.proto)); "
                + "it is not the agent's to replace"
        }
        return routes.reason(subnet) ?? backend.reason(half)
    }
}
