import CLibMnl
import Dataplane
import Model
import Netlink
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `Parse.route`, `neighbor`, `fdb` and `nexthop` walk a reply's attributes in
/// place; the reference here reads the same message through libmnl's attribute
/// table (`Message.withAttributes`), as the parsers did before. Both must agree
/// on every message, well-formed or not: a repeated attribute (the last wins),
/// type flag bits, a short payload, odd lengths and padding, an attribute that
/// runs past the end, one shorter than its header, a message shorter than its
/// family header.
@Suite("Parse: replies read in place agree with libmnl's attribute table")
struct ReplyParsingTests {
    // MARK: building messages

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(v >> (8 * UInt32($0)) & 0xff) } }
    static func be32(_ v: UInt32) -> [UInt8] { le32(v.byteSwapped) }
    static func ip(_ text: String) -> [UInt8] { be32(IPv4Address(text)!.value) }

    /// One attribute, padded to 4 bytes; `length` overrides nla_len.
    static func attr(_ type: UInt16, _ payload: [UInt8], length: Int? = nil) -> [UInt8] {
        var bytes = le16(UInt16(length ?? payload.count + 4)) + le16(type) + payload
        while bytes.count % 4 != 0 { bytes.append(0) }
        return bytes
    }

    /// A netlink message: header, family header (padded), attributes; `cut` drops trailing bytes from nlmsg_len.
    static func message(_ type: UInt16, _ family: [UInt8], _ attributes: [[UInt8]], cut: Int = 0) -> [UInt8] {
        var body = family
        while body.count % 4 != 0 { body.append(0) }
        for a in attributes { body += a }
        let length = 16 + body.count - cut
        return le32(UInt32(length)) + le16(type) + le16(0) + le32(1) + le32(0) + Array(body.prefix(body.count - cut))
    }

    static func rtmsg(dstLength: UInt8 = 24, table: UInt8 = 254, proto: UInt8 = 152, flags: UInt32 = UInt32(RTNH_F_ONLINK)) -> [UInt8] {
        [UInt8(AF_INET), dstLength, 0, 0, table, proto, 0, 1] + le32(flags)
    }
    static func ndmsg(family: Int32, index: Int32 = 5, state: UInt16 = UInt16(NUD_PERMANENT)) -> [UInt8] {
        [UInt8(family), 0, 0, 0] + le32(UInt32(bitPattern: index)) + le16(state) + [0, 0]
    }
    static func nhmsg(proto: UInt8 = 152, flags: UInt32 = UInt32(RTNH_F_ONLINK), family: Int32 = AF_INET) -> [UInt8] {
        [UInt8(family), 0, proto, 0] + le32(flags)
    }

    static let rtaDst = UInt16(RTA_DST.rawValue), rtaOif = UInt16(RTA_OIF.rawValue), rtaGateway = UInt16(RTA_GATEWAY.rawValue)
    static let rtaPriority = UInt16(RTA_PRIORITY.rawValue), rtaTable = UInt16(RTA_TABLE.rawValue), rtaNexthop = UInt16(RTA_NH_ID.rawValue)
    static let byteOrder: UInt16 = 0x4000, nested: UInt16 = 0x8000

    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var bytes: [UInt8]
    }

    static let routes: [Case] = [
        Case(description: "every attribute the parser reads", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(), [
            attr(rtaTable, le32(254)), attr(rtaDst, ip("10.1.2.0")), attr(rtaGateway, ip("10.1.2.0")),
            attr(rtaOif, le32(5)), attr(rtaPriority, le32(20)), attr(rtaNexthop, le32(7)),
        ])),
        Case(description: "a repeated attribute: the last wins", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(), [
            attr(rtaPriority, le32(5)), attr(rtaDst, ip("10.1.2.0")), attr(rtaPriority, le32(7)),
        ])),
        Case(description: "flag bits on the type are ignored", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(), [
            attr(rtaGateway | byteOrder, ip("10.9.9.9")), attr(rtaDst | nested, ip("10.1.2.0")),
        ])),
        Case(description: "short payloads read as absent", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(), [
            attr(rtaTable, le16(10)), attr(rtaDst, [10, 1, 2]), attr(rtaNexthop, le16(7)), attr(rtaGateway, ip("1.2.3.4") + [0]),
        ])),
        Case(description: "a table in the attribute beats rtm_table", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(table: 252), [
            attr(rtaTable, le32(1000)), attr(rtaDst, ip("10.1.2.0")),
        ])),
        Case(description: "an odd-length attribute, then padding, then more", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(), [
            attr(99, [1]), attr(rtaOif, le32(9)), attr(rtaDst, ip("10.1.3.0")),
        ])),
        Case(description: "an attribute that runs past the end stops the walk", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(), [
            attr(rtaDst, ip("10.1.2.0")), attr(rtaOif, le32(9), length: 64), attr(rtaPriority, le32(3)),
        ])),
        Case(description: "an attribute shorter than its header stops the walk", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(), [
            attr(rtaDst, ip("10.1.2.0")), attr(rtaOif, [], length: 2), attr(rtaPriority, le32(3)),
        ])),
        Case(description: "shorter than its family header", bytes: message(UInt16(RTM_NEWROUTE), Array(rtmsg().prefix(6)), [])),
        Case(description: "a prefix longer than 32", bytes: message(UInt16(RTM_NEWROUTE), rtmsg(dstLength: 33), [attr(rtaDst, ip("10.1.2.0"))])),
        Case(description: "another message type", bytes: message(UInt16(RTM_NEWNEIGH), rtmsg(), [attr(rtaDst, ip("10.1.2.0"))])),
    ]

    static let neighbors: [Case] = [
        Case(description: "address and MAC", bytes: message(UInt16(RTM_NEWNEIGH), ndmsg(family: AF_INET), [
            attr(UInt16(NDA_DST), ip("10.1.2.0")), attr(UInt16(NDA_LLADDR), [0x0e, 1, 2, 3, 4, 5]),
        ])),
        Case(description: "a MAC of the wrong length reads as zero", bytes: message(UInt16(RTM_NEWNEIGH), ndmsg(family: AF_INET, state: 2), [
            attr(UInt16(NDA_DST), ip("10.1.2.0")), attr(UInt16(NDA_LLADDR), [0x0e, 1, 2, 3]),
        ])),
        Case(description: "no address: not a neighbor", bytes: message(UInt16(RTM_NEWNEIGH), ndmsg(family: AF_INET), [
            attr(UInt16(NDA_LLADDR), [0x0e, 1, 2, 3, 4, 5]),
        ])),
        Case(description: "a bridge entry is not a neighbor", bytes: message(UInt16(RTM_NEWNEIGH), ndmsg(family: AF_BRIDGE), [
            attr(UInt16(NDA_DST), ip("10.1.2.0")),
        ])),
    ]

    static let fdb: [Case] = [
        Case(description: "every attribute the parser reads", bytes: message(UInt16(RTM_NEWNEIGH), ndmsg(family: AF_BRIDGE), [
            attr(UInt16(NDA_LLADDR), [0x0e, 1, 2, 3, 4, 5]), attr(UInt16(NDA_DST), ip("198.19.0.2")),
            attr(UInt16(NDA_PORT), [0x21, 0x18]), attr(UInt16(NDA_VNI), le32(7)), attr(UInt16(NDA_IFINDEX), le32(3)),
        ])),
        Case(description: "no destination: 0.0.0.0", bytes: message(UInt16(RTM_NEWNEIGH), ndmsg(family: AF_BRIDGE, state: 0), [
            attr(UInt16(NDA_LLADDR), [0x33, 0x33, 0, 0, 0, 1]),
        ])),
        Case(description: "no MAC: not an entry", bytes: message(UInt16(RTM_NEWNEIGH), ndmsg(family: AF_BRIDGE), [
            attr(UInt16(NDA_DST), ip("198.19.0.2")),
        ])),
        Case(description: "short port and VNI read as absent", bytes: message(UInt16(RTM_NEWNEIGH), ndmsg(family: AF_BRIDGE), [
            attr(UInt16(NDA_LLADDR), [0x0e, 1, 2, 3, 4, 5]), attr(UInt16(NDA_PORT), [0x21]), attr(UInt16(NDA_VNI), le16(7)),
        ])),
    ]

    static let nexthops: [Case] = [
        Case(description: "a nexthop via a gateway", bytes: message(UInt16(RTM_NEWNEXTHOP), nhmsg(), [
            attr(UInt16(NHA_ID), le32(1_985_478_657)), attr(UInt16(NHA_GATEWAY), ip("10.0.1.0")), attr(UInt16(NHA_OIF), le32(5)),
        ])),
        Case(description: "a group, with three stray bytes after its members", bytes: message(UInt16(RTM_NEWNEXTHOP), nhmsg(proto: 3, flags: 0), [
            attr(UInt16(NHA_ID), le32(9)), attr(UInt16(NHA_GROUP), le32(1) + [1, 0, 0, 0] + le32(2) + [1, 0, 0, 0] + [7, 7, 7]),
        ])),
        Case(description: "no id: not a nexthop", bytes: message(UInt16(RTM_NEWNEXTHOP), nhmsg(), [attr(UInt16(NHA_OIF), le32(5))])),
        Case(description: "an empty group", bytes: message(UInt16(RTM_NEWNEXTHOP), nhmsg(), [attr(UInt16(NHA_ID), le32(9)), attr(UInt16(NHA_GROUP), [])])),
        // Both planes dump the one nexthop table (dual stack).
        Case(description: "an IPv6 nexthop: not the IPv4 plane's", bytes: message(UInt16(RTM_NEWNEXTHOP), nhmsg(family: AF_INET6), [
            attr(UInt16(NHA_ID), le32(7)), attr(UInt16(NHA_GATEWAY), [0xfd] + [UInt8](repeating: 0, count: 14) + [1]), attr(UInt16(NHA_OIF), le32(5)),
        ])),
        Case(description: "a group of the IPv6 family: both planes'", bytes: message(UInt16(RTM_NEWNEXTHOP), nhmsg(proto: 3, flags: 0, family: AF_INET6), [
            attr(UInt16(NHA_ID), le32(9)), attr(UInt16(NHA_GROUP), le32(1) + [1, 0, 0, 0]),
        ])),
    ]

    func parsed<T>(_ bytes: [UInt8], _ parse: (Message) -> T) -> T {
        // Room past nlmsg_len: libmnl reads up to the aligned end, as the walk does.
        let storage = bytes + [0, 0, 0, 0]
        return storage.withUnsafeBytes { raw in
            parse(Message(raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)))
        }
    }

    /// The one place the walk parts from libmnl on purpose: libmnl reads attributes
    /// up to the aligned end of the message, past nlmsg_len, where the buffer may
    /// end (the last message of a receive). The fuzzer found that read under
    /// AddressSanitizer. An attribute that runs past nlmsg_len is not read.
    @Test("the message ends inside the last attribute: that attribute is not read, and nothing past the buffer is")
    func endsInsideLastAttribute() throws {
        let bytes = Self.message(UInt16(RTM_NEWROUTE), Self.rtmsg(), [Self.attr(Self.rtaDst, Self.ip("10.1.2.0")), Self.attr(Self.rtaPriority, Self.le32(3))], cut: 2)
        // Exactly nlmsg_len bytes: nothing after the message to read by mistake.
        let length = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
        let parsed = Array(bytes.prefix(length)).withUnsafeBytes { raw in
            Parse.route(Message(raw.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)))
        }
        let route = try #require(parsed?.route)
        #expect(route.dst == IPv4Prefix("10.1.2.0/24")!)
        #expect(route.priority == 0)
    }

    @Test("routes", arguments: routes)
    func route(_ c: Case) {
        let (fast, reference) = parsed(c.bytes) { (Parse.route($0), Reference.route($0)) }
        #expect(fast?.table == reference?.table)
        #expect(fast?.route == reference?.route)
        #expect(fast != nil || reference == nil)
    }

    @Test("neighbors", arguments: neighbors)
    func neighbor(_ c: Case) {
        let (fast, reference) = parsed(c.bytes) { (Parse.neighbor($0), Reference.neighbor($0)) }
        #expect(fast?.index == reference?.index)
        #expect(fast?.neighbor == reference?.neighbor)
    }

    @Test("FDB entries", arguments: fdb)
    func fdbEntry(_ c: Case) {
        let (fast, reference) = parsed(c.bytes) { (Parse.fdb($0), Reference.fdb($0)) }
        #expect(fast?.index == reference?.index)
        #expect(fast?.entry == reference?.entry)
    }

    @Test("nexthops", arguments: nexthops)
    func nexthop(_ c: Case) {
        let (fast, reference) = parsed(c.bytes) { (Parse.nexthop($0), Reference.nexthop($0)) }
        #expect(fast == reference)
    }

    @Test("the well-formed cases parse to what they say")
    func values() throws {
        let (_, route) = try #require(parsed(Self.routes[0].bytes, Parse.route))
        #expect(route == Route(dst: IPv4Prefix("10.1.2.0/24")!, gateway: IPv4Address("10.1.2.0"), nexthopID: 7, onlink: true,
                               proto: 152, priority: 20, deviceIndex: 5))
        #expect(try #require(parsed(Self.routes[1].bytes, Parse.route)).route.priority == 7)
        let (_, entry) = try #require(parsed(Self.fdb[0].bytes, Parse.fdb))
        #expect(entry == FDBEntry(mac: MACAddress("0e:01:02:03:04:05")!, dst: IPv4Address("198.19.0.2")!, port: 8472, vni: 7, via: 3))
        #expect(try #require(parsed(Self.nexthops[1].bytes, Parse.nexthop)).group == [1, 2])
        #expect(parsed(Self.nexthops[4].bytes, Parse.nexthop) == nil)
        #expect(try #require(parsed(Self.nexthops[4].bytes, Parse.nexthop6))
            == Nexthop6(id: 7, gateway: IPv6Address("fd00::1")!, onlink: true, proto: 152, deviceIndex: 5))
        #expect(try #require(parsed(Self.nexthops[5].bytes, Parse.nexthop)).group == [1])
        #expect(try #require(parsed(Self.nexthops[5].bytes, Parse.nexthop6)).group == [1])
    }
}

