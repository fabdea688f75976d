import CLibMnl
import CNetlinkShim

/// Writes one netlink message in place, through libmnl. Valid only inside the
/// closure that received it; the buffer behind it has room for `MessageBuffer.maxMessageSize` bytes.
public struct MessageWriter {
    public let header: UnsafeMutablePointer<nlmsghdr>

    init(at pointer: UnsafeMutableRawPointer, type: UInt16, flags: UInt16) {
        header = mnl_nlmsg_put_header(pointer)
        header.pointee.nlmsg_type = type
        header.pointee.nlmsg_flags = flags
    }

    /// Reserves and zeroes the family header (`ifinfomsg`, `ndmsg`, `rtmsg`, ...).
    @discardableResult
    public func familyHeader<T>(_ type: T.Type, _ fill: (inout T) -> Void = { _ in }) -> UnsafeMutablePointer<T> {
        let raw = mnl_nlmsg_put_extra_header(header, MemoryLayout<T>.size)!
        let typed = raw.bindMemory(to: T.self, capacity: 1)
        fill(&typed.pointee)
        return typed
    }

    public func put(_ type: UInt16, u8 value: UInt8) { mnl_attr_put_u8(header, type, value) }
    public func put(_ type: UInt16, u16 value: UInt16) { mnl_attr_put_u16(header, type, value) }
    public func put(_ type: UInt16, u32 value: UInt32) { mnl_attr_put_u32(header, type, value) }
    /// A big-endian 16-bit value (ports).
    public func put(_ type: UInt16, be16 value: UInt16) { mnl_attr_put_u16(header, type, value.bigEndian) }
    /// A NUL-terminated string.
    public func put(_ type: UInt16, string value: String) { mnl_attr_put_strz(header, type, value) }
    public func put(_ type: UInt16, bytes: some Collection<UInt8>) {
        let array = Array(bytes)
        array.withUnsafeBytes { mnl_attr_put(header, type, $0.count, $0.baseAddress) }
    }
    /// Raw payload bytes, copied as they are (no array in between: addresses are
    /// written from their `withNetworkBytes`).
    public func put(_ type: UInt16, raw: UnsafeRawBufferPointer) { mnl_attr_put(header, type, raw.count, raw.baseAddress) }
    /// A nested attribute; the closure writes its members.
    public func nest(_ type: UInt16, _ body: () -> Void) {
        let start = mnl_attr_nest_start(header, type)!
        body()
        mnl_attr_nest_end(header, start)
    }
}

/// A received netlink message, borrowed from the receive buffer.
public struct Message {
    public let header: UnsafePointer<nlmsghdr>

    public init(_ header: UnsafePointer<nlmsghdr>) { self.header = header }

    public var type: UInt16 { header.pointee.nlmsg_type }
    public var flags: UInt16 { header.pointee.nlmsg_flags }
    public var sequence: UInt32 { header.pointee.nlmsg_seq }
    /// `nlmsg_pid`: in a notification, the port id of the socket whose request caused it (0: the kernel's own).
    public var portID: UInt32 { header.pointee.nlmsg_pid }
    public var length: Int { Int(header.pointee.nlmsg_len) }

    /// The family header, if the message is long enough to hold one.
    public func familyHeader<T>(_ type: T.Type) -> T? {
        guard length >= Int(mnl_nlmsg_size(MemoryLayout<T>.size)) else { return nil }
        return mnl_nlmsg_get_payload(header)!.loadUnaligned(as: T.self)
    }

    /// Parses the attributes that follow a family header of `headerSize` bytes,
    /// keeping types up to `maxType`. The table lives only inside `body`.
    /// Inlinable so callers in other modules get it specialised (it runs once
    /// per dumped message).
    @inlinable
    public func withAttributes<R>(afterHeader headerSize: Int, maxType: UInt16,
                                  _ body: (Attributes) throws -> R) rethrows -> R? {
        try withUnsafeTemporaryAllocation(of: UnsafePointer<nlattr>?.self, capacity: Int(maxType) + 1) { table in
            guard vxa_parse_attrs(header, UInt32(headerSize), table.baseAddress!, maxType) == 0 else { return nil }
            return try body(Attributes(table: UnsafeBufferPointer(table)))
        }
    }
}

