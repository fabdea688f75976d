import Model

/// One host of the cluster as a registry describes it.
public struct NodeRecord: Sendable, Hashable {
    public var name: String
    public var publicIP: IPv4Address
    public var subnet: IPv4Prefix
    /// The VTEP MAC the node announced; nil: derived from VNI and public IP.
    public var vtepMAC: MACAddress?
    /// Where the record came from, for messages (`inventory.json nodes[2]`, an etcd key).
    public var origin: String
    /// Dual stack: the node's IPv6 half (subnet, underlay address, the IPv6
    /// device's VTEP MAC), nil on an IPv4-only node. Kept out of line: an
    /// IPv4-only cluster of 50,000 peers pays one pointer per record.
    public var ipv6: IPv6Half? {
        get { ipv6Storage?.value }
        set { ipv6Storage = newValue.map(Box.init) }
    }
    private var ipv6Storage: Box?

    /// A node's IPv6 half.
    public struct IPv6Half: Sendable, Hashable {
        public var subnet: IPv6Prefix
        public var publicIP: IPv6Address
        /// The VTEP MAC the node announced (`BackendV6Data.VtepMAC`); nil: derived.
        public var vtepMAC: MACAddress?

        public init(subnet: IPv6Prefix, publicIP: IPv6Address, vtepMAC: MACAddress? = nil) {
            self.subnet = subnet
            self.publicIP = publicIP
            self.vtepMAC = vtepMAC
        }

        public func mac(vni: UInt32) -> MACAddress { vtepMAC ?? .vtep(vni: vni, publicIPv6: publicIP) }
        /// The node's IPv6 VTEP address: the first address of its IPv6 subnet.
        public var vtepAddress: IPv6Address { subnet.network }
    }

    private final class Box: Sendable, Hashable {
        let value: IPv6Half
        init(_ value: IPv6Half) { self.value = value }
        static func == (a: Box, b: Box) -> Bool { a.value == b.value }
        func hash(into hasher: inout Hasher) { hasher.combine(value) }
    }

    public init(name: String, publicIP: IPv4Address, subnet: IPv4Prefix, vtepMAC: MACAddress? = nil, origin: String = "",
                ipv6: IPv6Half? = nil) {
        self.name = name
        self.publicIP = publicIP
        self.subnet = subnet
        self.vtepMAC = vtepMAC
        self.origin = origin
        self.ipv6Storage = ipv6.map(Box.init)
    }

    /// A node of an IPv6-only cluster (`EnableIPv4: false`). Its IPv4 half holds
    /// flannel's empty values, as a flanneld lease does (public IP 0.0.0.0,
    /// subnet 0.0.0.0/0: the key `0.0.0.0-0&fd00:10:244:1::-64`); nothing reads
    /// them, since the network's `enableIPv4` is false.
    public static func ipv6Only(name: String, ipv6: IPv6Half, origin: String = "") -> NodeRecord {
        NodeRecord(name: name, publicIP: IPv4Address(0), subnet: noIPv4Subnet, origin: origin, ipv6: ipv6)
    }

    /// flannel's empty IPv4 subnet, 0.0.0.0/0: an IPv6-only node's.
    public static let noIPv4Subnet = IPv4Prefix(IPv4Address(0), 0)

    public func mac(vni: UInt32) -> MACAddress { vtepMAC ?? .vtep(vni: vni, publicIP: publicIP) }
    /// The node's VTEP address: the first address of its subnet (`10.244.N.0`).
    public var vtepAddress: IPv4Address { subnet.network }
}

/// The cluster as one host sees it: the network, itself, and its peers.
public struct ClusterView: Sendable, Hashable {
    public var network: NetworkConfig
    public var local: NodeRecord
    public var peers: [NodeRecord]

    public init(network: NetworkConfig, local: NodeRecord, peers: [NodeRecord]) {
        self.network = network
        self.local = local
        self.peers = peers
    }
}

