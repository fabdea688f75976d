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
                        options: vxlanOptions(v))
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

    /// An `RTM_NEWADDR` message of family AF_INET: (interface index, prefix).
    public static func address(_ message: Message) -> (index: Int32, prefix: IPv4Prefix)? {
        guard message.type == UInt16(RTM_NEWADDR) || message.type == UInt16(RTM_DELADDR), let header = message.familyHeader(ifaddrmsg.self),
              header.ifa_family == UInt8(AF_INET), header.ifa_prefixlen <= 32 else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<ifaddrmsg>.size, maxType: ifaMax) { a -> (Int32, IPv4Prefix)? in
            guard let local = (a[UInt16(IFA_LOCAL)] ?? a[UInt16(IFA_ADDRESS)])?.ipv4 else { return nil }
            return (Int32(bitPattern: header.ifa_index), IPv4Prefix(IPv4Address(local), header.ifa_prefixlen))
        } ?? nil
    }

    /// An `RTM_NEWNEIGH` message of family AF_INET: (interface index, neighbor).
    public static func neighbor(_ message: Message) -> (index: Int32, neighbor: Neighbor)? {
        guard message.type == UInt16(RTM_NEWNEIGH) || message.type == UInt16(RTM_DELNEIGH), let header = message.familyHeader(ndmsg.self),
              header.ndm_family == UInt8(AF_INET) else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<ndmsg>.size, maxType: ndaMax) { a -> (Int32, Neighbor)? in
            guard let ip = a[UInt16(NDA_DST)]?.ipv4 else { return nil }
            let mac = a[UInt16(NDA_LLADDR)]?.mac.flatMap { MACAddress(bytes: $0) } ?? MACAddress(value: 0)
            return (header.ndm_ifindex,
                    Neighbor(ip: IPv4Address(ip), mac: mac, permanent: header.ndm_state & UInt16(NUD_PERMANENT) != 0))
        } ?? nil
    }

    /// An `RTM_NEWNEIGH` message of family AF_BRIDGE: (interface index, FDB entry).
    /// An entry without an IPv4 destination gets 0.0.0.0.
    public static func fdb(_ message: Message) -> (index: Int32, entry: FDBEntry)? {
        guard message.type == UInt16(RTM_NEWNEIGH) || message.type == UInt16(RTM_DELNEIGH), let header = message.familyHeader(ndmsg.self),
              header.ndm_family == UInt8(AF_BRIDGE) else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<ndmsg>.size, maxType: ndaMax) { a -> (Int32, FDBEntry)? in
            guard let mac = a[UInt16(NDA_LLADDR)]?.mac.flatMap({ MACAddress(bytes: $0) }) else { return nil }
            let dst = a[UInt16(NDA_DST)]?.ipv4 ?? 0
            return (header.ndm_ifindex,
                    FDBEntry(mac: mac, dst: IPv4Address(dst), permanent: header.ndm_state & UInt16(NUD_PERMANENT) != 0,
                             port: a[UInt16(NDA_PORT)]?.be16, vni: a[UInt16(NDA_VNI)]?.u32,
                             via: a[UInt16(NDA_IFINDEX)]?.u32.map { Int32(bitPattern: $0) }))
        } ?? nil
    }

    /// An `RTM_NEWNEXTHOP` message.
    public static func nexthop(_ message: Message) -> Nexthop? {
        guard message.type == UInt16(RTM_NEWNEXTHOP) || message.type == UInt16(RTM_DELNEXTHOP), let header = message.familyHeader(nhmsg.self) else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<nhmsg>.size, maxType: nhaMax) { a -> Nexthop? in
            guard let id = a[UInt16(NHA_ID)]?.u32 else { return nil }
            // NHA_GROUP: struct nexthop_grp { u32 id; u8 weight; u8 resvd1; u16 resvd2 } per member.
            let group = a[UInt16(NHA_GROUP)].map { attribute -> [UInt32] in
                let bytes = attribute.bytes
                return stride(from: 0, to: bytes.count - bytes.count % 8, by: 8).map { offset in
                    bytes[offset..<offset + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                }
            }
            return Nexthop(id: id, gateway: a[UInt16(NHA_GATEWAY)]?.ipv4.map(IPv4Address.init),
                           onlink: header.nh_flags & UInt32(RTNH_F_ONLINK) != 0, proto: header.nh_protocol,
                           deviceIndex: a[UInt16(NHA_OIF)]?.u32.map { Int32(bitPattern: $0) }, group: group)
        } ?? nil
    }

    /// An `RTM_NEWROUTE` message of family AF_INET: (table, route).
    public static func route(_ message: Message) -> (table: UInt32, route: Route)? {
        guard message.type == UInt16(RTM_NEWROUTE) || message.type == UInt16(RTM_DELROUTE), let header = message.familyHeader(rtmsg.self),
              header.rtm_family == UInt8(AF_INET), header.rtm_dst_len <= 32 else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<rtmsg>.size, maxType: rtaMax) { a -> (UInt32, Route) in
            let table = a[UInt16(RTA_TABLE.rawValue)]?.u32 ?? UInt32(header.rtm_table)
            let dst = IPv4Address(a[UInt16(RTA_DST.rawValue)]?.ipv4 ?? 0)
            let route = Route(dst: IPv4Prefix(dst, header.rtm_dst_len),
                              gateway: a[UInt16(RTA_GATEWAY.rawValue)]?.ipv4.map(IPv4Address.init),
                              nexthopID: a[UInt16(RTA_NH_ID.rawValue)]?.u32,
                              onlink: header.rtm_flags & UInt32(RTNH_F_ONLINK) != 0,
                              proto: header.rtm_protocol,
                              priority: a[UInt16(RTA_PRIORITY.rawValue)]?.u32 ?? 0,
                              deviceIndex: a[UInt16(RTA_OIF.rawValue)]?.u32.map { Int32(bitPattern: $0) },
                              type: header.rtm_type,
                              scope: header.rtm_scope)
            return (table, route)
        } ?? nil
    }
}
