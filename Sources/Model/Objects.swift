/// The VXLAN device (VTEP) as the agent wants it, or as the kernel has it.
public struct VXLANDevice: Hashable, Sendable {
    public var name: String
    public var vni: UInt32
    public var localIP: IPv4Address
    /// The IPv6 device's local address (`IFLA_VXLAN_LOCAL6`); `localIP` is then 0.0.0.0.
    public var localIPv6: IPv6Address?
    /// The interface index of the underlay device (the one holding `localIP`).
    public var underlayIndex: Int32
    /// The underlay's name, for messages only.
    public var underlayName: String
    public var port: UInt16
    public var learning: Bool
    public var mtu: UInt32
    public var mac: MACAddress
    /// Every other attribute of the device. The agent wants the kernel's
    /// defaults (which is also what flanneld leaves); the kernel reports each.
    public var options: VXLANOptions

    public init(name: String, vni: UInt32, localIP: IPv4Address, underlayIndex: Int32, underlayName: String,
                port: UInt16 = 8472, learning: Bool = false, mtu: UInt32, mac: MACAddress,
                options: VXLANOptions = .defaults, localIPv6: IPv6Address? = nil) {
        self.name = name
        self.vni = vni
        self.localIP = localIP
        self.localIPv6 = localIPv6
        self.underlayIndex = underlayIndex
        self.underlayName = underlayName
        self.port = port
        self.learning = learning
        self.mtu = mtu
        self.mac = mac
        self.options = options
    }

    /// Everything but MTU and MAC: if any differs, the device is recreated (the
    /// kernel refuses to change several of these in place, and a recreate is
    /// the one path that is the same for all of them).
    public func sameIdentity(as other: VXLANDevice) -> Bool {
        vni == other.vni && localIP == other.localIP && localIPv6 == other.localIPv6 && underlayIndex == other.underlayIndex
            && port == other.port && learning == other.learning && options.differences(from: other.options).isEmpty
    }

    /// What differs in identity, in words (`vni 2 -> 1, port 4789 -> 8472`).
    public func identityDifferences(from old: VXLANDevice) -> String {
        var parts: [String] = []
        if vni != old.vni { parts.append("vni \(old.vni) -> \(vni)") }
        if localIP != old.localIP || localIPv6 != old.localIPv6 {
            parts.append("local \(old.localIPv6.map(String.init(describing:)) ?? "\(old.localIP)") -> "
                         + "\(localIPv6.map(String.init(describing:)) ?? "\(localIP)")")
        }
        if underlayIndex != old.underlayIndex { parts.append("dev \(old.underlayName) -> \(underlayName)") }
        if port != old.port { parts.append("dstport \(old.port) -> \(port)") }
        if learning != old.learning { parts.append(learning ? "nolearning -> learning" : "learning -> nolearning") }
        parts += options.differences(from: old.options)
        return parts.joined(separator: ", ")
    }
}

/// The VXLAN attributes the agent does not choose, in iproute2's words. A field
/// is nil when the kernel did not report it (an older kernel): then it is not
/// compared. The desired device has every field set to the kernel's default.
public struct VXLANOptions: Hashable, Sendable {
    /// `remote`/`group`: a default destination makes the device flood unknown
    /// and broadcast traffic there (the all-zero FDB entry). The agent wants none.
    public var remote: String?
    /// 0: `ttl auto` (the kernel's default). `ttl 1` breaks a routed underlay.
    public var ttl: UInt8?
    public var ttlInherit: Bool?
    public var tos: UInt8?
    /// 0 unset, 1 set, 2 inherit.
    public var df: UInt8?
    public var label: UInt32?
    /// `srcport LOW HIGH`; 0 0 is the kernel's default range.
    public var sourcePorts: ClosedRange<UInt16>?
    public var udpChecksum: Bool?
    public var proxy: Bool?
    public var rsc: Bool?
    public var l2miss: Bool?
    public var l3miss: Bool?
    /// FDB ageing in seconds (300 by default).
    public var ageing: UInt32?
    /// `maxaddress`: 0 is unlimited; a limit makes FDB adds fail.
    public var limit: UInt32?
    public var collectMetadata: Bool?
    public var remoteChecksumTX: Bool?
    public var remoteChecksumRX: Bool?
    public var zeroChecksum6TX: Bool?
    public var zeroChecksum6RX: Bool?
    /// Flag attributes: absent means off, so they are always known.
    public var gbp: Bool
    public var gpe: Bool
    public var remoteChecksumNoPartial: Bool

