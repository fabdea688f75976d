/// An IPv4 address, stored in host order.
public struct IPv4Address: Hashable, Comparable, Sendable, TextCodable {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad notation (no leading zeros); nil for anything else.
    /// Inlinable: an inventory of 50,000 nodes parses 100,000 of these, and an
    /// unspecialised generic over StringProtocol cost 5x.
    @inlinable
    public init?(_ text: some StringProtocol) {
        var value: UInt32 = 0, part: UInt32 = 0, digits = 0, dots = 0, leadingZero = false
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if leadingZero { return nil }
                if digits == 0 && byte == UInt8(ascii: "0") { leadingZero = true }
                part = part * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
                if digits > 3 || part > 255 { return nil }
            case UInt8(ascii: "."):
                if digits == 0 || dots == 3 { return nil }
                value = value << 8 | part
                part = 0
                digits = 0
                dots += 1
                leadingZero = false
            default:
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        self.value = value << 8 | part
    }

    public var octets: [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)] }
    public var description: String { octets.map(String.init).joined(separator: ".") }

    public var isMulticast: Bool { value >> 28 == 0xE }
    public var isLoopback: Bool { value >> 24 == 127 }
    public var isUnspecified: Bool { value == 0 }
    public var isBroadcast: Bool { value == .max }
    /// 240.0.0.0/4, reserved.
    public var isReserved: Bool { value >> 28 == 0xF }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }

}

/// An IPv4 prefix (`10.244.1.0/24`). The address is kept as given; `isCanonical`
/// tells whether host bits are zero.
public struct IPv4Prefix: Hashable, Comparable, Sendable, TextCodable {
    public var address: IPv4Address
    public var length: UInt8

    public init(_ address: IPv4Address, _ length: UInt8) {
        precondition(length <= 32)
        self.address = address
        self.length = length
    }

    /// Parses `a.b.c.d/len` (the address as `IPv4Address` reads it, len 0-32 in
    /// one or two digits). The slash is found in the UTF-8 bytes: an inventory of
    /// 10,000 nodes parses 10,000 of these, and finding it as a Character
    /// (grapheme breaking) cost more than the rest of the node's validation.
    @inlinable
    public init?(_ text: some StringProtocol) {
        guard let slash = text.utf8.firstIndex(of: UInt8(ascii: "/")), let address = IPv4Address(text[..<slash]) else { return nil }
        var length: UInt32 = 0, lengthDigits = 0
        for byte in text.utf8[text.utf8.index(after: slash)...] {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"), lengthDigits < 2 else { return nil }
            length = length * 10 + UInt32(byte - UInt8(ascii: "0"))
            lengthDigits += 1
        }
        guard lengthDigits > 0, length <= 32 else { return nil }
        self.init(address, UInt8(length))
    }

    public var mask: UInt32 { length == 0 ? 0 : UInt32.max << (32 - UInt32(length)) }
    public var network: IPv4Address { IPv4Address(address.value & mask) }
    public var isCanonical: Bool { address.value & ~mask == 0 }
    /// The last address of the prefix.
    public var last: IPv4Address { IPv4Address(network.value | ~mask) }
    public var size: UInt64 { UInt64(1) << (32 - UInt64(length)) }

    public func contains(_ other: IPv4Address) -> Bool { other.value & mask == network.value }
    public func contains(_ other: IPv4Prefix) -> Bool { other.length >= length && contains(other.address) }
    public func overlaps(_ other: IPv4Prefix) -> Bool { contains(other.network) || other.contains(network) }

    public var description: String { "\(address)/\(length)" }

    public static func < (a: IPv4Prefix, b: IPv4Prefix) -> Bool {
        (a.address, a.length) < (b.address, b.length)
    }

}

/// A 48-bit Ethernet address.
public struct MACAddress: Hashable, Comparable, Sendable, TextCodable {
    /// The six bytes in the low 48 bits, first byte most significant.
    public var value: UInt64