/// The parsers as they were, over libmnl's attribute table: the reference.
enum Reference {
    static func route(_ message: Message) -> (table: UInt32, route: Route)? {
        guard message.type == UInt16(RTM_NEWROUTE) || message.type == UInt16(RTM_DELROUTE), let header = message.familyHeader(rtmsg.self),
              header.rtm_family == UInt8(AF_INET), header.rtm_dst_len <= 32 else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<rtmsg>.size, maxType: UInt16(__RTA_MAX.rawValue) - 1) { a -> (UInt32, Route) in
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

    static func neighbor(_ message: Message) -> (index: Int32, neighbor: Neighbor)? {
        guard message.type == UInt16(RTM_NEWNEIGH) || message.type == UInt16(RTM_DELNEIGH), let header = message.familyHeader(ndmsg.self),
              header.ndm_family == UInt8(AF_INET) else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<ndmsg>.size, maxType: UInt16(__NDA_MAX) - 1) { a -> (Int32, Neighbor)? in
            guard let ip = a[UInt16(NDA_DST)]?.ipv4 else { return nil }
            let mac = a[UInt16(NDA_LLADDR)]?.mac.flatMap { MACAddress(bytes: $0) } ?? MACAddress(value: 0)
            return (header.ndm_ifindex,
                    Neighbor(ip: IPv4Address(ip), mac: mac, permanent: header.ndm_state & UInt16(NUD_PERMANENT) != 0))
        } ?? nil
    }