    public init(remote: String? = nil, ttl: UInt8? = nil, ttlInherit: Bool? = nil, tos: UInt8? = nil, df: UInt8? = nil,
                label: UInt32? = nil, sourcePorts: ClosedRange<UInt16>? = nil, udpChecksum: Bool? = nil, proxy: Bool? = nil,
                rsc: Bool? = nil, l2miss: Bool? = nil, l3miss: Bool? = nil, ageing: UInt32? = nil, limit: UInt32? = nil,
                collectMetadata: Bool? = nil, remoteChecksumTX: Bool? = nil, remoteChecksumRX: Bool? = nil,
                zeroChecksum6TX: Bool? = nil, zeroChecksum6RX: Bool? = nil,
                gbp: Bool = false, gpe: Bool = false, remoteChecksumNoPartial: Bool = false) {
        self.remote = remote
        self.ttl = ttl
        self.ttlInherit = ttlInherit
        self.tos = tos
        self.df = df
        self.label = label
        self.sourcePorts = sourcePorts
        self.udpChecksum = udpChecksum
        self.proxy = proxy
        self.rsc = rsc
        self.l2miss = l2miss
        self.l3miss = l3miss
        self.ageing = ageing
        self.limit = limit
        self.collectMetadata = collectMetadata
        self.remoteChecksumTX = remoteChecksumTX
        self.remoteChecksumRX = remoteChecksumRX
        self.zeroChecksum6TX = zeroChecksum6TX
        self.zeroChecksum6RX = zeroChecksum6RX
        self.gbp = gbp
        self.gpe = gpe
        self.remoteChecksumNoPartial = remoteChecksumNoPartial
    }

    /// What a device created with the agent's request reports (Linux 6.x; the
    /// same as flanneld's device): no remote, ttl auto, tos 0, df unset, no
    /// label, srcport 0 0, udpcsum, ageing 300, no limit, every mode off.
    public static let defaults = VXLANOptions(
        remote: nil, ttl: 0, ttlInherit: false, tos: 0, df: 0, label: 0, sourcePorts: 0...0, udpChecksum: true,
        proxy: false, rsc: false, l2miss: false, l3miss: false, ageing: 300, limit: 0, collectMetadata: false,
        remoteChecksumTX: false, remoteChecksumRX: false, zeroChecksum6TX: false, zeroChecksum6RX: false)