    public init(value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        value = bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Parses `0e:00:00:00:00:02` (also with `-`), case-insensitive.
    @inlinable
    public init?(_ text: some StringProtocol) {
        let parts = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.init(bytes: bytes)
    }

    public var bytes: [UInt8] { (0..<6).map { UInt8(value >> (40 - 8 * UInt64($0)) & 0xff) } }
    /// The first byte, without building `bytes`.
    var firstByte: UInt8 { UInt8(truncatingIfNeeded: value >> 40) }
    public var isMulticast: Bool { firstByte & 1 == 1 }
    public var isZero: Bool { value == 0 }
    public var isLocallyAdministered: Bool { firstByte & 2 == 2 }
    /// A MAC usable as a VTEP address: unicast and not all zeros.
    public var isValidUnicast: Bool { !isMulticast && !isZero }

    public var description: String {
        bytes.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined(separator: ":")
    }

    public static func < (a: MACAddress, b: MACAddress) -> Bool { a.value < b.value }

    /// The stable VTEP MAC of a node: locally administered, unicast, derived from
    /// the VNI and the node's public IP (`0e:VV:a:b:c:d`, VV = the VNI's low byte),
    /// so every node computes every other node's MAC without being told, and a
    /// recreated device keeps its address.
    public static func vtep(vni: UInt32, publicIP: IPv4Address) -> MACAddress {
        MACAddress(value: 0x0e << 40 | UInt64(vni & 0xff) << 32 | UInt64(publicIP.value))
    }

    /// The stable VTEP MAC of a node's IPv6 device (`flannel-v6.<VNI>`): `0a:VV:`
    /// and the last four bytes of its public IPv6 address (another first byte
    /// than the IPv4 device's, so the two devices of one node never share a MAC).
    public static func vtep(vni: UInt32, publicIPv6: IPv6Address) -> MACAddress {
        MACAddress(value: 0x0a << 40 | UInt64(vni & 0xff) << 32 | (publicIPv6.low & 0xffff_ffff))
    }

}

/// A value written in JSON as its text form (`"10.244.1.0/24"`), decoded with
/// a message that says what was expected.
public protocol TextCodable: Codable, CustomStringConvertible {
    static func parse(_ text: String) -> Self?
    /// What a valid text looks like, for the error.
    static var expectedForm: String { get }
}

extension TextCodable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self.parse(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "\"\(text)\" is not \(Self.expectedForm)"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension IPv4Address {
    public static func parse(_ text: String) -> IPv4Address? { IPv4Address(text) }
    public static var expectedForm: String { "an IPv4 address" }
}

extension IPv4Prefix {
    public static func parse(_ text: String) -> IPv4Prefix? { IPv4Prefix(text) }
    public static var expectedForm: String { "an IPv4 prefix (a.b.c.d/len)" }
}

extension MACAddress {
    public static func parse(_ text: String) -> MACAddress? { MACAddress(text) }
    public static var expectedForm: String { "a MAC address (xx:xx:xx:xx:xx:xx)" }
}

// MARK: - Hashing

/// A cheap hash for the integer-like keys that sync puts in dictionaries by the
/// ten thousand (addresses, MACs, prefixes, route keys): the stdlib's default
/// runs SipHash-1-3 per lookup, whose seeding and finalization were a tenth of a
/// no-op sync at 10,000 peers (`perf`). `_rawHashValue(seed:)` is Hashable's
/// own requirement for this (the stdlib's integers implement it); the seed is
/// the dictionary's own, random per process, and the mix (murmur3's 64-bit
/// finalizer of value ^ seed) spreads every input bit over the word, so a
/// crafted set of leases cannot aim for one bucket without knowing the seed.
@inlinable
func mixedHash(_ value: UInt64, seed: Int) -> Int {
    var x = value ^ UInt64(bitPattern: Int64(seed))
    x ^= x >> 33
    x &*= 0xff51_afd7_ed55_8ccd
    x ^= x >> 33
    x &*= 0xc4ce_b9fe_1a85_ec53
    x ^= x >> 33
    return Int(truncatingIfNeeded: x)
}

extension IPv4Address {
    @inlinable
    public func _rawHashValue(seed: Int) -> Int { mixedHash(UInt64(value), seed: seed) }
}

extension MACAddress {
    @inlinable
    public func _rawHashValue(seed: Int) -> Int { mixedHash(value, seed: seed) }
}

extension IPv4Prefix {
    @inlinable
    public func _rawHashValue(seed: Int) -> Int { mixedHash(UInt64(address.value) << 8 | UInt64(length), seed: seed) }
}
