import CLibMnl
import Model
import Netlink

#if canImport(Glibc)
import Glibc
#endif

/// Turns kernel replies into typed objects. Pure functions of one message, so
/// recorded replies can be parsed in tests without a kernel.
public enum Parse {
    static let iflaMax = UInt16(__IFLA_MAX) - 1
    static let infoMax = UInt16(__IFLA_INFO_MAX) - 1
    static let vxlanMax = UInt16(__IFLA_VXLAN_MAX) - 1
    static let tunMax = UInt16(__IFLA_TUN_MAX) - 1
    static let ndaMax = UInt16(__NDA_MAX) - 1
    static let rtaMax = UInt16(__RTA_MAX.rawValue) - 1
    static let nhaMax = UInt16(__NHA_MAX) - 1
    static let ifaMax = UInt16(__IFA_MAX) - 1

    /// An `RTM_NEWLINK` message.
    public static func link(_ message: Message) -> LinkState? {
        guard message.type == UInt16(RTM_NEWLINK), let info = message.familyHeader(ifinfomsg.self) else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<ifinfomsg>.size, maxType: iflaMax) { a -> LinkState? in
            guard let name = a[UInt16(IFLA_IFNAME)]?.string else { return nil }
            var link = LinkState(index: info.ifi_index, name: name, kind: nil, mtu: a[UInt16(IFLA_MTU)]?.u32 ?? 0,
                                 mac: a[UInt16(IFLA_ADDRESS)]?.mac.flatMap { MACAddress(bytes: $0) },
                                 isUp: info.ifi_flags & UInt32(IFF_UP) != 0, vxlan: nil,
                                 isLoopback: info.ifi_flags & UInt32(IFF_LOOPBACK) != 0)
            _ = a[UInt16(IFLA_LINKINFO)]?.withNested(maxType: infoMax) { i in
                link.kind = i[UInt16(IFLA_INFO_KIND)]?.string
                if link.kind == "tun", let data = i[UInt16(IFLA_INFO_DATA)] {
                    _ = data.withNested(maxType: tunMax) { t in
                        guard let type = t[UInt16(IFLA_TUN_TYPE)]?.u8 else { return }
                        link.tun = TUNDevice(name: name, mtu: link.mtu, layer3: type == 1 /* IFF_TUN */,
                                             packetInfo: (t[UInt16(IFLA_TUN_PI)]?.u8 ?? 0) != 0,
                                             vnetHeader: (t[UInt16(IFLA_TUN_VNET_HDR)]?.u8 ?? 0) != 0,
                                             multiQueue: (t[UInt16(IFLA_TUN_MULTI_QUEUE)]?.u8 ?? 0) != 0,
                                             persistent: (t[UInt16(IFLA_TUN_PERSIST)]?.u8 ?? 0) != 0)
                    }
                    return
                }
                guard link.kind == "vxlan", let data = i[UInt16(IFLA_INFO_DATA)] else { return }
                _ = data.withNested(maxType: vxlanMax) { v in
                    link.vxlan = VXLANDevice(
                        name: name,
                        vni: v[UInt16(IFLA_VXLAN_ID)]?.u32 ?? 0,
                        localIP: IPv4Address(v[UInt16(IFLA_VXLAN_LOCAL)]?.ipv4 ?? 0),
                        underlayIndex: Int32(bitPattern: v[UInt16(IFLA_VXLAN_LINK)]?.u32 ?? 0),
                        underlayName: "",
                        port: v[UInt16(IFLA_VXLAN_PORT)]?.be16 ?? 0,
                        learning: (v[UInt16(IFLA_VXLAN_LEARNING)]?.u8 ?? 0) != 0,
                        mtu: link.mtu,
                        mac: link.mac ?? MACAddress(value: 0),
                        options: vxlanOptions(v),
                        localIPv6: v[UInt16(IFLA_VXLAN_LOCAL6)].flatMap { IPv6Address(networkBytes: $0.rawPayload) })
                }
            }
            return link
        } ?? nil
    }

    /// The VXLAN attributes beyond identity, as the kernel reports them.
    static func vxlanOptions(_ v: Attributes) -> VXLANOptions {
        func u8(_ type: some BinaryInteger) -> UInt8? { v[UInt16(type)]?.u8 }
        func bool(_ type: some BinaryInteger) -> Bool? { v[UInt16(type)]?.u8.map { $0 != 0 } }
        var options = VXLANOptions()
        if let group = v[UInt16(IFLA_VXLAN_GROUP)]?.ipv4, group != 0 {
            options.remote = "\(IPv4Address(group))"
        } else if let group6 = v[UInt16(IFLA_VXLAN_GROUP6)], group6.payloadLength == 16, group6.bytes.contains(where: { $0 != 0 }) {
            let b = group6.bytes
            options.remote = stride(from: 0, to: 16, by: 2).map { String(UInt16(b[$0]) << 8 | UInt16(b[$0 + 1]), radix: 16) }
                .joined(separator: ":")
        }
        options.ttl = u8(IFLA_VXLAN_TTL)
        options.ttlInherit = bool(IFLA_VXLAN_TTL_INHERIT)
        options.tos = u8(IFLA_VXLAN_TOS)
        options.df = u8(IFLA_VXLAN_DF)
        options.label = v[UInt16(IFLA_VXLAN_LABEL)]?.u32.map { UInt32(bigEndian: $0) }
        if let range = v[UInt16(IFLA_VXLAN_PORT_RANGE)], range.payloadLength >= 4 {
            let bytes = range.bytes
            let low = UInt16(bytes[0]) << 8 | UInt16(bytes[1]), high = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
            options.sourcePorts = low <= high ? low...high : high...low
        }
        options.udpChecksum = bool(IFLA_VXLAN_UDP_CSUM)
        options.proxy = bool(IFLA_VXLAN_PROXY)
        options.rsc = bool(IFLA_VXLAN_RSC)
        options.l2miss = bool(IFLA_VXLAN_L2MISS)
        options.l3miss = bool(IFLA_VXLAN_L3MISS)
        options.ageing = v[UInt16(IFLA_VXLAN_AGEING)]?.u32
        options.limit = v[UInt16(IFLA_VXLAN_LIMIT)]?.u32
        options.collectMetadata = bool(IFLA_VXLAN_COLLECT_METADATA)
        options.remoteChecksumTX = bool(IFLA_VXLAN_REMCSUM_TX)
        options.remoteChecksumRX = bool(IFLA_VXLAN_REMCSUM_RX)
        options.zeroChecksum6TX = bool(IFLA_VXLAN_UDP_ZERO_CSUM6_TX)
        options.zeroChecksum6RX = bool(IFLA_VXLAN_UDP_ZERO_CSUM6_RX)
        options.gbp = v[UInt16(IFLA_VXLAN_GBP)] != nil
        options.gpe = v[UInt16(IFLA_VXLAN_GPE)] != nil
        options.remoteChecksumNoPartial = v[UInt16(IFLA_VXLAN_REMCSUM_NOPARTIAL)] != nil
        return options
    }

    // Each parser has a public entry point per family (the IPv4 one is what the
    // agent always had) over one generic reader, specialized inside this module.

    /// An `RTM_NEWADDR` message of family AF_INET: (interface index, prefix).
    public static func address(_ message: Message) -> (index: Int32, prefix: IPv4Prefix)? { addressOf(message) }

    /// An `RTM_NEWADDR` message of family AF_INET6: (interface index, prefix).
    public static func address6(_ message: Message) -> (index: Int32, prefix: IPv6Prefix)? { addressOf(message) }

    /// An `RTM_NEWNEIGH` message of family AF_INET: (interface index, neighbor).
    public static func neighbor(_ message: Message) -> (index: Int32, neighbor: Neighbor)? { neighborOf(message) }

    /// An `RTM_NEWNEIGH` message of family AF_INET6 (an NDP entry): (interface index, neighbor).
    public static func neighbor6(_ message: Message) -> (index: Int32, neighbor: Neighbor6)? { neighborOf(message) }

    /// An `RTM_NEWNEIGH` message of family AF_BRIDGE: (interface index, FDB entry).
    /// An entry without an IPv4 destination gets 0.0.0.0.
    public static func fdb(_ message: Message) -> (index: Int32, entry: FDBEntry)? { fdbOf(message) }

    /// An `RTM_NEWNEIGH` message of family AF_BRIDGE read with an IPv6 destination
    /// (the IPv6 device's remotes). An entry without one gets ::.
    public static func fdb6(_ message: Message) -> (index: Int32, entry: FDBEntry6)? { fdbOf(message) }

    /// An `RTM_NEWNEXTHOP` message: a group, or a nexthop that is not IPv6.
    public static func nexthop(_ message: Message) -> Nexthop? { nexthopOf(message) }

    /// An `RTM_NEWNEXTHOP` message: a group, or an IPv6 nexthop.
    public static func nexthop6(_ message: Message) -> Nexthop6? { nexthopOf(message) }

    /// An `RTM_NEWROUTE` message of family AF_INET: (table, route).
    public static func route(_ message: Message) -> (table: UInt32, route: Route)? { routeOf(message) }

    /// An `RTM_NEWROUTE` message of family AF_INET6: (table, route).
    public static func route6(_ message: Message) -> (table: UInt32, route: Route6)? { routeOf(message) }

    static func addressOf<P: IPFamilyPrefix>(_ message: Message) -> (index: Int32, prefix: P)? {
        guard message.type == UInt16(RTM_NEWADDR) || message.type == UInt16(RTM_DELADDR), let header = message.familyHeader(ifaddrmsg.self),
              header.ifa_family == P.Address.family, header.ifa_prefixlen <= P.maxLength else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<ifaddrmsg>.size, maxType: ifaMax) { a -> (Int32, P)? in
            // IPv6 reports IFA_LOCAL only for a point-to-point address (then IFA_ADDRESS is the peer).
            guard let local = a[UInt16(IFA_LOCAL)] ?? a[UInt16(IFA_ADDRESS)],
                  let address = P.Address(networkBytes: local.rawPayload) else { return nil }
            return (Int32(bitPattern: header.ifa_index), P(address, header.ifa_prefixlen))
        } ?? nil
    }

    @inline(__always)
    static func neighborOf<A: IPFamilyAddress>(_ message: Message) -> (index: Int32, neighbor: NeighborOf<A>)? {
        guard message.type == UInt16(RTM_NEWNEIGH) || message.type == UInt16(RTM_DELNEIGH),
              let header = RawMessage.header(message, ndmsg.self), header.ndm_family == A.family else { return nil }
        var dst: RawAttribute?, lladdr: RawAttribute?
        guard RawMessage.forEachAttribute(message, afterHeader: MemoryLayout<ndmsg>.size, { type, attribute in
            switch type {
            case nda.dst: dst = attribute
            case nda.lladdr: lladdr = attribute
            default: break
            }
        }), let ip: A = dst?.address() else { return nil }
        return (header.ndm_ifindex,
                NeighborOf(ip: ip, mac: lladdr?.mac ?? MACAddress(value: 0),
                           permanent: header.ndm_state & UInt16(NUD_PERMANENT) != 0))
    }

    @inline(__always)
    static func fdbOf<A: IPFamilyAddress>(_ message: Message) -> (index: Int32, entry: FDBEntryOf<A>)? {
        guard message.type == UInt16(RTM_NEWNEIGH) || message.type == UInt16(RTM_DELNEIGH),
              let header = RawMessage.header(message, ndmsg.self), header.ndm_family == UInt8(AF_BRIDGE) else { return nil }
        var dst: RawAttribute?, lladdr: RawAttribute?, port: RawAttribute?, vni: RawAttribute?, via: RawAttribute?
        guard RawMessage.forEachAttribute(message, afterHeader: MemoryLayout<ndmsg>.size, { type, attribute in
            switch type {
            case nda.dst: dst = attribute
            case nda.lladdr: lladdr = attribute
            case nda.port: port = attribute
            case nda.vni: vni = attribute
            case nda.ifindex: via = attribute
            default: break
            }
        }), let mac = lladdr?.mac else { return nil }
        return (header.ndm_ifindex,
                FDBEntryOf(mac: mac, dst: dst?.address() ?? A.zero, permanent: header.ndm_state & UInt16(NUD_PERMANENT) != 0,
                           port: port?.be16, vni: vni?.u32, via: via?.u32.map { Int32(bitPattern: $0) }))
    }

    @inline(__always)
    static func nexthopOf<A: IPFamilyAddress>(_ message: Message) -> NexthopOf<A>? {
        guard message.type == UInt16(RTM_NEWNEXTHOP) || message.type == UInt16(RTM_DELNEXTHOP),
              let header = RawMessage.header(message, nhmsg.self) else { return nil }
        var id: RawAttribute?, groupAttribute: RawAttribute?, gateway: RawAttribute?, oif: RawAttribute?
        guard RawMessage.forEachAttribute(message, afterHeader: MemoryLayout<nhmsg>.size, { type, attribute in
            switch type {
            case nha.id: id = attribute
            case nha.group: groupAttribute = attribute
            case nha.gateway: gateway = attribute
            case nha.oif: oif = attribute
            default: break
            }
        }), let id = id?.u32 else { return nil }
        // Nexthop ids are one space for both families, and both planes dump the
        // whole table: a single nexthop belongs to the plane of its family (the
        // IPv4 plane takes every family but IPv6, as before dual stack), a group
        // to both (its members may be either plane's).
        if groupAttribute == nil {
            let isIPv6 = header.nh_family == UInt8(AF_INET6)
            guard isIPv6 == (A.family == UInt8(AF_INET6)) else { return nil }
        }
        // NHA_GROUP: struct nexthop_grp { u32 id; u8 weight; u8 resvd1; u16 resvd2 } per member.
        let group = groupAttribute.map { attribute -> [UInt32] in
            let count = attribute.payloadLength
            return stride(from: 0, to: count - count % 8, by: 8).map { attribute.payload.loadUnaligned(fromByteOffset: $0, as: UInt32.self) }
        }
        return NexthopOf(id: id, gateway: gateway?.address(),
                         onlink: header.nh_flags & UInt32(RTNH_F_ONLINK) != 0, proto: header.nh_protocol,
                         deviceIndex: oif?.u32.map { Int32(bitPattern: $0) }, group: group)
    }

    @inline(__always)
    static func routeOf<A: IPFamilyAddress>(_ message: Message) -> (table: UInt32, route: RouteOf<A>)? {
        guard message.type == UInt16(RTM_NEWROUTE) || message.type == UInt16(RTM_DELROUTE),
              let header = RawMessage.header(message, rtmsg.self),
              header.rtm_family == A.family, header.rtm_dst_len <= A.Prefix.maxLength else { return nil }
        var table: RawAttribute?, dst: RawAttribute?, gateway: RawAttribute?, nexthopID: RawAttribute?
        var priority: RawAttribute?, oif: RawAttribute?
        guard RawMessage.forEachAttribute(message, afterHeader: MemoryLayout<rtmsg>.size, { type, attribute in
            switch type {
            case rta.table: table = attribute
            case rta.dst: dst = attribute
            case rta.gateway: gateway = attribute
            case rta.nexthopID: nexthopID = attribute
            case rta.priority: priority = attribute
            case rta.oif: oif = attribute
            default: break
            }
        }) else { return nil }
        let route = RouteOf<A>(dst: A.Prefix(dst?.address() ?? A.zero, header.rtm_dst_len),
                               gateway: gateway?.address(),
                               nexthopID: nexthopID?.u32,
                               onlink: header.rtm_flags & UInt32(RTNH_F_ONLINK) != 0,
                               proto: header.rtm_protocol,
                               priority: priority?.u32 ?? 0,
                               deviceIndex: oif?.u32.map { Int32(bitPattern: $0) },
                               type: header.rtm_type,
                               scope: header.rtm_scope)
        return (table?.u32 ?? UInt32(header.rtm_table), route)
    }

    // The attribute types the dump parsers read.
    enum nda {
        static let dst = UInt16(NDA_DST), lladdr = UInt16(NDA_LLADDR), port = UInt16(NDA_PORT)
        static let vni = UInt16(NDA_VNI), ifindex = UInt16(NDA_IFINDEX)
    }
    enum nha {
        static let id = UInt16(NHA_ID), group = UInt16(NHA_GROUP), gateway = UInt16(NHA_GATEWAY), oif = UInt16(NHA_OIF)
    }
    enum rta {
        static let table = UInt16(RTA_TABLE.rawValue), dst = UInt16(RTA_DST.rawValue), gateway = UInt16(RTA_GATEWAY.rawValue)
        static let nexthopID = UInt16(RTA_NH_ID.rawValue), priority = UInt16(RTA_PRIORITY.rawValue), oif = UInt16(RTA_OIF.rawValue)
    }
}