/// What the host knows of itself that peer validation needs.
public struct HostFacts: Sendable, Hashable {
    /// The interface that carries VXLAN packets.
    public var underlay: LinkState
    /// Every IPv4 address on the host.
    public var addresses: Set<IPv4Address>
    /// Main-table routes that are not the agent's (from the snapshot): peer
    /// validation, and which peers are on this host's segment (host-gw, DirectRouting).
    public var foreignRoutes: [Route]
    /// The underlay's own networks (its addresses with their prefix lengths).
    public var underlayPrefixes: [IPv4Prefix]

    /// Dual stack: the interface that holds this node's public IPv6 address
    /// (nil: the same as `underlay`, as flannel's one external interface).
    public var ipv6Underlay: LinkState?
    /// Every IPv6 address on the host.
    public var ipv6Addresses: Set<IPv6Address>
    /// Main-table IPv6 routes that are not the agent's (IPv6 peer validation).
    public var ipv6ForeignRoutes: [Route6]

    public init(underlay: LinkState, addresses: Set<IPv4Address> = [], foreignRoutes: [Route] = [],
                underlayPrefixes: [IPv4Prefix] = [], ipv6Underlay: LinkState? = nil, ipv6Addresses: Set<IPv6Address> = [],
                ipv6ForeignRoutes: [Route6] = []) {
        self.underlay = underlay
        self.addresses = addresses
        self.foreignRoutes = foreignRoutes
        self.underlayPrefixes = underlayPrefixes
        self.ipv6Underlay = ipv6Underlay
        self.ipv6Addresses = ipv6Addresses
        self.ipv6ForeignRoutes = ipv6ForeignRoutes
    }
}

/// A peer left out of the desired state, and why.
public struct SkippedPeer: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var origin: String
    public var reason: String
    /// Left out of the IPv6 plane only (dual stack): its IPv4 entries are kept.
    public var ipv6: Bool = false

    public var description: String {
        "peer \(name)\(origin.isEmpty ? "" : " (\(origin))"): \(reason); \(ipv6 ? "left out of the IPv6 plane" : "skipped")"
    }
}

/// Settings of the agent itself (not of the cluster).
public struct AgentSettings: Sendable, Hashable {
    /// The `rtm_protocol` of the agent's routes and nexthops.
    public var proto: UInt8
    public var layout: RouteLayout
    /// The VXLAN device name; default `flannel.<VNI>`.
    public var deviceName: String?
    /// Dual stack: the IPv6 VXLAN device's name; default `flannel-v6.<VNI>`, as flannel names it.
    public var deviceName6: String?

    public init(proto: UInt8 = AgentSettings.defaultProtocol, layout: RouteLayout = .nexthop, deviceName: String? = nil,
                deviceName6: String? = nil) {
        self.proto = proto
        self.layout = layout
        self.deviceName = deviceName
        self.deviceName6 = deviceName6
    }

    /// Not named in iproute2's rt_protos (80 is Calico's, 11 zebra, 12 bird, 186 bgp).
    public static let defaultProtocol: UInt8 = 152
    public static let protocolName = "vxlan-agent"
    /// Nexthop ids are `nexthopIDBase + subnet index`: a range of our own, stable per peer.
    public static let nexthopIDBase: UInt32 = 0x7658_0000
    /// The IPv6 plane's nexthop ids are `nexthopIDBase6 + IPv6 subnet index`. Nexthop
    /// ids are one space per namespace for both families: the IPv4 plane's fill
    /// `nexthopIDBase` + 0...0xffff for up to 65,536 subnets (a /8 of /24s; the
    /// benchmarks' 50,000 peers), so the IPv6 plane's start one such block higher.
    public static let nexthopIDBase6: UInt32 = nexthopIDBase + 0x1_0000
}

