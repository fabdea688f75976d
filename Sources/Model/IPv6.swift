/// An IPv6 address, as two 64-bit halves in host order (`high` holds the first
/// eight bytes on the wire).
public struct IPv6Address: Hashable, Comparable, Sendable, TextCodable {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// From the 16 bytes of the wire format.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0, low: UInt64 = 0
        for (i, byte) in bytes.enumerated() {
            if i < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    /// An IPv4 address as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), as Go's net.ParseIP keeps one.
    public init(mapping ipv4: IPv4Address) {
        self.init(high: 0, low: 0xffff_0000_0000 | UInt64(ipv4.value))
    }

    /// Parses RFC 4291 text as inet_pton(3) and Go's net.ParseIP read it: one to
    /// four hex digits per group, one `::` for a run of zero groups, an IPv4
    /// dotted quad as the last 32 bits. No zone (`%eth0`), no brackets, no
    /// prefix length; nil for anything else.
    public init?(_ text: some StringProtocol) {
        var groups: [UInt16] = []
        groups.reserveCapacity(8)
        var gap: Int?                    // where `::` stands, as a group index
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 45 else { return nil }
        var i = 0
        if bytes.starts(with: [0x3a, 0x3a]) {
            gap = 0
            i = 2
            if i == bytes.count { self.init(high: 0, low: 0); return }
        } else if bytes[0] == 0x3a {
            return nil
        }
        while i < bytes.count {
            // A group: hex digits up to ':' or the end, or an IPv4 tail.
            var j = i, value: UInt32 = 0
            while j < bytes.count, let digit = Self.hexDigit(bytes[j]) {
                value = value << 4 | UInt32(digit)
                j += 1
                if j - i > 4 { break }
            }
            if j < bytes.count && bytes[j] == UInt8(ascii: ".") {
                // The IPv4 tail: the rest of the text, at most 6 groups before it.
                guard groups.count <= 6, let ipv4 = IPv4Address(String(decoding: bytes[i...], as: UTF8.self)) else { return nil }
                groups.append(UInt16(ipv4.value >> 16))
                groups.append(UInt16(ipv4.value & 0xffff))
                i = bytes.count
                break
            }
            let digits = j - i
            guard digits >= 1, digits <= 4 else { return nil }
            groups.append(UInt16(value))
            guard groups.count <= 8 else { return nil }
            i = j
            if i == bytes.count { break }
            guard bytes[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            if i < bytes.count && bytes[i] == UInt8(ascii: ":") {
                guard gap == nil else { return nil }
                gap = groups.count
                i += 1
                if i == bytes.count { break }
            } else if i == bytes.count {
                return nil                     // a trailing single ':'
            }
        }
        if let gap {
            guard groups.count <= 7 else { return nil }
            groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gap)
        }
        guard groups.count == 8 else { return nil }
        var high: UInt64 = 0, low: UInt64 = 0
        for k in 0..<4 { high = high << 16 | UInt64(groups[k]) }
        for k in 4..<8 { low = low << 16 | UInt64(groups[k]) }
        self.init(high: high, low: low)
    }

    @inline(__always)
    static func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The 16 bytes of the wire format.
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64($0))) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64($0))) }
    }

    /// The eight 16-bit groups.
    public var groups: [UInt16] {
        (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64($0))) }
            + (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64($0))) }
    }

    /// RFC 5952 text, as inet_ntop(3) writes it: lower case, no leading zeros,
    /// the longest run of two or more zero groups (the first of equal runs) as
    /// `::`, an IPv4-mapped address with its dotted quad (`::ffff:198.18.0.1`).
    public var description: String {
        if high == 0 && low >> 32 == 0xffff {
            return "::ffff:" + IPv4Address(UInt32(truncatingIfNeeded: low)).description
        }
        let groups = groups
        var bestStart = -1, bestLength = 0, k = 0
        while k < 8 {
            guard groups[k] == 0 else { k += 1; continue }
            var end = k
            while end < 8 && groups[end] == 0 { end += 1 }
            if end - k > bestLength && end - k >= 2 { bestStart = k; bestLength = end - k }
            k = end
        }
        func hex(_ range: Range<Int>) -> String { range.map { String(groups[$0], radix: 16) }.joined(separator: ":") }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }

    public var isUnspecified: Bool { high == 0 && low == 0 }
    public var isLoopback: Bool { high == 0 && low == 1 }
    /// ff00::/8.
    public var isMulticast: Bool { high >> 56 == 0xff }
    /// fe80::/10.
    public var isLinkLocal: Bool { high >> 54 == 0x3fa }
    /// ::ffff:0:0/96.
    public var isIPv4Mapped: Bool { high == 0 && low >> 32 == 0xffff }
    /// The IPv4 address of an IPv4-mapped one.
    public var ipv4Mapped: IPv4Address? { isIPv4Mapped ? IPv4Address(UInt32(truncatingIfNeeded: low)) : nil }

    public static func < (a: IPv6Address, b: IPv6Address) -> Bool { (a.high, a.low) < (b.high, b.low) }

    public static func parse(_ text: String) -> IPv6Address? { IPv6Address(text) }
    public static var expectedForm: String { "an IPv6 address (fd00::1)" }
}

