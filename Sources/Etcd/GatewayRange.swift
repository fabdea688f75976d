import Foundation

// The answer to a range request (a get, the list of every lease), read straight
// from the answer's bytes: base64 decoded into the values' own arrays, no
// intermediate string per field. A list of 10,000 leases (3.2 MB) took
// JSONDecoder 170-250 ms on the shared 2-core machine, this reader 16-30 ms.

extension Gateway {
    /// What `list` and `get` take from a range answer.
    struct RangeAnswer: Equatable {
        var kvs: [KeyValue]
        /// The header's revision (0 when missing).
        var revision: Int64
        var more: Bool

        init(kvs: [KeyValue], revision: Int64, more: Bool) {
            self.kvs = kvs
            self.revision = revision
            self.more = more
        }

        /// Through JSONDecoder and `RangeResponse`: the answer for every document.
        init(decoding data: Data) throws {
            let response = try JSONDecoder().decode(RangeResponse.self, from: data)
            self.init(kvs: (response.kvs ?? []).map(\.keyValue), revision: response.header?.rev ?? 0, more: response.more == true)
        }

        /// `RangeReader`'s answer when it has one, else JSONDecoder's (and its error).
        init(_ bytes: UnsafeRawBufferPointer) throws {
            if let answer = RangeReader.read(bytes) {
                self = answer
            } else {
                try self.init(decoding: Data(bytes))
            }
        }
    }

    /// A range answer read from its bytes, for the answers etcd writes. It answers
    /// only when its answer is sure to be `RangeAnswer(decoding:)`'s (fields
    /// matched exactly, unknown ones skipped, null as missing), and gives nil for
    /// anything it does not read itself: an escape or a byte that is not ASCII in
    /// a string, invalid JSON, nesting deeper than 32, a known field of another
    /// type than etcd writes or given twice, base64 not in its canonical padded
    /// form, an int64 that is not `-?digits` in a string (at most 19 digits, in
    /// range). The caller then asks JSONDecoder, which gives the answer or the
    /// error. Fuzz/Targets/etcd.swift holds both to the same answer.
    struct RangeReader {
        let bytes: UnsafeBufferPointer<UInt8>
        var position = 0

        static let maximumDepth = 32
        static let quote = UInt8(ascii: "\"")

        static func read(_ raw: UnsafeRawBufferPointer) -> RangeAnswer? {
            var reader = RangeReader(bytes: raw.bindMemory(to: UInt8.self))
            return reader.answer()
        }

        mutating func answer() -> RangeAnswer? {
            var kvs: [KeyValue] = []
            var revision: Int64 = 0
            var more = false
            var seen: UInt8 = 0
            skipSpace()
            let complete = members(depth: 0) { (reader: inout RangeReader, key: Range<Int>) -> Bool in
                switch reader.field(key, Self.answerFields, seen: &seen) {
                case 0:
                    if reader.null() { return true }
                    var headerSeen: UInt8 = 0
                    return reader.members(depth: 1) { (reader: inout RangeReader, key: Range<Int>) -> Bool in
                        switch reader.field(key, Self.headerFields, seen: &headerSeen) {
                        case 0: return reader.int64(&revision)
                        case nil: return false
                        default: return reader.skipValue(depth: 2)
                        }
                    }
                case 1:
                    if reader.null() { return true }
                    return reader.elements(depth: 1) { (reader: inout RangeReader) -> Bool in
                        guard let kv = reader.keyValue() else { return false }
                        kvs.append(kv)
                        return true
                    }
                case 2:
                    if reader.null() { return true }
                    if reader.literal("true") {
                        more = true
                        return true
                    }
                    return reader.literal("false")
                case 3:
                    var count: Int64 = 0
                    return reader.int64(&count)
                case nil: return false
                default: return reader.skipValue(depth: 1)
                }
            }
            guard complete else { return nil }
            skipSpace()
            guard position == bytes.count else { return nil }
            return RangeAnswer(kvs: kvs, revision: revision, more: more)
        }

