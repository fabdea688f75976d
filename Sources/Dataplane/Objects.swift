/// The VXLAN device (VTEP) as the agent wants it, or as the kernel has it.
public struct VXLANDevice: Hashable, Sendable {
    public var name: String
    public var vni: UInt32
    public var localIP: IPv4Address
    /// The interface index of the underlay device (the one holding `localIP`).
    public var underlayIndex: Int32
    /// The underlay's name, for messages only.
    public var underlayName: String
    public var port: UInt16
    public var learning: Bool
    public var mtu: UInt32
    public var mac: MACAddress

    public init(name: String, vni: UInt32, localIP: IPv4Address, underlayIndex: Int32, underlayName: String,
                port: UInt16 = 8472, learning: Bool = false, mtu: UInt32, mac: MACAddress) {
        self.name = name
        self.vni = vni
        self.localIP = localIP
        self.underlayIndex = underlayIndex
        self.underlayName = underlayName
        self.port = port
        self.learning = learning
        self.mtu = mtu
        self.mac = mac
    }

    /// The properties fixed at creation: if any differs, the device must be recreated.
    public func sameIdentity(as other: VXLANDevice) -> Bool {
        vni == other.vni && localIP == other.localIP && underlayIndex == other.underlayIndex
            && port == other.port && learning == other.learning
    }

    /// What differs in identity, in words (`vni 2 -> 1, port 4789 -> 8472`).
    public func identityDifferences(from old: VXLANDevice) -> String {
        var parts: [String] = []
        if vni != old.vni { parts.append("vni \(old.vni) -> \(vni)") }
        if localIP != old.localIP { parts.append("local \(old.localIP) -> \(localIP)") }
        if underlayIndex != old.underlayIndex { parts.append("dev \(old.underlayName) -> \(underlayName)") }
        if port != old.port { parts.append("dstport \(old.port) -> \(port)") }
        if learning != old.learning { parts.append(learning ? "nolearning -> learning" : "learning -> nolearning") }
        return parts.joined(separator: ", ")
    }
}

/// A link as the kernel reports it.
public struct LinkState: Hashable, Sendable {
    public var index: Int32
    public var name: String
    public var kind: String?
    public var mtu: UInt32
    public var mac: MACAddress?
    public var isUp: Bool
    /// Present when `kind == "vxlan"`.
    public var vxlan: VXLANDevice?

    public init(index: Int32, name: String, kind: String?, mtu: UInt32, mac: MACAddress?, isUp: Bool, vxlan: VXLANDevice?) {
        self.index = index
        self.name = name
        self.kind = kind
        self.mtu = mtu
        self.mac = mac
        self.isUp = isUp
        self.vxlan = vxlan
    }
}

/// A permanent ARP entry on the VXLAN device: the peer's VTEP address -> its VTEP MAC.
public struct Neighbor: Hashable, Sendable {
    public var ip: IPv4Address
    public var mac: MACAddress
    public var permanent: Bool

    public init(ip: IPv4Address, mac: MACAddress, permanent: Bool = true) {
        self.ip = ip
        self.mac = mac
        self.permanent = permanent
    }
}

/// A forwarding entry on the VXLAN device: the peer's VTEP MAC -> its public IP.
public struct FDBEntry: Hashable, Sendable {
    public var mac: MACAddress
    public var dst: IPv4Address
    public var permanent: Bool

    public init(mac: MACAddress, dst: IPv4Address, permanent: Bool = true) {
        self.mac = mac
        self.dst = dst
        self.permanent = permanent
    }
}

/// A nexthop object: `id N via GW dev flannel.1 onlink proto P`.
public struct Nexthop: Hashable, Sendable {
    public var id: UInt32
    public var gateway: IPv4Address?
    public var onlink: Bool
    public var proto: UInt8
    /// The output interface; nil for groups and blackholes.
    public var deviceIndex: Int32?

    public init(id: UInt32, gateway: IPv4Address?, onlink: Bool = true, proto: UInt8, deviceIndex: Int32? = nil) {
        self.id = id
        self.gateway = gateway
        self.onlink = onlink
        self.proto = proto
        self.deviceIndex = deviceIndex
    }
}