/// An IPv6 prefix (`fd00:10:244:1::/64`). The address is kept as given;
/// `isCanonical` tells whether host bits are zero.
public struct IPv6Prefix: Hashable, Comparable, Sendable, TextCodable {
    public var address: IPv6Address
    public var length: UInt8

    public init(_ address: IPv6Address, _ length: UInt8) {
        precondition(length <= 128)
        self.address = address
        self.length = length
    }

    /// Parses `address/len` (len 0-128, no leading zeros beyond one digit).
    public init?(_ text: some StringProtocol) {
        guard let slash = text.utf8.firstIndex(of: UInt8(ascii: "/")), let address = IPv6Address(text[..<slash]) else { return nil }
        let digits = text.utf8[text.utf8.index(after: slash)...]
        guard (1...3).contains(digits.count), digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              digits.count == 1 || digits.first != UInt8(ascii: "0"),
              let length = Int(String(decoding: digits, as: UTF8.self)), length <= 128 else { return nil }
        self.init(address, UInt8(length))
    }

    /// The mask's halves.
    public var mask: (high: UInt64, low: UInt64) {
        let length = Int(self.length)
        let high: UInt64 = length >= 64 ? .max : (length == 0 ? 0 : UInt64.max << (64 - length))
        let low: UInt64 = length <= 64 ? 0 : (length == 128 ? .max : UInt64.max << (128 - length))
        return (high, low)
    }

    public var network: IPv6Address {
        let mask = mask
        return IPv6Address(high: address.high & mask.high, low: address.low & mask.low)
    }

    public var isCanonical: Bool { network == address }

    /// The last address of the prefix.
    public var last: IPv6Address {
        let mask = mask, network = network
        return IPv6Address(high: network.high | ~mask.high, low: network.low | ~mask.low)
    }

    public func contains(_ other: IPv6Address) -> Bool {
        let mask = mask
        return other.high & mask.high == address.high & mask.high && other.low & mask.low == address.low & mask.low
    }

    public func contains(_ other: IPv6Prefix) -> Bool { other.length >= length && contains(other.address) }
    public func overlaps(_ other: IPv6Prefix) -> Bool { contains(other.network) || other.contains(network) }

    public var description: String { "\(address)/\(length)" }

    public static func < (a: IPv6Prefix, b: IPv6Prefix) -> Bool { (a.address, a.length) < (b.address, b.length) }

    public static func parse(_ text: String) -> IPv6Prefix? { IPv6Prefix(text) }
    public static var expectedForm: String { "an IPv6 prefix (fd00:10:244::/56)" }
}

// The cheap hash of the integer-like keys (see `mixedHash`), for the IPv6 plane's
// dictionaries: both halves go through the seeded mix in turn, so two addresses
// collide for every seed only when they are equal (folding the halves into one
// word first would let a crafted set of leases share one bucket whatever the seed).
extension IPv6Address {
    @inlinable
    public func _rawHashValue(seed: Int) -> Int { mixedHash(low, seed: mixedHash(high, seed: seed)) }
}

extension IPv6Prefix {
    @inlinable
    public func _rawHashValue(seed: Int) -> Int {
        mixedHash(UInt64(length), seed: mixedHash(address.low, seed: mixedHash(address.high, seed: seed)))
    }
}