    /// The attributes of `old` (the kernel's) that differ from these (the
    /// desired), in iproute2's words: `ttl 1 -> auto`. Attributes the kernel
    /// did not report are not compared; `remote` always is (absent = none).
    public func differences(from old: VXLANOptions) -> [String] {
        var parts: [String] = []
        func check<T: Equatable>(_ name: String, _ mine: T?, _ theirs: T?, _ show: (T) -> String) {
            guard let mine, let theirs, mine != theirs else { return }
            parts.append("\(name) \(show(theirs)) -> \(show(mine))")
        }
        func flag(_ on: String, _ off: String, _ mine: Bool?, _ theirs: Bool?) {
            guard let mine, let theirs, mine != theirs else { return }
            parts.append("\(theirs ? on : off) -> \(mine ? on : off)")
        }
        if remote != old.remote { parts.append("remote \(old.remote ?? "none") -> \(remote ?? "none")") }
        check("ttl", ttl, old.ttl) { $0 == 0 ? "auto" : "\($0)" }
        flag("ttl inherit", "ttl fixed", ttlInherit, old.ttlInherit)
        check("tos", tos, old.tos) { $0 == 1 ? "inherit" : $0 == 0 ? "0" : "0x" + String($0, radix: 16) }
        check("df", df, old.df) { ["unset", "set", "inherit"][safe: Int($0)] ?? "\($0)" }
        check("flowlabel", label, old.label) { "\($0)" }
        check("srcport", sourcePorts, old.sourcePorts) { "\($0.lowerBound) \($0.upperBound)" }
        flag("udpcsum", "noudpcsum", udpChecksum, old.udpChecksum)
        flag("proxy", "noproxy", proxy, old.proxy)
        flag("rsc", "norsc", rsc, old.rsc)
        flag("l2miss", "nol2miss", l2miss, old.l2miss)
        flag("l3miss", "nol3miss", l3miss, old.l3miss)
        check("ageing", ageing, old.ageing) { "\($0)" }
        check("maxaddress", limit, old.limit) { $0 == 0 ? "unlimited" : "\($0)" }
        flag("external", "noexternal", collectMetadata, old.collectMetadata)
        flag("remcsumtx", "noremcsumtx", remoteChecksumTX, old.remoteChecksumTX)
        flag("remcsumrx", "noremcsumrx", remoteChecksumRX, old.remoteChecksumRX)
        flag("udp6zerocsumtx", "noudp6zerocsumtx", zeroChecksum6TX, old.zeroChecksum6TX)
        flag("udp6zerocsumrx", "noudp6zerocsumrx", zeroChecksum6RX, old.zeroChecksum6RX)
        flag("gbp", "nogbp", gbp, old.gbp)
        flag("gpe", "nogpe", gpe, old.gpe)
        flag("remcsum_nopartial", "remcsum_partial", remoteChecksumNoPartial, old.remoteChecksumNoPartial)
        return parts
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}

/// The udp backend's TUN device (`flannel0`) as the agent wants it, or as the
/// kernel has it: a layer-3 device whose packets a user-space process reads.
/// The agent makes it persistent with the flags its data path's queues attach
/// with (a queue with other flags is refused), so `sync` can keep the device
/// and its route while `run` moves the packets.
public struct TUNDevice: Hashable, Sendable {
    public var name: String
    public var mtu: UInt32
    /// `IFF_TUN` (layer 3), not `IFF_TAP`.
    public var layer3: Bool
    /// `IFF_NO_PI` off: a 4-byte packet-information header before each packet.
    public var packetInfo: Bool
    /// `IFF_VNET_HDR`: a virtio header before each packet (segmentation offload).
    public var vnetHeader: Bool
    /// `IFF_MULTI_QUEUE`: one queue per data-path thread pair.
    public var multiQueue: Bool
    public var persistent: Bool

    public init(name: String, mtu: UInt32, layer3: Bool = true, packetInfo: Bool = false, vnetHeader: Bool = true,
                multiQueue: Bool = true, persistent: Bool = true) {
        self.name = name
        self.mtu = mtu
        self.layer3 = layer3
        self.packetInfo = packetInfo
        self.vnetHeader = vnetHeader
        self.multiQueue = multiQueue
        self.persistent = persistent
    }

    /// Everything but MTU: if any differs, the device is made again.
    public func sameIdentity(as other: TUNDevice) -> Bool {
        layer3 == other.layer3 && packetInfo == other.packetInfo && vnetHeader == other.vnetHeader
            && multiQueue == other.multiQueue && persistent == other.persistent
    }

    /// What differs in identity, in words (`tap -> tun, no vnet_hdr -> vnet_hdr`).
    public func identityDifferences(from old: TUNDevice) -> String {
        var parts: [String] = []
        if layer3 != old.layer3 { parts.append(old.layer3 ? "tun -> tap" : "tap -> tun") }
        if packetInfo != old.packetInfo { parts.append(old.packetInfo ? "pi -> no pi" : "no pi -> pi") }
        if vnetHeader != old.vnetHeader { parts.append(old.vnetHeader ? "vnet_hdr -> no vnet_hdr" : "no vnet_hdr -> vnet_hdr") }
        if multiQueue != old.multiQueue { parts.append(old.multiQueue ? "multi_queue -> single queue" : "single queue -> multi_queue") }
        if persistent != old.persistent { parts.append(old.persistent ? "persist -> not persistent" : "not persistent -> persist") }
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
    /// Present when `kind == "tun"` (and the kernel reports its flags).
    public var tun: TUNDevice?
    /// `IFF_LOOPBACK`: never an underlay.
    public var isLoopback: Bool

    public init(index: Int32, name: String, kind: String?, mtu: UInt32, mac: MACAddress?, isUp: Bool, vxlan: VXLANDevice?,
                isLoopback: Bool = false, tun: TUNDevice? = nil) {
        self.index = index
        self.name = name
        self.kind = kind
        self.mtu = mtu
        self.mac = mac
        self.isUp = isUp
        self.vxlan = vxlan
        self.isLoopback = isLoopback
        self.tun = tun
    }
}

/// A permanent ARP (IPv6: NDP) entry on the VXLAN device: the peer's VTEP address -> its VTEP MAC.
public struct NeighborOf<A: IPFamilyAddress>: Hashable, Sendable {
    public var ip: A
    public var mac: MACAddress
    public var permanent: Bool