        /// One element of `kvs`.
        mutating func keyValue() -> KeyValue? {
            var seen: UInt8 = 0
            var key: String?, value: [UInt8]?
            var createRevision: Int64 = 0, modRevision: Int64 = 0, version: Int64 = 0, lease: Int64 = 0
            let complete = members(depth: 2) { (reader: inout RangeReader, name: Range<Int>) -> Bool in
                switch reader.field(name, Self.kvFields, seen: &seen) {
                case 0:
                    if reader.null() { return true }
                    guard let (text, padding, length) = reader.base64() else { return false }
                    var valid = true
                    // Decoded into the String's own storage (invalid UTF-8 repaired, as String(decoding:) does).
                    key = String(unsafeUninitializedCapacity: length) { out in
                        valid = Self.decode(reader.bytes, text, padding: padding, into: out)
                        return valid ? length : 0
                    }
                    return valid
                case 1:
                    if reader.null() { return true }
                    guard let (text, padding, length) = reader.base64() else { return false }
                    var valid = true
                    value = [UInt8](unsafeUninitializedCapacity: length) { out, initialized in
                        valid = Self.decode(reader.bytes, text, padding: padding, into: out)
                        initialized = valid ? length : 0
                    }
                    return valid
                case 2: return reader.int64(&createRevision)
                case 3: return reader.int64(&modRevision)
                case 4: return reader.int64(&version)
                case 5: return reader.int64(&lease)
                case nil: return false
                default: return reader.skipValue(depth: 3)
                }
            }
            guard complete else { return nil }
            return KeyValue(key: key ?? "", value: value ?? [], createRevision: createRevision, modRevision: modRevision,
                            version: version, lease: lease)
        }

        // What RangeResponse, Header and KV declare: every other key is skipped, as JSONDecoder does.
        static let answerFields: [StaticString] = ["header", "kvs", "more", "count"]
        static let headerFields: [StaticString] = ["revision"]
        static let kvFields: [StaticString] = ["key", "value", "create_revision", "mod_revision", "version", "lease"]

        /// Which of `names` the key is (exactly, as JSONDecoder matches): its index,
        /// -1 for none of them, nil for one already seen in this object.
        func field(_ key: Range<Int>, _ names: [StaticString], seen: inout UInt8) -> Int? {
            for (index, name) in names.enumerated() where name.utf8CodeUnitCount == key.count
                && memcmp(bytes.baseAddress! + key.lowerBound, name.utf8Start, key.count) == 0 {
                let bit = UInt8(1) << index
                guard seen & bit == 0 else { return nil }
                seen |= bit
                return index
            }
            return -1
        }

        // MARK: values

        /// Steps over `null` if it is next.
        mutating func null() -> Bool { literal("null") }

        /// An int64 as etcd writes one: `"-?digits"` (at most 19, in Int64's range),
        /// or null (left as it is).
        mutating func int64(_ value: inout Int64) -> Bool {
            if null() { return true }
            guard position < bytes.count, bytes[position] == Self.quote, let text = string() else { return false }
            var index = text.lowerBound
            let negative = index < text.upperBound && bytes[index] == UInt8(ascii: "-")
            if negative { index += 1 }
            // 19 digits fit in a UInt64 (10^19 < 2^64); etcd's lease IDs take all 19.
            guard index < text.upperBound, text.upperBound - index <= 19 else { return false }
            var magnitude: UInt64 = 0
            while index < text.upperBound {
                let digit = bytes[index] &- UInt8(ascii: "0")
                guard digit < 10 else { return false }
                magnitude = magnitude * 10 + UInt64(digit)
                index += 1
            }
            if negative {
                guard magnitude <= UInt64(Int64.max) + 1 else { return false }
                value = Int64(truncatingIfNeeded: 0 &- magnitude)
            } else {
                guard magnitude <= UInt64(Int64.max) else { return false }
                value = Int64(magnitude)
            }
            return true
        }

        /// Steps over a base64 string: its text, how many `=` end it, and how
        /// many bytes it holds; nil when its length is not a multiple of 4.
        mutating func base64() -> (text: Range<Int>, padding: Int, length: Int)? {
            guard position < bytes.count, bytes[position] == Self.quote, let text = string(), text.count % 4 == 0 else { return nil }
            var padding = 0
            if !text.isEmpty && bytes[text.upperBound - 1] == UInt8(ascii: "=") {
                padding = bytes[text.upperBound - 2] == UInt8(ascii: "=") ? 2 : 1
            }
            return (text, padding, text.count / 4 * 3 - padding)
        }