/// An IPv4 route in the main table.
public struct Route: Hashable, Sendable {
    public var dst: IPv4Prefix
    public var gateway: IPv4Address?
    /// Set for routes that use a nexthop object.
    public var nexthopID: UInt32?
    public var onlink: Bool
    public var proto: UInt8
    public var priority: UInt32
    /// The output interface, when the kernel names one.
    public var deviceIndex: Int32?
    /// `RTN_*`; unicast (1) for everything the agent writes.
    public var type: UInt8
    /// `RT_SCOPE_*`: 0 universe (ours), 253 link (connected networks).
    public var scope: UInt8

    public init(dst: IPv4Prefix, gateway: IPv4Address?, nexthopID: UInt32? = nil, onlink: Bool = true,
                proto: UInt8, priority: UInt32 = 0, deviceIndex: Int32? = nil, type: UInt8 = 1, scope: UInt8 = 0) {
        self.scope = scope
        self.dst = dst
        self.gateway = gateway
        self.nexthopID = nexthopID
        self.onlink = onlink
        self.proto = proto
        self.priority = priority
        self.deviceIndex = deviceIndex
        self.type = type
    }

    /// The route's identity in the kernel (table main, tos 0): destination and metric.
    public var key: RouteKey { RouteKey(dst: dst, priority: priority) }
}

public struct RouteKey: Hashable, Sendable, Comparable {
    public var dst: IPv4Prefix
    public var priority: UInt32

    public static func < (a: RouteKey, b: RouteKey) -> Bool { (a.dst, a.priority) < (b.dst, b.priority) }
}

/// One entry the agent keeps on (or for) its device.
public enum Entry: Hashable, Sendable {
    case address(IPv4Prefix)
    case fdb(FDBEntry)
    case neighbor(Neighbor)
    case nexthop(Nexthop)
    case route(Route)

    /// The kind in iproute2's words: `fdb`, `neigh`, `nexthop`, `route`, `address`.
    public var kind: String {
        switch self {
        case .address: "address"
        case .fdb: "fdb"
        case .neighbor: "neigh"
        case .nexthop: "nexthop"
        case .route: "route"
        }
    }
}

/// One change to the kernel. `add` and `replace` are both written with replace
/// semantics (`NLM_F_CREATE|NLM_F_REPLACE`): an existing entry is never deleted and re-added.
///
/// The rare, large cases are `indirect` so a plan of 200,000 changes stores
/// each inline in the size of one entry.
public enum Change: Hashable, Sendable {
    indirect case createDevice(VXLANDevice)
    /// Delete and create: a property fixed at creation differs.
    indirect case recreateDevice(from: LinkState, to: VXLANDevice)
    /// MTU, MAC or link state differ; changed in place.
    indirect case updateDevice(from: LinkState, to: VXLANDevice)
    indirect case deleteDevice(LinkState)
    case add(Entry)
    indirect case replace(from: Entry, to: Entry)
    case remove(Entry)
}

/// What the kernel holds of what the agent owns: its device, the device's
/// addresses, FDB and neighbor entries, the nexthops of its protocol, and the
/// main-table routes of its protocol or on its device.
public struct KernelSnapshot: Sendable, Hashable {
    public var device: LinkState?
    public var addresses: [IPv4Prefix]
    public var fdb: [FDBEntry]
    public var neighbors: [Neighbor]
    public var nexthops: [Nexthop]
    public var routes: [Route]
    /// Main-table routes of other protocols on other devices: never touched, but
    /// a peer whose subnet collides with one is skipped.
    public var foreignRoutes: [Route] = []

    public init(device: LinkState? = nil, addresses: [IPv4Prefix] = [], fdb: [FDBEntry] = [],
                neighbors: [Neighbor] = [], nexthops: [Nexthop] = [], routes: [Route] = []) {
        self.device = device
        self.addresses = addresses
        self.fdb = fdb
        self.neighbors = neighbors
        self.nexthops = nexthops
        self.routes = routes
    }

    public static let empty = KernelSnapshot()
}

/// How routes to peers are written.
public enum RouteLayout: String, Sendable, Hashable, Codable, CaseIterable {
    /// `nexthop add id N via GW dev flannel.1 onlink` + `route add DST nhid N`: linear in the kernel.
    case nexthop
    /// `route add DST via GW dev flannel.1 onlink`: flannel's layout, superlinear past a few thousand peers.
    case classic
}