    static func fdb(_ message: Message) -> (index: Int32, entry: FDBEntry)? {
        guard message.type == UInt16(RTM_NEWNEIGH) || message.type == UInt16(RTM_DELNEIGH), let header = message.familyHeader(ndmsg.self),
              header.ndm_family == UInt8(AF_BRIDGE) else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<ndmsg>.size, maxType: UInt16(__NDA_MAX) - 1) { a -> (Int32, FDBEntry)? in
            guard let mac = a[UInt16(NDA_LLADDR)]?.mac.flatMap({ MACAddress(bytes: $0) }) else { return nil }
            let dst = a[UInt16(NDA_DST)]?.ipv4 ?? 0
            return (header.ndm_ifindex,
                    FDBEntry(mac: mac, dst: IPv4Address(dst), permanent: header.ndm_state & UInt16(NUD_PERMANENT) != 0,
                             port: a[UInt16(NDA_PORT)]?.be16, vni: a[UInt16(NDA_VNI)]?.u32,
                             via: a[UInt16(NDA_IFINDEX)]?.u32.map { Int32(bitPattern: $0) }))
        } ?? nil
    }

    static func nexthop(_ message: Message) -> Nexthop? {
        guard message.type == UInt16(RTM_NEWNEXTHOP) || message.type == UInt16(RTM_DELNEXTHOP), let header = message.familyHeader(nhmsg.self) else { return nil }
        return message.withAttributes(afterHeader: MemoryLayout<nhmsg>.size, maxType: UInt16(__NHA_MAX) - 1) { a -> Nexthop? in
            guard let id = a[UInt16(NHA_ID)]?.u32 else { return nil }
            // A single IPv6 nexthop is the IPv6 plane's.
            if a[UInt16(NHA_GROUP)] == nil && header.nh_family == UInt8(AF_INET6) { return nil }
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
}