/// A table of parsed attributes indexed by type.
public struct Attributes {
    @usableFromInline let table: UnsafeBufferPointer<UnsafePointer<nlattr>?>

    @usableFromInline init(table: UnsafeBufferPointer<UnsafePointer<nlattr>?>) { self.table = table }

    public subscript(type: UInt16) -> Attribute? {
        guard Int(type) < table.count, let pointer = table[Int(type)] else { return nil }
        return Attribute(pointer: pointer)
    }
}

/// One attribute; the accessors check the payload length and return nil when it is short.
public struct Attribute {
    public let pointer: UnsafePointer<nlattr>

    public var type: UInt16 { mnl_attr_get_type(pointer) }
    public var payloadLength: Int { Int(mnl_attr_get_payload_len(pointer)) }
    var payload: UnsafeRawPointer { UnsafeRawPointer(mnl_attr_get_payload(pointer)!) }

    public var u8: UInt8? { payloadLength >= 1 ? payload.load(as: UInt8.self) : nil }
    public var u16: UInt16? { payloadLength >= 2 ? payload.loadUnaligned(as: UInt16.self) : nil }
    public var u32: UInt32? { payloadLength >= 4 ? payload.loadUnaligned(as: UInt32.self) : nil }
    public var be16: UInt16? { u16.map { UInt16(bigEndian: $0) } }
    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: payload, count: payloadLength)) }
    /// The payload in place (valid as long as the message is).
    public var rawPayload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: payload, count: payloadLength) }
    public var string: String? {
        guard payloadLength > 0 else { return nil }
        let raw = UnsafeRawBufferPointer(start: payload, count: payloadLength)
        let end = raw.firstIndex(of: 0) ?? raw.count
        return String(decoding: raw[..<end], as: UTF8.self)
    }

    /// The big-endian IPv4 address in the payload, as a host-order integer.
    public var ipv4: UInt32? { payloadLength == 4 ? UInt32(bigEndian: payload.loadUnaligned(as: UInt32.self)) : nil }

    /// The 6-byte hardware address in the payload.
    public var mac: [UInt8]? { payloadLength == 6 ? bytes : nil }

    /// Parses the nested attributes, keeping types up to `maxType`.
    @inlinable
    public func withNested<R>(maxType: UInt16, _ body: (Attributes) throws -> R) rethrows -> R? {
        try withUnsafeTemporaryAllocation(of: UnsafePointer<nlattr>?.self, capacity: Int(maxType) + 1) { table in
            guard vxa_parse_nested(pointer, table.baseAddress!, maxType) == 0 else { return nil }
            return try body(Attributes(table: UnsafeBufferPointer(table)))
        }
    }
}

/// Iterates the netlink messages in a receive buffer.
func forEachMessage(in buffer: UnsafeRawBufferPointer, _ body: (Message) throws -> Bool) rethrows {
    guard var header = buffer.baseAddress.map({ UnsafePointer<nlmsghdr>(OpaquePointer($0)) }) else { return }
    var remaining = Int32(clamping: buffer.count)
    // mnl_nlmsg_ok compares nlmsg_len with the bytes left as a signed int, so a
    // length of 2^31 or more passes it (and mnl_nlmsg_next then jumps out of the
    // buffer): check it unsigned too.
    while mnl_nlmsg_ok(header, remaining) && header.pointee.nlmsg_len <= UInt32(remaining) {
        guard try body(Message(header)) else { return }
        header = UnsafePointer(mnl_nlmsg_next(header, &remaining))
    }
}