/// Everything the agent wants the kernel to hold.
public struct DesiredState: Sendable, Hashable {
    /// The backend's VXLAN device; nil when it keeps none (host-gw, udp).
    public var device: VXLANDevice?
    /// The udp backend's TUN device.
    public var tun: TUNDevice?
    /// The name the agent's device has (or a leftover of it would have): `flannel.<VNI>`.
    public var deviceName: String
    /// The device's address (the VTEP /32, udp: the subnet's address); nil without a device.
    public var address: IPv4Prefix?
    public var fdb: [FDBEntry] = []
    public var neighbors: [Neighbor] = []
    public var nexthops: [Nexthop] = []
    public var routes: [Route] = []
    public var settings: AgentSettings
    /// The MTU pods get (subnet.env's `FLANNEL_MTU`): the device's, or the underlay's.
    public var mtu: UInt32
    /// The programmed peers, in (subnet, name) order (the maps from an entry to
    /// its peer are built only when output asks for them).
    public var peers: [NodeRecord] = []
    public var skipped: [SkippedPeer] = []

    /// The name of each programmed peer.
    public var peerNames: [String] { peers.map(\.name) }
    /// The origin of each programmed peer (its lease key, its inventory entry).
    public var peerOrigins: [String] { peers.map(\.origin) }

    /// Names the peer behind each entry of the desired state.
    public typealias PeerIndex = PeerIndexOf<IPv4Address>

    public func peerIndex() -> PeerIndex {
        var index = PeerIndex(capacity: peers.count)
        for peer in peers { index.add(peer.name, vtep: peer.vtepAddress, publicIP: peer.publicIP, subnet: peer.subnet) }
        return index
    }