        /// Decodes base64 (the standard alphabet, padded, unused bits zero) into
        /// `out`, which holds exactly its bytes; false for anything else.
        static func decode(_ bytes: UnsafeBufferPointer<UInt8>, _ text: Range<Int>, padding: Int,
                           into out: UnsafeMutableBufferPointer<UInt8>) -> Bool {
            sextets.withUnsafeBufferPointer { table in
                var at = 0
                var index = text.lowerBound
                let whole = text.upperBound - (padding > 0 ? 4 : 0)
                while index < whole {
                    let a = table[Int(bytes[index])], b = table[Int(bytes[index + 1])]
                    let c = table[Int(bytes[index + 2])], d = table[Int(bytes[index + 3])]
                    guard (a | b | c | d) < 64 else { return false }
                    let group = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                    out[at] = UInt8(truncatingIfNeeded: group >> 16)
                    out[at + 1] = UInt8(truncatingIfNeeded: group >> 8)
                    out[at + 2] = UInt8(truncatingIfNeeded: group)
                    at += 3
                    index += 4
                }
                guard padding > 0 else { return true }
                let a = table[Int(bytes[index])], b = table[Int(bytes[index + 1])]
                if padding == 2 {
                    // `xx==`: one byte; the low four bits of the second digit are unused.
                    guard (a | b) < 64, b & 0x0f == 0 else { return false }
                    out[at] = a << 2 | b >> 4
                    return true
                }
                // `xxx=`: two bytes; the low two bits of the third digit are unused.
                let c = table[Int(bytes[index + 2])]
                guard (a | b | c) < 64, c & 0x03 == 0 else { return false }
                out[at] = a << 2 | b >> 4
                out[at + 1] = (b & 0x0f) << 4 | c >> 2
                return true
            }
        }

        /// Each byte's value as a base64 digit, 0xff for a byte that is not one ('=' included).
        static let sextets: [UInt8] = {
            var table = [UInt8](repeating: 0xff, count: 256)
            for (value, byte) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
                table[Int(byte)] = UInt8(value)
            }
            return table
        }()

        // MARK: the grammar (RFC 8259; stricter than JSONDecoder where it is easier to be)

        mutating func skipSpace() {
            while position < bytes.count {
                switch bytes[position] {
                case 0x20, 0x0a, 0x0d, 0x09: position += 1
                default: return
                }
            }
        }

        /// The object at `position`: `member` reads each member's value (from its
        /// first byte), given its key; false when the object, or a member, is not
        /// one this reader reads.
        mutating func members(depth: Int, _ member: (inout RangeReader, Range<Int>) -> Bool) -> Bool {
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
                guard member(&self, key) else { return false }
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

        /// The array at `position`, `element` reading each element.
        mutating func elements(depth: Int, _ element: (inout RangeReader) -> Bool) -> Bool {
            guard depth < Self.maximumDepth, position < bytes.count, bytes[position] == UInt8(ascii: "[") else { return false }
            position += 1
            skipSpace()
            if position < bytes.count && bytes[position] == UInt8(ascii: "]") {
                position += 1
                return true
            }
            while true {
                guard element(&self) else { return false }
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

        /// Steps over any value.
        mutating func skipValue(depth: Int) -> Bool {
            guard depth < Self.maximumDepth, position < bytes.count else { return false }
            switch bytes[position] {
            case UInt8(ascii: "{"): return members(depth: depth) { reader, _ in reader.skipValue(depth: depth + 1) }
            case UInt8(ascii: "["): return elements(depth: depth) { reader in reader.skipValue(depth: depth + 1) }
            case Self.quote: return string() != nil
            case UInt8(ascii: "t"): return literal("true")
            case UInt8(ascii: "f"): return literal("false")
            case UInt8(ascii: "n"): return literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number()
            default: return false
            }
        }

        /// Steps over `word` if it is next.
        mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard position + count <= bytes.count, memcmp(bytes.baseAddress! + position, word.utf8Start, count) == 0 else { return false }
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
}