    @inlinable
    public init(ip: A, mac: MACAddress, permanent: Bool = true) {
        self.ip = ip
        self.mac = mac
        self.permanent = permanent
    }
}

/// A forwarding entry on the VXLAN device: the peer's VTEP MAC -> its public IP.
///
/// The kernel keys a remote by (MAC, dst, port, VNI, via): all five are part of
/// the identity. `port`, `vni` and `via` are nil when the kernel reports none,
/// which means the device's own port and VNI and no pinned interface; that is
/// what the agent writes, so an entry that carries any of them is wrong.
///
/// The family is the underlay's: an IPv6 device's remotes are IPv6 addresses.
public struct FDBEntryOf<A: IPFamilyAddress>: Hashable, Sendable {
    public var mac: MACAddress
    public var dst: A
    public var permanent: Bool
    /// `NDA_PORT`: a UDP port other than the device's.
    public var port: UInt16?
    /// `NDA_VNI`: a VNI other than the device's.
    public var vni: UInt32?
    /// `NDA_IFINDEX` (`via DEV`): the interface the encapsulated packet must leave by.
    public var via: Int32?

    @inlinable
    public init(mac: MACAddress, dst: A, permanent: Bool = true,
                port: UInt16? = nil, vni: UInt32? = nil, via: Int32? = nil) {
        self.mac = mac
        self.dst = dst
        self.permanent = permanent
        self.port = port
        self.vni = vni
        self.via = via
    }
}

/// A nexthop object: `id N via GW dev flannel.1 onlink proto P`.
public struct NexthopOf<A: IPFamilyAddress>: Hashable, Sendable {
    public var id: UInt32
    public var gateway: A?
    public var onlink: Bool
    public var proto: UInt8
    /// The output interface; nil for groups and blackholes.
    public var deviceIndex: Int32?
    /// The member ids of a nexthop group (`group 1/2`); nil for a single nexthop.
    public var group: [UInt32]?

    @inlinable
    public init(id: UInt32, gateway: A?, onlink: Bool = true, proto: UInt8, deviceIndex: Int32? = nil,
                group: [UInt32]? = nil) {
        self.id = id
        self.gateway = gateway
        self.onlink = onlink
        self.proto = proto
        self.deviceIndex = deviceIndex
        self.group = group
    }
}

/// A route in the main table.
public struct RouteOf<A: IPFamilyAddress>: Hashable, Sendable {
    public var dst: A.Prefix
    public var gateway: A?
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

    @inlinable
    public init(dst: A.Prefix, gateway: A?, nexthopID: UInt32? = nil, onlink: Bool = true,
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
    @inlinable
    public var key: RouteKeyOf<A> { RouteKeyOf(dst: dst, priority: priority) }
}

public struct RouteKeyOf<A: IPFamilyAddress>: Hashable, Sendable, Comparable {
    public var dst: A.Prefix
    public var priority: UInt32

    @inlinable
    public init(dst: A.Prefix, priority: UInt32) {
        self.dst = dst
        self.priority = priority
    }

    @inlinable
    public static func < (a: RouteKeyOf, b: RouteKeyOf) -> Bool { (a.dst, a.priority) < (b.dst, b.priority) }