/// The dump parsers' view of a message: the family header and the attributes
/// read in place, in Swift. A dump of 10,000 routes, neighbors, FDB entries and
/// nexthops parses 40,000 messages; going through libmnl's callback table and an
/// unspecialised generic per message was a quarter of the snapshot (`perf`).
/// The walk is libmnl's (`mnl_attr_parse`): attributes from the aligned end of
/// the family header to the end of the message (libmnl: its aligned end), each at least 4 bytes and
/// inside the message; the type without the nested/byte-order flags; the last of
/// a type wins. Only the attributes a parser asks for are looked at.
enum RawMessage {
    static let headerLength = 16 // MNL_NLMSG_HDRLEN

    @inline(__always)
    static func align(_ length: Int) -> Int { (length + 3) & ~3 }

    /// The family header, if the message is long enough to hold one.
    @inline(__always)
    static func header<T>(_ message: Message, _ type: T.Type) -> T? {
        guard message.length >= headerLength + MemoryLayout<T>.size else { return nil }
        return (UnsafeRawPointer(message.header) + headerLength).loadUnaligned(as: T.self)
    }

    /// Calls `body` with each attribute's type and the attribute; false if the
    /// message is too short for the family header (no attributes were read).
    @inline(__always)
    static func forEachAttribute(_ message: Message, afterHeader headerSize: Int,
                                 _ body: (UInt16, RawAttribute) -> Void) -> Bool {
        let start = UnsafeRawPointer(message.header)
        let length = message.length
        guard length >= headerLength + headerSize else { return false }
        // Up to nlmsg_len, not its aligned end as libmnl walks: the last message of
        // a buffer may end there unpadded (a crafted reply did, and the walk read
        // up to 3 bytes past the buffer; libmnl's reads are not instrumented, ours are).
        let tail = start + length
        var attribute = start + headerLength + align(headerSize)
        while tail - attribute >= 4 {
            let attributeLength = Int(attribute.loadUnaligned(as: UInt16.self))
            guard attributeLength >= 4, attributeLength <= tail - attribute else { break }
            body(attribute.loadUnaligned(fromByteOffset: 2, as: UInt16.self) & 0x3fff, RawAttribute(pointer: attribute))
            attribute += align(attributeLength)
        }
        return true
    }
}

