import Model

/// A lease value read straight from its bytes: one pass over the JSON that keeps
/// where the five fields a vxlan lease needs are (PublicIP, PublicIPv6,
/// BackendType, BackendData, BackendV6Data; in BackendData, VtepMAC and VNI),
/// and reads just those. No tree, no string per key: a node joining 10,000
/// leases checks every one of them before its first pass.
///
/// It answers only when its answer is sure to be `LeaseAttributes.parseFields`'s
/// (the general JSONFields reader, flanneld's dialect): keys match in any ASCII
/// case and the last match wins, as there; anything else it does not read itself
/// gives nil, and the caller asks the general reader, which then gives the
/// attributes or the error naming the field. nil for: an escape or a byte that is
/// not ASCII in any string, a document that is not valid JSON (or nested deeper
/// than 32), a field missing or of an unexpected type, a VNI not written as plain
/// digits in range, a PublicIP, VtepMAC or BackendType that does not parse.
/// Fuzz/Targets/lease.swift holds both readers to the same answer.
struct LeaseReader {
    let bytes: UnsafeBufferPointer<UInt8>
    var position: Int

    static let maximumDepth = 32

    /// A member's value: its first byte (`"` for a string, `{` an object, `n`
    /// null, anything else another kind) and its bytes (a string's without its
    /// quotes).
    struct Span {
        var kind: UInt8
        var start: Int
        var end: Int
    }

    /// The last value of each field that matters at the top level.
    struct Fields {
        var publicIP: Span?
        var publicIPv6: Span?
        var backendType: Span?
        var backendData: Span?
        var backendV6Data: Span?
    }

    /// The attributes, when the value is a lease this reader reads on its own.
    static func attributes(_ bytes: UnsafeBufferPointer<UInt8>) -> LeaseAttributes? {
        attributes(bytes, ipv6Only: false)
    }