    /// See `mixedHash`: the diff keys every route by this.
    @inlinable
    public func _rawHashValue(seed: Int) -> Int {
        mixedHash(dst.hashBits ^ UInt64(priority) &* 0x9e37_79b9_7f4a_7c15, seed: seed)
    }
}

/// One entry the agent keeps on (or for) its device.
public enum EntryOf<A: IPFamilyAddress>: Hashable, Sendable {
    case address(A.Prefix)
    case fdb(FDBEntryOf<A>)
    case neighbor(NeighborOf<A>)
    case nexthop(NexthopOf<A>)
    case route(RouteOf<A>)

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
public enum ChangeOf<A: IPFamilyAddress>: Hashable, Sendable {
    /// The udp backend's TUN device: made persistent with its queues' flags, its MTU set, up.
    indirect case createTUN(TUNDevice)
    /// Its MTU, or its link state, differ; changed in place.
    indirect case updateTUN(from: LinkState, to: TUNDevice)
    indirect case createDevice(VXLANDevice)
    /// Delete and create: a property fixed at creation differs.
    indirect case recreateDevice(from: LinkState, to: VXLANDevice)
    /// MTU, MAC or link state differ; changed in place.
    indirect case updateDevice(from: LinkState, to: VXLANDevice)
    indirect case deleteDevice(LinkState)
    case add(EntryOf<A>)
    indirect case replace(from: EntryOf<A>, to: EntryOf<A>)
    case remove(EntryOf<A>)
}

extension ChangeOf {
    /// The entry an entry change acts on (the new one for replace).
    /// Inlinable: callers in other modules (`Dataplane`'s phases, per change)
    /// got an unspecialized call, generic metadata and a witness copy each time.
    @inlinable
    public var target: EntryOf<A>? {
        switch self {
        case .add(let entry), .replace(_, let entry), .remove(let entry): entry
        default: nil
        }
    }
}

/// What the kernel holds of what the agent owns: its device, the device's
/// addresses, FDB and neighbor entries, the nexthops of its protocol, and the
/// main-table routes of its protocol or on its device.
public struct KernelSnapshotOf<A: IPFamilyAddress>: Sendable, Hashable {
    public var device: LinkState?
    public var addresses: [A.Prefix]
    public var fdb: [FDBEntryOf<A>]
    public var neighbors: [NeighborOf<A>]
    public var nexthops: [NexthopOf<A>]
    public var routes: [RouteOf<A>]
    /// Main-table routes of other protocols on other devices: never touched, but
    /// a peer whose subnet collides with one is skipped.
    public var foreignRoutes: [RouteOf<A>] = []
    /// Devices of the agent's other backends, of their kind (`flannel0` of kind
    /// tun when the agent runs vxlan or host-gw; `flannel.<VNI>` of kind vxlan
    /// when it runs udp): left by a node that switched backends, and removed.
    public var leftovers: [LinkState] = []
    /// Our nexthop ids that something else uses (a route in another table or of
    /// another protocol, a foreign nexthop group), with the first such user in
    /// iproute2's words. Deleting such a nexthop would make the kernel delete that
    /// route or shrink that group: the agent keeps it.
    public var nexthopUsers: [UInt32: String] = [:]

    public init(device: LinkState? = nil, addresses: [A.Prefix] = [], fdb: [FDBEntryOf<A>] = [],
                neighbors: [NeighborOf<A>] = [], nexthops: [NexthopOf<A>] = [], routes: [RouteOf<A>] = []) {
        self.device = device
        self.addresses = addresses
        self.fdb = fdb
        self.neighbors = neighbors
        self.nexthops = nexthops
        self.routes = routes
    }

    public static var empty: KernelSnapshotOf { KernelSnapshotOf() }
}

// The IPv4 instances keep the names the agent had before dual stack; the
// IPv6 ones carry a 6.
public typealias Neighbor = NeighborOf<IPv4Address>
public typealias FDBEntry = FDBEntryOf<IPv4Address>
public typealias Nexthop = NexthopOf<IPv4Address>
public typealias Route = RouteOf<IPv4Address>
public typealias RouteKey = RouteKeyOf<IPv4Address>
public typealias Entry = EntryOf<IPv4Address>
public typealias Change = ChangeOf<IPv4Address>
public typealias KernelSnapshot = KernelSnapshotOf<IPv4Address>
public typealias Neighbor6 = NeighborOf<IPv6Address>
public typealias FDBEntry6 = FDBEntryOf<IPv6Address>
public typealias Nexthop6 = NexthopOf<IPv6Address>
public typealias Route6 = RouteOf<IPv6Address>
public typealias RouteKey6 = RouteKeyOf<IPv6Address>
public typealias Entry6 = EntryOf<IPv6Address>
public typealias Change6 = ChangeOf<IPv6Address>
public typealias KernelSnapshot6 = KernelSnapshotOf<IPv6Address>

/// How routes to peers are written.
public enum RouteLayout: String, Sendable, Hashable, Codable, CaseIterable {
    /// `nexthop add id N via GW dev flannel.1 onlink` + `route add DST nhid N`: linear in the kernel.
    case nexthop
    /// `route add DST via GW dev flannel.1 onlink`: flannel's layout, superlinear past a few thousand peers.
    case classic
}