    /// Builds the desired state; peers that are wrong on their own are skipped
    /// with a reason, the rest are kept. Of peers that claim the same subnet,
    /// public IP, name (or what the backend needs unique: the VTEP MAC), the
    /// first in (subnet, name) order is kept.
    public init(view: ClusterView, host: HostFacts, settings: AgentSettings) {
        guard view.network.enableIPv4 else {
            // IPv6-only: the IPv4 plane holds nothing. The device name stays, so the
            // diff removes a leftover `flannel.<VNI>` (and with it every route
            // through it) of a node that ran IPv4 before.
            device = nil
            tun = nil
            deviceName = settings.deviceName ?? view.network.deviceName
            address = nil
            mtu = host.underlay.mtu
            self.settings = settings
            return
        }
        let checks = PeerChecks(view: view, host: host, settings: settings)
        device = checks.backend.device
        tun = checks.backend.tun
        deviceName = settings.deviceName ?? view.network.deviceName
        address = device == nil && tun == nil ? nil : IPv4Prefix(view.local.vtepAddress, 32)
        for entry in checks.backend.deviceEntries {
            if case .route(let r) = entry { routes.append(r) }
        }
        mtu = checks.backend.mtu
        self.settings = settings

        var claims = ClaimTable<IPv4Address>(capacity: view.peers.count + 1)
        for claim in checks.localClaims { claims.record(claim, by: view.local.name) }
        // Sized up front: grown by appending, the five arrays were copied (and
        // their new pages faulted in) a dozen times each at 10,000 peers.
        let count = view.peers.count
        peers.reserveCapacity(count)
        fdb.reserveCapacity(count)
        neighbors.reserveCapacity(count)
        nexthops.reserveCapacity(count)
        routes.reserveCapacity(count + routes.count)
        for peer in view.peers.sorted(by: { ($0.subnet, $0.name) < ($1.subnet, $1.name) }) {
            func skip(_ reason: String) { skipped.append(SkippedPeer(name: peer.name, origin: peer.origin, reason: reason)) }
            if let reason = checks.reason(peer) { skip(reason); continue }
            if let conflict = claims.claim(subnet: peer.subnet, own: checks.backend.claim(peer), publicIP: peer.publicIP, name: peer.name) {
                skip(conflict)
                continue
            }

            peers.append(peer)
            checks.backend.forEachEntry(peer) { entry in
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

    public var peerCount: Int { peers.count }
}

/// What no two peers (nor a peer and this node) may share. Of peers that claim
/// the same, the first in (subnet, name) order is kept.

/// How packets reach the peers: flannel's `Backend.Type`. A backend says what
/// it needs of a peer and what the kernel must hold for each; validation, the
/// diff (full and per key), apply, the kernel picture and the daemon are the
/// same for every backend. A new backend is a new type here and a case in
/// `PeerChecks.backend(for:)`.
public protocol Backend: Sendable {
    /// The VXLAN device the backend keeps for this node; nil when it keeps none
    /// (host-gw: a VXLAN device of the agent's name is then removed).
    var device: VXLANDevice? { get }
    /// The TUN device the backend keeps (udp); nil for the others.
    var tun: TUNDevice? { get }
    /// Entries of this node rather than of a peer (udp: the one route of the
    /// whole network into its TUN device), on the backend's device.
    var deviceEntries: [Entry] { get }
    /// The MTU pods get (subnet.env's `FLANNEL_MTU`).
    var mtu: UInt32 { get }
    /// What this node claims (no peer may claim it too), beyond its public IP and name.
    var localClaims: [PeerClaim] { get }
    /// Whether a peer's entries depend on this host's routes (which peers are on
    /// its segment): then a change of the main table's routes is decided again by a full pass.
    var followsRoutes: Bool { get }
    /// Why this backend cannot reach the peer, whatever the others are; nil if it can.
    func reason(_ peer: NodeRecord) -> String?
    /// What the peer claims beyond its subnet, public IP and name (VXLAN: its VTEP MAC).
    func claim(_ peer: NodeRecord) -> PeerClaim?
    /// The kernel entries of a peer that passed every check, in dependency order.
    func forEachEntry(_ peer: NodeRecord, _ body: (Entry) -> Void)
}

extension Backend {
    public var tun: TUNDevice? { nil }
    public var deviceEntries: [Entry] { [] }

    /// Nexthop ids are `nexthopIDBase + subnet index`: stable per peer, the same
    /// id whichever way the peer is reached (a peer that moves between VXLAN and
    /// a direct route keeps its route; only its nexthop is replaced).
    static func nexthopID(_ peer: NodeRecord, network: NetworkConfig) -> UInt32 {
        let index = (peer.subnet.network.value &- network.network.network.value) >> (32 - UInt32(network.subnetLen))
        return AgentSettings.nexthopIDBase &+ index
    }

    /// A route to the peer's subnet via `gateway` on the device `deviceIndex` (nil:
    /// the backend's device), through a nexthop object in the nexthop layout.
    static func route(_ peer: NodeRecord, via gateway: IPv4Address, deviceIndex: Int32?, onlink: Bool,
                      network: NetworkConfig, settings: AgentSettings, _ body: (Entry) -> Void) {
        switch settings.layout {
        case .nexthop:
            let id = nexthopID(peer, network: network)
            body(.nexthop(Nexthop(id: id, gateway: gateway, onlink: onlink, proto: settings.proto, deviceIndex: deviceIndex)))
            body(.route(Route(dst: peer.subnet, gateway: gateway, nexthopID: id, onlink: onlink, proto: settings.proto,
                              deviceIndex: deviceIndex)))
        case .classic:
            body(.route(Route(dst: peer.subnet, gateway: gateway, nexthopID: nil, onlink: onlink, proto: settings.proto,
                              deviceIndex: deviceIndex)))
        }
    }
}

/// flannel's vxlan backend: the device `flannel.<VNI>`, and per peer a permanent
/// FDB entry (VTEP MAC -> public IP), a permanent neighbor (VTEP address -> VTEP
/// MAC) and a route to the peer's subnet via its VTEP address (through a nexthop
/// object in the nexthop layout). With `DirectRouting`, a peer on this host's
/// segment (the route to its public IP has no gateway) gets host-gw's direct
/// route instead, and no FDB entry or neighbor.
public struct VXLANBackend: Backend {
    public let network: NetworkConfig
    public let settings: AgentSettings
    public let vxlan: VXLANDevice
    /// Set with DirectRouting: which peers are on this host's segment.
    let lookup: RouteLookup?

    public init(view: ClusterView, host: HostFacts, settings: AgentSettings) {
        network = view.network
        self.settings = settings
        let underlayMTU = host.underlay.mtu
        vxlan = VXLANDevice(name: settings.deviceName ?? network.deviceName, vni: network.vni,
                            localIP: view.local.publicIP, underlayIndex: host.underlay.index,
                            underlayName: host.underlay.name, port: network.port, learning: false,
                            mtu: network.mtu ?? (underlayMTU > 50 ? underlayMTU - 50 : underlayMTU),
                            mac: view.local.mac(vni: network.vni))
        lookup = network.directRouting ? RouteLookup(host.foreignRoutes) : nil
    }

    public var device: VXLANDevice? { vxlan }
    public var mtu: UInt32 { vxlan.mtu }
    public var localClaims: [PeerClaim] { [.vtepMAC(vxlan.mac)] }
    public var followsRoutes: Bool { lookup != nil }

    public func mac(_ peer: NodeRecord) -> MACAddress { peer.mac(vni: network.vni) }

    public func reason(_ peer: NodeRecord) -> String? {
        let mac = mac(peer)
        return mac.isValidUnicast ? nil : "vtepMAC \(mac) is not a unicast MAC"
    }

    public func claim(_ peer: NodeRecord) -> PeerClaim? { .vtepMAC(mac(peer)) }

    public func forEachEntry(_ peer: NodeRecord, _ body: (Entry) -> Void) {
        if let lookup, case .direct(let device) = lookup.reach(peer.publicIP) {
            Self.route(peer, via: peer.publicIP, deviceIndex: device, onlink: false, network: network, settings: settings, body)
            return
        }
        let gateway = peer.vtepAddress
        let mac = mac(peer)
        body(.fdb(FDBEntry(mac: mac, dst: peer.publicIP)))
        body(.neighbor(Neighbor(ip: gateway, mac: mac)))
        Self.route(peer, via: gateway, deviceIndex: nil, onlink: true, network: network, settings: settings, body)
    }
}

/// flannel's host-gw backend: no device and no encapsulation; per peer a route
/// to its subnet via its public IP on the underlay (`ip route replace
/// 10.244.2.0/24 via 198.18.0.2 dev eth0`), through a nexthop object in the
/// nexthop layout. Every peer must be on the underlay's segment: one behind a
/// router is skipped with the router named, never routed into it.
public struct HostGWBackend: Backend {
    public let network: NetworkConfig
    public let settings: AgentSettings
    public let underlay: LinkState
    let lookup: RouteLookup

    public init(view: ClusterView, host: HostFacts, settings: AgentSettings) {
        network = view.network
        self.settings = settings
        underlay = host.underlay
        lookup = RouteLookup(host.foreignRoutes)
    }

    public var device: VXLANDevice? { nil }
    /// No encapsulation: pods get the underlay's MTU, as flannel gives them.
    public var mtu: UInt32 { underlay.mtu }
    public var localClaims: [PeerClaim] { [] }
    public var followsRoutes: Bool { true }

    public func reason(_ peer: NodeRecord) -> String? {
        // IPv6-only: records hold flannel's empty IPv4 values; the IPv4 plane takes none.
        guard network.enableIPv4 else { return "the network is IPv6-only (EnableIPv4 false): there is no IPv4 plane" }
        let ip = peer.publicIP
        switch lookup.reach(ip) {
        case .direct(let device) where device == underlay.index:
            return nil
        case .direct(let device):
            return "publicIP \(ip) is on a network of interface #\(device), not of the underlay \(underlay.name): "
                + "host-gw routes to peers over the underlay only"
        case .gateway(let gateway, let route):
            return "publicIP \(ip) is not on this host's segment: it is reached via the gateway \(gateway) (route \(route)); "
                + "host-gw needs every node on one L2 segment (use vxlan, or vxlan with DirectRouting, across routers)"
        case .none(let why):
            return "publicIP \(ip) is not reachable from this host: \(why)"
        }
    }

    public func claim(_ peer: NodeRecord) -> PeerClaim? { nil }

    public func forEachEntry(_ peer: NodeRecord, _ body: (Entry) -> Void) {
        Self.route(peer, via: peer.publicIP, deviceIndex: underlay.index, onlink: false, network: network, settings: settings, body)
    }
}

/// flannel's udp backend: the TUN device `flannel0` (MTU: the underlay's minus
/// the 28 bytes of the outer IP and UDP headers), this node's subnet address on
/// it, and one route of the whole network into it; the data path (`run` only)
/// reads each packet and sends it to the peer that holds its destination, one
/// IP packet per UDP datagram. Peers have no kernel entries: the data path's
/// table is the programmed peers.
public struct UDPBackend: Backend {
    public let network: NetworkConfig
    public let settings: AgentSettings
    public let tunDevice: TUNDevice

    public init(view: ClusterView, host: HostFacts, settings: AgentSettings) {
        network = view.network
        self.settings = settings
        let underlayMTU = host.underlay.mtu
        tunDevice = TUNDevice(name: settings.deviceName ?? NetworkConfig.tunName, mtu: underlayMTU > 28 ? underlayMTU - 28 : underlayMTU)
    }

    public var device: VXLANDevice? { nil }
    public var tun: TUNDevice? { tunDevice }
    public var mtu: UInt32 { tunDevice.mtu }
    public var localClaims: [PeerClaim] { [] }
    public var followsRoutes: Bool { false }

    public var deviceEntries: [Entry] {
        [.route(Route(dst: network.network, gateway: nil, nexthopID: nil, onlink: false, proto: settings.proto))]
    }

    public func reason(_ peer: NodeRecord) -> String? { nil }
    public func claim(_ peer: NodeRecord) -> PeerClaim? { nil }
    public func forEachEntry(_ peer: NodeRecord, _ body: (Entry) -> Void) {}
}

/// How this host reaches an address by its main table.
public enum Reach: Sendable, Hashable {
    /// On a network of this host (no gateway between): the interface.
    case direct(Int32)
    /// Through a router: the gateway, and the route that names it.
    case gateway(IPv4Address, route: IPv4Prefix)
    /// No usable route; why.
    case none(String)
}

/// Longest-prefix match over the main table's routes that are not the agent's:
/// which peers are on this host's segment. flannel asks the kernel (`ip route
/// get`: no gateway means direct); this answers the same from the snapshot's
/// routes without a request per peer. It reads the main table only: policy
/// rules that send the underlay's traffic to another table are not followed.
public struct RouteLookup: Sendable {
    /// By prefix length, longest first: the route for each network (the lowest metric).
    let tables: [(length: UInt8, routes: [UInt32: Route])]

    public init(_ routes: [Route]) {
        var byLength = [UInt8: [UInt32: Route]]()
        for route in routes where route.dst.length <= 32 {
            let key = route.dst.network.value
            if let have = byLength[route.dst.length]?[key], have.priority <= route.priority { continue }
            byLength[route.dst.length, default: [:]][key] = route
        }
        tables = byLength.sorted { $0.key > $1.key }.map { (length: $0.key, routes: $0.value) }
    }

    /// The route the main table picks for `ip`, if any.
    public func route(to ip: IPv4Address) -> Route? {
        for (length, routes) in tables {
            let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(length))
            if let route = routes[ip.value & mask] { return route }
        }
        return nil
    }

    public func reach(_ ip: IPv4Address) -> Reach {
        guard let route = route(to: ip) else { return .none("no route to it") }
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

/// The checks every peer must pass on its own (not against other peers),
/// whatever the backend, then the backend's. One place for both, so the full
/// desired state and the daemon's per-lease update cannot disagree.
public struct PeerChecks: Sendable {
    public let network: NetworkConfig
    public let local: NodeRecord
    public let host: HostFacts
    public let settings: AgentSettings
    public let backend: any Backend
    let connected: [Route]
    let exact: [IPv4Prefix: Route]

    public init(view: ClusterView, host: HostFacts, settings: AgentSettings) {
        network = view.network
        local = view.local
        self.host = host
        self.settings = settings
        backend = Self.backend(for: view, host: host, settings: settings)
        connected = host.foreignRoutes.filter { $0.scope == 253 && $0.type == 1 }
        exact = Dictionary(host.foreignRoutes.filter { $0.priority == 0 }.map { ($0.dst, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// The backend `Backend.Type` names (the configuration parser admits only those that exist).
    static func backend(for view: ClusterView, host: HostFacts, settings: AgentSettings) -> any Backend {
        switch view.network.backendType {
        case "host-gw": HostGWBackend(view: view, host: host, settings: settings)
        case "udp": UDPBackend(view: view, host: host, settings: settings)
        default: VXLANBackend(view: view, host: host, settings: settings)
        }
    }

    /// What this node claims: no peer may claim it too.
    public var localClaims: [PeerClaim] { backend.localClaims + [.publicIP(local.publicIP), .name(local.name)] }

    /// What a peer claims, in the order conflicts are reported.
    public func forEachClaim(_ peer: NodeRecord, _ body: (PeerClaim) -> Void) {
        body(.subnet(peer.subnet))
        if let own = backend.claim(peer) { body(own) }
        body(.publicIP(peer.publicIP))
        body(.name(peer.name))
    }

    /// Why the peer cannot be programmed, whatever the other peers are; nil if it can.
    public func reason(_ peer: NodeRecord) -> String? {
        // IPv6-only: records hold flannel's empty IPv4 values; the IPv4 plane takes none.
        guard network.enableIPv4 else { return "the network is IPv6-only (EnableIPv4 false): there is no IPv4 plane" }
        let ip = peer.publicIP
        if ip.isLoopback || ip.isMulticast || ip.isUnspecified || ip.isReserved || ip.isBroadcast {
            return "publicIP \(ip) is \(ip.isLoopback ? "loopback" : ip.isMulticast ? "multicast" : "not a unicast address")"
        }
        if host.addresses.contains(ip) { return "publicIP \(ip) is an address of this host" }
        if network.network.contains(ip) {
            return "publicIP \(ip) is inside the pod network \(network.network): its VXLAN packets would be routed back into the overlay"
        }
        if let lan = host.underlayPrefixes.first(where: { $0.length < 31 && $0.contains(ip) && ($0.last == ip || $0.network == ip) }) {
            return "publicIP \(ip) is the \(lan.last == ip ? "broadcast" : "network") address of the underlay's subnet "
                + "\(lan.network)/\(lan.length), not a host"
        }
        guard peer.subnet.isCanonical, peer.subnet.length == network.subnetLen, network.network.contains(peer.subnet) else {
            return "subnet \(peer.subnet) is not a /\(network.subnetLen) inside the network \(network.network)"
        }
        if peer.subnet.overlaps(local.subnet) { return "subnet \(peer.subnet) overlaps this host's subnet \(local.subnet)" }
        if let route = connected.first(where: { $0.dst.overlaps(peer.subnet) && $0.deviceIndex != nil }) {
            return "subnet \(peer.subnet) overlaps \(route.dst), a network this host is connected to"
        }
        if let route = exact[peer.subnet] {
            return "route \(peer.subnet) already exists with protocol \(Renderer.protocolName(route.proto)); "
                + "it is not the agent's to replace"
        }
        return backend.reason(peer)
    }
}