/// One attribute, read in place; the accessors check the payload length as
/// `Netlink.Attribute`'s do.
struct RawAttribute {
    let pointer: UnsafeRawPointer

    var payloadLength: Int { Int(pointer.loadUnaligned(as: UInt16.self)) - 4 }
    var payload: UnsafeRawPointer { pointer + 4 }
    var u32: UInt32? { payloadLength >= 4 ? payload.loadUnaligned(as: UInt32.self) : nil }
    var be16: UInt16? { payloadLength >= 2 ? UInt16(bigEndian: payload.loadUnaligned(as: UInt16.self)) : nil }
    /// The big-endian IPv4 address in the payload, as a host-order integer.
    var ipv4: UInt32? { payloadLength == 4 ? UInt32(bigEndian: payload.loadUnaligned(as: UInt32.self)) : nil }
    /// The address of family `A` in the payload; nil unless the payload is exactly one.
    @inline(__always)
    func address<A: IPFamilyAddress>() -> A? {
        payloadLength == A.byteCount ? A(networkBytes: UnsafeRawBufferPointer(start: payload, count: payloadLength)) : nil
    }
    /// The 6-byte hardware address in the payload.
    var mac: MACAddress? {
        guard payloadLength == 6 else { return nil }
        let high = UInt64(UInt16(bigEndian: payload.loadUnaligned(as: UInt16.self)))
        let low = UInt64(UInt32(bigEndian: payload.loadUnaligned(fromByteOffset: 2, as: UInt32.self)))
        return MACAddress(value: high << 32 | low)
    }
}