    /// The same; `ipv6Only`: a lease of an IPv6-only network, whose BackendData is
    /// not read (`LeaseAttributes.parse(_:key:backendType:ipv6Only:)`).
    static func attributes(_ bytes: UnsafeBufferPointer<UInt8>, ipv6Only: Bool) -> LeaseAttributes? {
        var reader = LeaseReader(bytes: bytes, position: 0)
        reader.skipSpace()
        var fields = Fields()
        let complete = reader.members(depth: 0) { key, value in
            switch key.count {
            case 8: if fold(bytes, key, "PublicIP") { fields.publicIP = value }
            case 10: if fold(bytes, key, "PublicIPv6") { fields.publicIPv6 = value }
            case 11:
                if fold(bytes, key, "BackendType") {
                    fields.backendType = value
                } else if fold(bytes, key, "BackendData") {
                    fields.backendData = value
                }
            case 13: if fold(bytes, key, "BackendV6Data") { fields.backendV6Data = value }
            default: break
            }
        }
        guard complete else { return nil }
        reader.skipSpace()
        guard reader.position == bytes.count else { return nil }

        guard let ip = fields.publicIP, ip.kind == quote, let publicIP = ipv4(bytes, ip) else { return nil }
        var publicIPv6: IPv6Address?
        if let span = fields.publicIPv6, span.kind != UInt8(ascii: "n") {
            guard span.kind == quote else { return nil }
            // Go's net.ParseIP: IPv6 text, or IPv4 (kept as ::ffff:a.b.c.d), as parseFields reads it.
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[span.start..<span.end]), as: UTF8.self)
            guard let address = IPv6Address(text) ?? IPv4Address(text).flatMap({ IPv6Address("::ffff:\($0)") }) else { return nil }
            publicIPv6 = address
        }
        guard let type = fields.backendType, type.kind == quote, equal(bytes, type, "vxlan") else { return nil }
        var vtep: LeaseAttributes.VTEP?
        if !ipv6Only {
            guard let data = fields.backendData, data.kind == UInt8(ascii: "{"), let parsed = Self.vtep(bytes, data) else { return nil }
            vtep = parsed
        }
        var v6: LeaseAttributes.VTEP?
        if let span = fields.backendV6Data, span.kind != UInt8(ascii: "n") {
            // parseFields drops a broken one; which breakage is for it to say.
            guard span.kind == UInt8(ascii: "{"), let parsed = Self.vtep(bytes, span) else { return nil }
            v6 = parsed
        }
        return LeaseAttributes(publicIP: publicIP, backendType: "vxlan", vni: vtep?.vni, vtepMAC: vtep?.vtepMAC,
                               publicIPv6: publicIPv6, backendV6: v6)
    }

    /// `{"VNI": 1, "VtepMAC": "…"}` at `span` (an object the first pass found valid).
    static func vtep(_ bytes: UnsafeBufferPointer<UInt8>, _ span: Span) -> LeaseAttributes.VTEP? {
        var reader = LeaseReader(bytes: bytes, position: span.start)
        var mac: Span?, vni: Span?
        let complete = reader.members(depth: 0) { key, value in
            if key.count == 7 && fold(bytes, key, "VtepMAC") {
                mac = value
            } else if key.count == 3 && fold(bytes, key, "VNI") {
                vni = value
            }
        }
        guard complete, let mac, mac.kind == quote, let vtepMAC = macAddress(bytes, mac) else { return nil }
        guard let vni, vni.kind != UInt8(ascii: "n") else { return LeaseAttributes.VTEP(vni: nil, vtepMAC: vtepMAC) }
        // Plain digits only (a valid number with no sign, fraction or exponent), at most 16,777,215.
        guard vni.kind >= UInt8(ascii: "0"), vni.kind <= UInt8(ascii: "9"), vni.end - vni.start <= 8 else { return nil }
        var value: UInt32 = 0
        for index in vni.start..<vni.end {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            value = value * 10 + UInt32(digit)
        }
        guard value <= 16_777_215 else { return nil }
        return LeaseAttributes.VTEP(vni: value, vtepMAC: vtepMAC)
    }

    /// A dotted quad as `IPv4Address` reads it (at most 15 bytes: a string that
    /// short is kept inline, nothing is allocated).
    static func ipv4(_ bytes: UnsafeBufferPointer<UInt8>, _ span: Span) -> IPv4Address? {
        guard span.end - span.start <= 15 else { return nil }
        return IPv4Address(String(decoding: UnsafeBufferPointer(rebasing: bytes[span.start..<span.end]), as: UTF8.self))
    }

    /// `0e:01:c6:12:00:02` (each separator `:` or `-`, hex digits in any case), as `MACAddress` reads it.
    static func macAddress(_ bytes: UnsafeBufferPointer<UInt8>, _ span: Span) -> MACAddress? {
        guard span.end - span.start == 17 else { return nil }
        var value: UInt64 = 0
        for pair in 0..<6 {
            let at = span.start + pair * 3
            if pair > 0 {
                let separator = bytes[at - 1]
                guard separator == UInt8(ascii: ":") || separator == UInt8(ascii: "-") else { return nil }
            }
            guard let high = hexDigit(bytes[at]), let low = hexDigit(bytes[at + 1]) else { return nil }
            value = value << 8 | UInt64(high << 4 | low)
        }
        return MACAddress(value: value)
    }

    static func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The key equals `name` with ASCII letters in any case (`JSONDialect.equalFold`
    /// for ASCII keys; this reader sees no other).
    static func fold(_ bytes: UnsafeBufferPointer<UInt8>, _ key: Range<Int>, _ name: StaticString) -> Bool {
        guard key.count == name.utf8CodeUnitCount else { return false }
        let letters = name.utf8Start
        for offset in 0..<key.count {
            let p = bytes[key.lowerBound + offset], q = letters[offset]
            if p != q {
                let lower = p | 0x20
                guard lower == q | 0x20, lower >= UInt8(ascii: "a"), lower <= UInt8(ascii: "z") else { return false }
            }
        }
        return true
    }

    /// The string at `span` is exactly `text`.
    static func equal(_ bytes: UnsafeBufferPointer<UInt8>, _ span: Span, _ text: StaticString) -> Bool {
        guard span.end - span.start == text.utf8CodeUnitCount else { return false }
        return (0..<text.utf8CodeUnitCount).allSatisfy { bytes[span.start + $0] == text.utf8Start[$0] }
    }

    static let quote = UInt8(ascii: "\"")

    // MARK: the grammar (RFC 8259; stricter than JSONParser where it is easier to be)

    mutating func skipSpace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x0a, 0x0d, 0x09: position += 1
            default: return
            }
        }
    }

    /// The object at `position`, each member given to `body` as it is read; false
    /// when the object is not one this reader reads (see the type's comment).
    mutating func members(depth: Int, _ body: (Range<Int>, Span) -> Void) -> Bool {
        guard depth < Self.maximumDepth, position < bytes.count, bytes[position] == UInt8(ascii: "{") else { return false }
        position += 1
        skipSpace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "}") {
            position += 1
            return true
        }
        while true {
            guard position < bytes.count, bytes[position] == Self.quote, let key = string() else { return false }
            skipSpace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { return false }
            position += 1
            skipSpace()
            guard position < bytes.count else { return false }
            let kind = bytes[position]
            var span = Span(kind: kind, start: position, end: position)
            if kind == Self.quote {
                guard let text = string() else { return false }
                span.start = text.lowerBound
                span.end = text.upperBound
            } else {
                guard skipValue(depth: depth + 1) else { return false }
                span.end = position
            }
            body(key, span)
            skipSpace()
            guard position < bytes.count else { return false }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
                skipSpace()
                continue
            }
            guard bytes[position] == UInt8(ascii: "}") else { return false }
            position += 1
            return true
        }
    }

    /// Steps over the string at `position` (its opening quote); its contents, or
    /// nil for an escape, a control character, a byte that is not ASCII, or the end.
    mutating func string() -> Range<Int>? {
        position += 1
        let start = position
        while position < bytes.count {
            let byte = bytes[position]
            if byte == Self.quote {
                position += 1
                return start..<(position - 1)
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 || byte >= 0x80 { return nil }
            position += 1
        }
        return nil
    }

    /// Steps over any value; false where `members` would be.
    mutating func skipValue(depth: Int) -> Bool {
        guard depth < Self.maximumDepth, position < bytes.count else { return false }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            return members(depth: depth) { _, _ in }
        case UInt8(ascii: "["):
            position += 1
            skipSpace()
            if position < bytes.count && bytes[position] == UInt8(ascii: "]") {
                position += 1
                return true
            }
            while true {
                guard skipValue(depth: depth + 1) else { return false }
                skipSpace()
                guard position < bytes.count else { return false }
                if bytes[position] == UInt8(ascii: ",") {
                    position += 1
                    skipSpace()
                    continue
                }
                guard bytes[position] == UInt8(ascii: "]") else { return false }
                position += 1
                return true
            }
        case Self.quote:
            return string() != nil
        case UInt8(ascii: "t"): return literal("true")
        case UInt8(ascii: "f"): return literal("false")
        case UInt8(ascii: "n"): return literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number()
        default: return false
        }
    }

    mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard position + count <= bytes.count else { return false }
        for offset in 0..<count where bytes[position + offset] != word.utf8Start[offset] { return false }
        position += count
        return true
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    mutating func number() -> Bool {
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integer = digits()
        guard integer > 0, integer == 1 || bytes[position - integer] != UInt8(ascii: "0") else { return false }
        if position < bytes.count && bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { return false }
        }
        if position < bytes.count && bytes[position] | 0x20 == UInt8(ascii: "e") {
            position += 1
            if position < bytes.count && (bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")) { position += 1 }
            guard digits() > 0 else { return false }
        }
        return true
    }

    mutating func digits() -> Int {
        let start = position
        while position < bytes.count && bytes[position] >= UInt8(ascii: "0") && bytes[position] <= UInt8(ascii: "9") { position += 1 }
        return position - start
    }
}
