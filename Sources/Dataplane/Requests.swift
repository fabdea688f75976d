import CLibMnl
import Model
import Netlink

#if canImport(Glibc)
import Glibc
#endif

/// Builds the netlink request for each kernel object. Pure: the bytes land in a
/// `Batch`, so they can be compared with what iproute2 sends for the same object.
public enum Requests {
    public enum Operation: Sendable {
        /// `NLM_F_CREATE|NLM_F_REPLACE`: create, or overwrite in place.
        case replace
        case delete
    }

    static let createReplace = UInt16(NLM_F_CREATE | NLM_F_REPLACE)

    // Each object has a public entry point per family (the IPv4 one is what the
    // agent always had) over one generic builder: the builders specialize inside
    // this module, and callers in other modules never call unspecialized code.

    /// `bridge fdb replace MAC dev DEV dst IP self permanent`
    @discardableResult
    public static func fdb(_ entry: FDBEntry, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        fdbOf(entry, device: device, operation, into: batch)
    }

    /// `bridge fdb replace MAC dev DEV dst IPV6 self permanent` (the IPv6 device's remotes: NDA_DST of 16 bytes)
    @discardableResult
    public static func fdb(_ entry: FDBEntry6, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        fdbOf(entry, device: device, operation, into: batch)
    }

    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`
    @discardableResult
    public static func neighbor(_ entry: Neighbor, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        neighborOf(entry, device: device, operation, into: batch)
    }

    /// `ip -6 neigh replace IP lladdr MAC dev DEV nud permanent`
    @discardableResult
    public static func neighbor(_ entry: Neighbor6, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        neighborOf(entry, device: device, operation, into: batch)
    }

    /// `ip nexthop replace id N via GW dev DEV onlink proto P`
    @discardableResult
    public static func nexthop(_ entry: Nexthop, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        nexthopOf(entry, device: device, operation, into: batch)
    }

    /// `ip -6 nexthop replace id N via GW dev DEV onlink proto P`; deleted by id alone (`ip nexthop del id N`).
    @discardableResult
    public static func nexthop(_ entry: Nexthop6, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        nexthopOf(entry, device: device, operation, into: batch)
    }

    /// `ip route replace DST nhid N proto P` or `ip route replace DST via GW dev DEV onlink proto P`;
    /// on delete, the route is named by destination, metric and protocol.
    @discardableResult
    public static func route(_ entry: Route, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        routeOf(entry, device: device, operation, into: batch)
    }

    /// `ip -6 route replace DST metric M nhid N proto P` or `... via GW dev DEV onlink proto P`.
    ///
    /// The kernel stores an IPv6 route written with metric 0 at metric 1024
    /// (IP6_RT_PRIO_USER), and a route is known by (destination, metric): the
    /// agent's IPv6 routes say `priority: 1024` themselves, so what is written,
    /// what is dumped and what is deleted name the same route.
    @discardableResult
    public static func route(_ entry: Route6, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        routeOf(entry, device: device, operation, into: batch)
    }

    /// `ip address replace PREFIX dev DEV`
    @discardableResult
    public static func address(_ prefix: IPv4Prefix, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        addressOf(prefix, device: device, operation, into: batch)
    }

    /// `ip -6 address replace PREFIX dev DEV`: no flags, as flanneld writes it
    /// (`EnsureV6AddressOnLink`: no `nodad`; the /128 goes through DAD like any address).
    @discardableResult
    public static func address(_ prefix: IPv6Prefix, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        addressOf(prefix, device: device, operation, into: batch)
    }

    @discardableResult
    static func fdbOf<A: IPFamilyAddress>(_ entry: FDBEntryOf<A>, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        batch.append(type: operation == .replace ? UInt16(RTM_NEWNEIGH) : UInt16(RTM_DELNEIGH),
                     flags: operation == .replace ? createReplace : 0) { m in
            m.familyHeader(ndmsg.self) {
                $0.ndm_family = UInt8(AF_BRIDGE)
                $0.ndm_ifindex = device
                // As `bridge fdb ... permanent` sends it: NOARP (its default) | PERMANENT.
                $0.ndm_state = UInt16(NUD_NOARP | NUD_PERMANENT)
                $0.ndm_flags = UInt8(NTF_SELF)
            }
            m.put(UInt16(NDA_LLADDR), bytes: entry.mac.bytes)
            entry.dst.withNetworkBytes { m.put(UInt16(NDA_DST), raw: $0) }
            // The kernel finds a remote by all of these; a delete without them
            // matches nothing and still answers 0. (A replace without them resets
            // them to the device's defaults, which is what the agent wants.)
            if let port = entry.port { m.put(UInt16(NDA_PORT), be16: port) }
            if let vni = entry.vni { m.put(UInt16(NDA_VNI), u32: vni) }
            if let via = entry.via { m.put(UInt16(NDA_IFINDEX), u32: UInt32(bitPattern: via)) }
        }
    }

    @discardableResult
    static func neighborOf<A: IPFamilyAddress>(_ entry: NeighborOf<A>, device: Int32, _ operation: Operation,
                                               into batch: Batch) -> Int {
        batch.append(type: operation == .replace ? UInt16(RTM_NEWNEIGH) : UInt16(RTM_DELNEIGH),
                     flags: operation == .replace ? createReplace : 0) { m in
            m.familyHeader(ndmsg.self) {
                $0.ndm_family = A.family
                $0.ndm_ifindex = device
                $0.ndm_state = UInt16(NUD_PERMANENT)
            }
            entry.ip.withNetworkBytes { m.put(UInt16(NDA_DST), raw: $0) }
            if operation == .replace { m.put(UInt16(NDA_LLADDR), bytes: entry.mac.bytes) }
        }
    }

    @discardableResult
    static func nexthopOf<A: IPFamilyAddress>(_ entry: NexthopOf<A>, device: Int32, _ operation: Operation,
                                              into batch: Batch) -> Int {
        batch.append(type: operation == .replace ? UInt16(RTM_NEWNEXTHOP) : UInt16(RTM_DELNEXTHOP),
                     flags: operation == .replace ? createReplace : 0) { m in
            m.familyHeader(nhmsg.self) {
                if operation == .replace {
                    $0.nh_family = A.family
                    $0.nh_protocol = entry.proto
                    $0.nh_flags = entry.onlink ? UInt32(RTNH_F_ONLINK) : 0
                }
            }
            m.put(UInt16(NHA_ID), u32: entry.id)
            if operation == .replace {
                if let gateway = entry.gateway { gateway.withNetworkBytes { m.put(UInt16(NHA_GATEWAY), raw: $0) } }
                m.put(UInt16(NHA_OIF), u32: UInt32(bitPattern: device))
            }
        }
    }

    @discardableResult
    static func routeOf<A: IPFamilyAddress>(_ entry: RouteOf<A>, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        batch.append(type: operation == .replace ? UInt16(RTM_NEWROUTE) : UInt16(RTM_DELROUTE),
                     flags: operation == .replace ? createReplace : 0) { m in
            m.familyHeader(rtmsg.self) {
                $0.rtm_family = A.family
                $0.rtm_dst_len = entry.dst.length
                $0.rtm_table = UInt8(RT_TABLE_MAIN.rawValue)
                $0.rtm_protocol = entry.proto
                if operation == .replace {
                    $0.rtm_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
                    $0.rtm_type = entry.type
                    if entry.nexthopID == nil && entry.onlink { $0.rtm_flags = UInt32(RTNH_F_ONLINK) }
                } else if A.family == UInt8(AF_INET) {
                    $0.rtm_scope = UInt8(RT_SCOPE_NOWHERE.rawValue)
                }
                // An IPv6 delete says scope universe, as `ip -6 route del` does
                // (the kernel reads no scope for IPv6).
            }
            entry.dst.address.withNetworkBytes { m.put(UInt16(RTA_DST.rawValue), raw: $0) }
            if entry.priority != 0 { m.put(UInt16(RTA_PRIORITY.rawValue), u32: entry.priority) }
            if operation == .replace {
                if let id = entry.nexthopID {
                    m.put(UInt16(RTA_NH_ID.rawValue), u32: id)
                } else {
                    if let gateway = entry.gateway { gateway.withNetworkBytes { m.put(UInt16(RTA_GATEWAY.rawValue), raw: $0) } }
                    m.put(UInt16(RTA_OIF.rawValue), u32: UInt32(bitPattern: device))
                }
            }
        }
    }

    @discardableResult
    static func addressOf<P: IPFamilyPrefix>(_ prefix: P, device: Int32, _ operation: Operation, into batch: Batch) -> Int {
        batch.append(type: operation == .replace ? UInt16(RTM_NEWADDR) : UInt16(RTM_DELADDR),
                     flags: operation == .replace ? createReplace : 0) { m in
            m.familyHeader(ifaddrmsg.self) {
                $0.ifa_family = P.Address.family
                $0.ifa_prefixlen = prefix.length
                $0.ifa_index = UInt32(bitPattern: device)
            }
            prefix.address.withNetworkBytes { bytes in
                m.put(UInt16(IFA_LOCAL), raw: bytes)
                m.put(UInt16(IFA_ADDRESS), raw: bytes)
            }
        }
    }

    /// `ip link add NAME mtu M address MAC type vxlan id VNI local IP dev UNDERLAY dstport PORT nolearning`;
    /// the IPv6 device (`localIPv6` set) says `local IPV6` (IFLA_VXLAN_LOCAL6) in the same place.
    @discardableResult
    public static func createVXLAN(_ device: VXLANDevice, into batch: Batch) -> Int {
        batch.append(type: UInt16(RTM_NEWLINK), flags: UInt16(NLM_F_CREATE | NLM_F_EXCL)) { m in
            m.familyHeader(ifinfomsg.self) { $0.ifi_family = UInt8(AF_UNSPEC) }
            // Attribute order as iproute2 sends it, so golden bytes compare exactly.
            m.put(UInt16(IFLA_MTU), u32: device.mtu)
            m.put(UInt16(IFLA_ADDRESS), bytes: device.mac.bytes)
            m.put(UInt16(IFLA_IFNAME), string: device.name)
            m.nest(UInt16(IFLA_LINKINFO)) {
                m.put(UInt16(IFLA_INFO_KIND), bytes: Array("vxlan".utf8))  // no NUL, as iproute2
                m.nest(UInt16(IFLA_INFO_DATA)) {
                    m.put(UInt16(IFLA_VXLAN_LINK), u32: UInt32(bitPattern: device.underlayIndex))
                    m.put(UInt16(IFLA_VXLAN_ID), u32: device.vni)
                    if let local6 = device.localIPv6 {
                        local6.withNetworkBytes { m.put(UInt16(IFLA_VXLAN_LOCAL6), raw: $0) }
                    } else {
                        m.put(UInt16(IFLA_VXLAN_LOCAL), bytes: device.localIP.octets)
                    }
                    m.put(UInt16(IFLA_VXLAN_LEARNING), u8: device.learning ? 1 : 0)
                    m.put(UInt16(IFLA_VXLAN_PORT), be16: device.port)
                }
            }
        }
    }

    /// `ip link set DEV [mtu M] [address MAC] up`
    @discardableResult
    public static func updateLink(index: Int32, mtu: UInt32?, mac: MACAddress?, up: Bool, into batch: Batch) -> Int {
        batch.append(type: UInt16(RTM_NEWLINK), flags: 0) { m in
            m.familyHeader(ifinfomsg.self) {
                $0.ifi_family = UInt8(AF_UNSPEC)
                $0.ifi_index = index
                if up {
                    $0.ifi_change = UInt32(IFF_UP)
                    $0.ifi_flags = UInt32(IFF_UP)
                }
            }
            if let mtu { m.put(UInt16(IFLA_MTU), u32: mtu) }
            if let mac { m.put(UInt16(IFLA_ADDRESS), bytes: mac.bytes) }
        }
    }

    /// `ip link del DEV`
    @discardableResult
    public static func deleteLink(index: Int32, into batch: Batch) -> Int {
        batch.append(type: UInt16(RTM_DELLINK), flags: 0) { m in
            m.familyHeader(ifinfomsg.self) {
                $0.ifi_family = UInt8(AF_UNSPEC)
                $0.ifi_index = index
            }
        }
    }
}
