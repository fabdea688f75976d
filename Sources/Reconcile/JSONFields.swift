import Foundation
import Model

/// A configuration error that names the file and the field at fault.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file (or registry key) the value came from.
    public var source: String
    /// The field path (`nodes[2].subnet`), empty for the whole document.
    public var field: String
    public var message: String

    public init(source: String, field: String, message: String) {
        self.source = source
        self.field = field
        self.message = message
    }

    public var description: String {
        let source = escaped(self.source)
        return field.isEmpty ? "\(source): \(message)" : "\(source): \(field): \(message)"
    }
}

// MARK: - Echoing what a user (or an attacker) wrote

/// `text` with everything that would not print as itself escaped JSON-style: quotes
/// and backslashes, control characters (NUL, ESC, DEL, C1), line and paragraph
/// separators, and invisible format characters (bidi overrides, zero-width
/// characters). Longer than `limit` characters: cut, with the full length said.
public func escaped(_ text: String, limit: Int = 96, quotes: Bool = true) -> String {
    var result = ""
    var count = 0
    for scalar in text.unicodeScalars {
        if count == limit {
            return result + "... (\(text.unicodeScalars.count) characters)"
        }
        count += 1
        switch scalar {
        case "\"" where quotes: result += "\\\""
        case "\\" where quotes: result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            let v = scalar.value
            let invisible = v < 0x20 || (0x7f...0x9f).contains(v) || v == 0x2028 || v == 0x2029
                || scalar.properties.generalCategory == .format || scalar.properties.generalCategory == .privateUse
                || scalar.properties.generalCategory == .unassigned
            if invisible {
                result += v <= 0xffff ? "\\u" + hex(v, 4) : "\\u{" + hex(v, 0) + "}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result
}

/// `text` in double quotes, escaped (see `escaped`): for values echoed in messages.
public func quoted(_ text: String, limit: Int = 96) -> String { "\"" + escaped(text, limit: limit) + "\"" }

private func hex(_ value: UInt32, _ width: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}

// MARK: - JSON values

/// A JSON value as written: numbers keep their literal text (so a message can echo
/// `1e20` as given), objects keep every member in order, duplicates included
/// (which one counts is the dialect's choice).
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// What a message calls this kind of value.
    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// A JSON object's members in document order.
public struct JSONObject: Sendable, Hashable {
    public var keys: [String]
    public var values: [JSONValue]

    public init(keys: [String] = [], values: [JSONValue] = []) {
        self.keys = keys
        self.values = values
    }

    /// The member named `key` under `dialect`'s rules: exactly `key` (strict, where
    /// duplicates were refused when parsing), or the last key that matches it
    /// case-insensitively (flanneld).
    public func value(_ key: String, dialect: JSONDialect) -> JSONValue? {
        switch dialect {
        case .strict:
            guard let index = keys.lastIndex(of: key) else { return nil }
            return values[index]
        case .flanneld:
            // Go sets the field once per matching key, in order: the last match wins.
            guard let index = keys.lastIndex(where: { JSONDialect.equalFold($0, key) }) else { return nil }
            return values[index]
        }
    }
}

/// How a document's keys are read.
public enum JSONDialect: Sendable, Hashable {
    /// Our own files: a key given twice is an error naming it, keys match exactly.
    case strict
    /// Values flanneld also reads (net-conf and leases in etcd), read as Go's
    /// encoding/json reads them: of duplicate keys the last wins, and a key
    /// matches a field case-insensitively (`"vni"` sets `VNI`).
    case flanneld

    /// ASCII case folding (Go folds Unicode too; no flannel key has non-ASCII letters).
    static func fold(_ key: String) -> String {
        key.utf8.contains { $0 >= 0x41 && $0 <= 0x5a } ? key.lowercased() : key
    }

    /// `fold(a) == fold(b)`, without building either string when both are ASCII
    /// (every flannel field name, and every key of a lease flanneld writes): a
    /// lease is a handful of lookups, each comparing every key.
    static func equalFold(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        var x = a.utf8.makeIterator(), y = b.utf8.makeIterator()
        while true {
            switch (x.next(), y.next()) {
            case (nil, nil): return true
            case (let p?, let q?):
                if p >= 0x80 || q >= 0x80 { return fold(a) == fold(b) }
                if p != q {
                    // The same letter in the other case, or not equal.
                    let lower = p | 0x20
                    guard lower == q | 0x20, lower >= 0x61, lower <= 0x7a else { return false }
                }
            default:
                // Different lengths: still the slow rule if either has non-ASCII bytes ahead.
                return a.utf8.contains { $0 >= 0x80 } || b.utf8.contains { $0 >= 0x80 } ? fold(a) == fold(b) : false
            }
        }
    }
}

// MARK: - The parser

/// An RFC 8259 parser whose errors say where: line, column, an excerpt, and the
/// path of the value being read. Nesting is limited (a hostile document must not
/// exhaust the stack); invalid UTF-8 and raw control characters in strings are errors.
public struct JSONParser {
    public static let maximumDepth = 64

    enum Step { case key(String), index(Int) }

    let bytes: UnsafeBufferPointer<UInt8>
    let source: String
    let dialect: JSONDialect
    var position = 0
    var path: [Step] = []

    /// Parses a whole document.
    public static func parse(_ data: Data, source: String, dialect: JSONDialect) throws(ConfigError) -> JSONValue {
        let result: Result<JSONValue, ConfigError> = data.withUnsafeBytes { raw in
            var parser = JSONParser(bytes: raw.bindMemory(to: UInt8.self), source: source, dialect: dialect)
            return Result { () throws(ConfigError) -> JSONValue in try parser.document() }
        }
        return try result.get()
    }

    init(bytes: UnsafeBufferPointer<UInt8>, source: String, dialect: JSONDialect) {
        self.bytes = bytes
        self.source = source
        self.dialect = dialect
    }

    mutating func document() throws(ConfigError) -> JSONValue {
        if bytes.count >= 3 && bytes[0] == 0xef && bytes[1] == 0xbb && bytes[2] == 0xbf {
            throw fail("starts with a UTF-8 byte order mark (EF BB BF), which JSON does not allow: save it without one")
        }
        skipSpace()
        guard position < bytes.count else {
            throw ConfigError(source: source, field: "", message: "invalid JSON: the document is empty (only white space)")
        }
        let value = try parseValue()
        skipSpace()
        if position < bytes.count {
            throw fail("unexpected \(describeHere()) after the end of the document")
        }
        return value
    }

    // MARK: errors

    /// The path of the value being read: `nodes[2].publicIP`.
    var pathText: String {
        var text = ""
        for step in path {
            switch step {
            case .index(let index): text += "[\(index)]"
            case .key(let key): text += text.isEmpty ? escaped(key) : "." + escaped(key)
            }
        }
        return text
    }

    /// Line and column (1-based, counted in characters) of a byte offset.
    func location(_ offset: Int) -> (line: Int, column: Int) {
        var line = 1, column = 1
        for i in 0..<min(offset, bytes.count) {
            if bytes[i] == 0x0a {
                line += 1
                column = 1
            } else if bytes[i] & 0xc0 != 0x80 {
                column += 1
            }
        }
        return (line, column)
    }

    /// Up to 40 bytes of the line before `offset` and 20 after, escaped.
    func excerpt(_ offset: Int) -> String {
        var start = max(0, offset - 40), end = min(bytes.count, offset + 20)
        if let newline = (start..<min(offset, bytes.count)).last(where: { bytes[$0] == 0x0a }) { start = newline + 1 }
        if let newline = (min(offset, bytes.count)..<end).first(where: { bytes[$0] == 0x0a }) { end = newline }
        // Whole UTF-8 sequences only.
        while start < offset && start < bytes.count && bytes[start] & 0xc0 == 0x80 { start += 1 }
        while end < bytes.count && end > offset && bytes[end] & 0xc0 == 0x80 { end -= 1 }
        let before = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<min(offset, bytes.count)]), as: UTF8.self)
        let after = offset < end ? String(decoding: UnsafeBufferPointer(rebasing: bytes[offset..<end]), as: UTF8.self) : ""
        let shown = escaped(String(before.drop { $0 == " " || $0 == "\t" }), limit: 40, quotes: false)
        return (shown.isEmpty ? "" : shown + " ") + ">>> " + escaped(after, limit: 20, quotes: false)
    }

    func fail(_ message: String, at offset: Int? = nil) -> ConfigError {
        let offset = offset ?? position
        let (line, column) = location(offset)
        let inside = path.isEmpty ? "" : " (in \(pathText))"
        let near = bytes.isEmpty ? "" : "; here: \(excerpt(offset))"
        return ConfigError(source: source, field: "", message: "invalid JSON at line \(line), column \(column)\(inside): \(message)\(near)")
    }

    /// The character at the current position, for "found ..." messages.
    func describeHere() -> String {
        guard position < bytes.count else { return "end of the document" }
        let byte = bytes[position]
        if byte < 0x80 { return quoted(String(UnicodeScalar(byte))) }
        var end = position + 1
        while end < bytes.count && end - position < 4 && bytes[end] & 0xc0 == 0x80 { end += 1 }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[position..<end]), as: UTF8.self)
        return text.unicodeScalars.first == "\u{FFFD}" ? "the byte 0x\(hex(UInt32(byte), 2)) (not UTF-8)" : quoted(text)
    }

    // MARK: grammar

    mutating func skipSpace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x0a, 0x0d, 0x09: position += 1
            default: return
            }
        }
    }

    mutating func parseValue() throws(ConfigError) -> JSONValue {
        guard position < bytes.count else { throw endOfDocument("a value") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw fail("expected a value, found \(describeHere())")
        }
    }

    /// The open containers, for "not closed" messages.
    var opened: [Int] = []

    func endOfDocument(_ expected: String) -> ConfigError {
        var message = "the document ends where \(expected) was expected (truncated?)"
        if let open = opened.last {
            let (line, column) = location(open)
            let what = bytes[open] == UInt8(ascii: "{") ? "an object" : "an array"
            message += "; \(what) opened at line \(line), column \(column) is not closed"
        }
        return fail(message)
    }

    mutating func literal(_ word: StaticString) throws(ConfigError) {
        let start = position
        let count = word.utf8CodeUnitCount
        guard position + count <= bytes.count,
              memcmp(bytes.baseAddress! + position, word.utf8Start, count) == 0 else {
            throw fail("expected a value, found \(describeHere())", at: start)
        }
        position += count
    }

    mutating func enter(_ offset: Int) throws(ConfigError) {
        guard opened.count < Self.maximumDepth else {
            throw fail("nested deeper than \(Self.maximumDepth) levels", at: offset)
        }
        opened.append(offset)
    }

    mutating func parseObject() throws(ConfigError) -> JSONValue {
        try enter(position)
        position += 1
        var object = JSONObject()
        var seen: Set<String>?
        skipSpace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "}") {
            position += 1
            opened.removeLast()
            return .object(object)
        }
        // An inventory's node has three to five keys: one allocation each, not
        // one per doubling.
        object.keys.reserveCapacity(4)
        object.values.reserveCapacity(4)
        while true {
            skipSpace()
            guard position < bytes.count else { throw endOfDocument("a key") }
            guard bytes[position] == UInt8(ascii: "\"") else {
                throw fail("expected a key in double quotes, found \(describeHere())")
            }
            let keyStart = position
            let key = try parseString()
            path.append(.key(key))
            if dialect == .strict {
                // Few keys: compare; many: hash.
                let duplicate: Bool
                if object.keys.count < 12 {
                    duplicate = object.keys.contains(key)
                } else {
                    if seen == nil { seen = Set(object.keys) }
                    duplicate = !seen!.insert(key).inserted
                }
                if duplicate {
                    let (line, column) = location(keyStart)
                    throw ConfigError(source: source, field: pathText,
                                      message: "duplicate key (again at line \(line), column \(column); each key may appear once)")
                }
            }
            skipSpace()
            guard position < bytes.count else { throw endOfDocument("':' after the key") }
            guard bytes[position] == UInt8(ascii: ":") else { throw fail("expected ':' after the key, found \(describeHere())") }
            position += 1
            skipSpace()
            let value = try parseValue()
            path.removeLast()
            object.keys.append(key)
            object.values.append(value)
            seen?.insert(key)
            skipSpace()
            guard position < bytes.count else { throw endOfDocument("',' or '}'") }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
                continue
            }
            if bytes[position] == UInt8(ascii: "}") {
                position += 1
                break
            }
            throw fail("expected ',' or '}' after the member \(quoted(key, limit: 40)), found \(describeHere())")
        }
        opened.removeLast()
        return .object(object)
    }

    mutating func parseArray() throws(ConfigError) -> JSONValue {
        try enter(position)
        position += 1
        var array: [JSONValue] = []
        skipSpace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "]") {
            position += 1
            opened.removeLast()
            return .array(array)
        }
        path.append(.index(0))
        while true {
            path[path.count - 1] = .index(array.count)
            skipSpace()
            array.append(try parseValue())
            skipSpace()
            guard position < bytes.count else { throw endOfDocument("',' or ']'") }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
                continue
            }
            if bytes[position] == UInt8(ascii: "]") {
                position += 1
                break
            }
            throw fail("expected ',' or ']' after an element, found \(describeHere())")
        }
        path.removeLast()
        opened.removeLast()
        return .array(array)
    }

    mutating func parseNumber() throws(ConfigError) -> String {
        let start = position
        func digits() -> Int {
            let from = position
            while position < bytes.count && bytes[position] >= 0x30 && bytes[position] <= 0x39 { position += 1 }
            return position - from
        }
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integerStart = position
        let count = digits()
        guard count > 0 else { throw fail("expected a digit after '-', found \(describeHere())") }
        if count > 1 && bytes[integerStart] == UInt8(ascii: "0") {
            throw fail("a number must not start with 0 (leading zeros are not JSON)", at: integerStart)
        }
        if position < bytes.count && bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { throw fail("expected a digit after '.', found \(describeHere())") }
        }
        if position < bytes.count && (bytes[position] | 0x20) == UInt8(ascii: "e") {
            position += 1
            if position < bytes.count && (bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")) { position += 1 }
            guard digits() > 0 else { throw fail("expected a digit in the exponent, found \(describeHere())") }
        }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
    }

    mutating func parseString() throws(ConfigError) -> String {
        let start = position
        position += 1
        // Fast path: no escapes, ASCII or valid UTF-8.
        var scan = position
        var ascii = true
        while scan < bytes.count {
            let byte = bytes[scan]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 { break }
            if byte >= 0x80 { ascii = false }
            scan += 1
        }
        if scan < bytes.count && bytes[scan] == UInt8(ascii: "\"") {
            let slice = UnsafeBufferPointer(rebasing: bytes[position..<scan])
            if ascii {
                position = scan + 1
                return String(decoding: slice, as: UTF8.self)
            }
            if let text = String(validating: slice, as: UTF8.self) {
                position = scan + 1
                return text
            }
        }
        // Slow path: escapes, control characters, invalid UTF-8.
        var utf8: [UInt8] = []
        utf8.reserveCapacity(scan - position + 16)
        while true {
            guard position < bytes.count else {
                let (line, column) = location(start)
                throw fail("the document ends inside a string (opened at line \(line), column \(column))")
            }
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                guard let text = String(validating: utf8, as: UTF8.self) else {
                    throw fail("a string that is not valid UTF-8", at: start)
                }
                return text
            case UInt8(ascii: "\\"):
                position += 1
                guard position < bytes.count else { continue }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0c)
                case UInt8(ascii: "n"): utf8.append(0x0a)
                case UInt8(ascii: "r"): utf8.append(0x0d)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xd800...0xdbff).contains(scalar), position + 1 < bytes.count,
                       bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
                        let save = position
                        position += 2
                        let low = try hex4()
                        if (0xdc00...0xdfff).contains(low) {
                            scalar = 0x10000 + ((scalar - 0xd800) << 10) + (low - 0xdc00)
                        } else {
                            position = save
                        }
                    }
                    // A lone surrogate becomes U+FFFD, as Go's encoding/json does.
                    let unicode = UnicodeScalar(scalar) ?? "\u{FFFD}"
                    utf8.append(contentsOf: Array(String(unicode).utf8))
                default:
                    position -= 1
                    throw fail("\\\(describeHere().dropFirst().dropLast()) is not a JSON escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                               at: position - 1)
                }
            default:
                if byte < 0x20 {
                    throw fail("a raw control character \\u\(hex(UInt32(byte), 4)) inside a string (write it as \\u\(hex(UInt32(byte), 4)))")
                }
                utf8.append(byte)
                position += 1
            }
        }
    }

    mutating func hex4() throws(ConfigError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard position < bytes.count else { throw fail("the document ends inside a \\u escape") }
            let byte = bytes[position] | 0x20
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            default: throw fail("expected four hex digits after \\u, found \(describeHere())")
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }
}

// MARK: - Typed access

/// A JSON object read field by field, each error naming its path. Missing
/// optional fields and JSON null are the same.
public struct JSONFields: Sendable {
    public let source: String
    let parentPath: String
    /// The index in the parent array, if this object is an array element (the
    /// path string is built only when an error needs it).
    let index: Int?
    public let object: JSONObject
    public let dialect: JSONDialect

    public init(source: String, path: String, object: JSONObject, dialect: JSONDialect) {
        self.init(source: source, parentPath: path, index: nil, object: object, dialect: dialect)
    }

    init(source: String, parentPath: String, index: Int?, object: JSONObject, dialect: JSONDialect) {
        self.source = source
        self.parentPath = parentPath
        self.index = index
        self.object = object
        self.dialect = dialect
    }

    /// `nodes[3]`, `network.Backend`, or empty for the document.
    public var path: String { index.map { "\(parentPath)[\($0)]" } ?? parentPath }

    /// Parses a whole document that must be a JSON object. `dialect`: `.strict` for
    /// our own files (a duplicate key is an error), `.flanneld` for values flanneld
    /// writes or reads (etcd's `<prefix>/config` and leases: the last duplicate wins,
    /// keys match case-insensitively, as in Go).
    public static func parse(_ data: Data, source: String, dialect: JSONDialect = .flanneld) throws(ConfigError) -> JSONFields {
        guard !data.isEmpty else { throw ConfigError(source: source, field: "", message: "is empty (expected a JSON object)") }
        let value = try JSONParser.parse(data, source: source, dialect: dialect)
        guard case .object(let object) = value else {
            throw ConfigError(source: source, field: "", message: "expected a JSON object at the top level, found \(value.kind)")
        }
        return JSONFields(source: source, path: "", object: object, dialect: dialect)
    }

    public func fieldPath(_ key: String) -> String { path.isEmpty ? escaped(key) : "\(path).\(escaped(key))" }

    public func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(source: source, field: fieldPath(key), message: message)
    }

    /// The keys as written (duplicates once each), in document order.
    public var keys: [String] {
        var seen = Set<String>()
        return object.keys.filter { seen.insert($0).inserted }
    }

    public func value(_ key: String) -> JSONValue? {
        guard let value = object.value(key, dialect: dialect) else { return nil }
        if case .null = value { return nil }
        return value
    }

    public func has(_ key: String) -> Bool { value(key) != nil }

    /// Unknown keys are errors (strict); a key that differs from a known one only
    /// in case is named as the likely typo.
    public func rejectUnknownKeys(_ known: Set<String>) throws(ConfigError) {
        // A node has four or five keys, checked against five: comparing the short
        // keys beats hashing them (SipHash per key, 50,000 times in a large file).
        if known.count <= 16 {
            var allKnown = true
            for key in object.keys where !known.contains(where: { $0 == key }) {
                allKnown = false
                break
            }
            if allKnown { return }
        }
        for key in object.keys where !known.contains(key) {
            if let meant = known.first(where: { JSONDialect.fold($0) == JSONDialect.fold(key) }) {
                throw error(key, "unknown key (did you mean \"\(meant)\"? keys are case-sensitive)")
            }
            throw error(key, "unknown key (expected one of: \(known.sorted().joined(separator: ", ")))")
        }
    }

    func mismatch(_ key: String, _ expected: String, _ value: JSONValue) -> ConfigError {
        error(key, "must be \(expected), not \(value.kind)\(Self.echo(value))")
    }

    /// A short rendering of a scalar for messages (` (1.5)`), nothing for containers.
    static func echo(_ value: JSONValue) -> String {
        switch value {
        case .number(let text): " (\(escaped(text, limit: 40)))"
        case .string(let text): " (\(quoted(text, limit: 40)))"
        case .bool(let flag): " (\(flag))"
        default: ""
        }
    }

    public func string(_ key: String) throws(ConfigError) -> String? {
        guard let value = value(key) else { return nil }
        guard case .string(let string) = value else { throw mismatch(key, "a string", value) }
        return string
    }

    public func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let string = try string(key) else { throw error(key, "is required") }
        return string
    }

    public func integer(_ key: String, in range: ClosedRange<Int64>) throws(ConfigError) -> Int64? {
        guard let value = value(key) else { return nil }
        guard case .number(let literal) = value else { throw mismatch(key, "a whole number", value) }
        let shown = escaped(literal, limit: 40)
        let outOfRange = error(key, "\(shown) is out of range \(range.lowerBound)...\(range.upperBound)")
        if let exact = Int64(literal) {
            guard range.contains(exact) else { throw outOfRange }
            return exact
        }
        // 1e3, 2.0, 1e20, 123456789012345678901234: whole or not, then in range or not.
        guard let double = Double(literal) else { throw outOfRange }
        guard double.isFinite else { throw outOfRange }
        guard double.rounded() == double else { throw error(key, "must be a whole number, not \(shown)") }
        guard double >= Double(range.lowerBound) && double <= Double(range.upperBound), let exact = Int64(exactly: double) else {
            throw outOfRange
        }
        return exact
    }

    public func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let value = value(key) else { return nil }
        guard case .bool(let flag) = value else { throw mismatch(key, "true or false", value) }
        return flag
    }

    public func object(_ key: String) throws(ConfigError) -> JSONFields? {
        guard let value = value(key) else { return nil }
        guard case .object(let object) = value else { throw mismatch(key, "an object", value) }
        return JSONFields(source: source, parentPath: fieldPath(key), index: nil, object: object, dialect: dialect)
    }

    public func objects(_ key: String) throws(ConfigError) -> [JSONFields]? {
        guard let value = value(key) else { return nil }
        guard case .array(let array) = value else { throw mismatch(key, "an array", value) }
        var result: [JSONFields] = []
        result.reserveCapacity(array.count)
        let parent = fieldPath(key)
        for (index, element) in array.enumerated() {
            guard case .object(let object) = element else {
                throw ConfigError(source: source, field: "\(parent)[\(index)]", message: "must be an object, not \(element.kind)\(Self.echo(element))")
            }
            result.append(JSONFields(source: source, parentPath: parent, index: index, object: object, dialect: dialect))
        }
        return result
    }

    public func strings(_ key: String) throws(ConfigError) -> [String]? {
        guard let value = value(key) else { return nil }
        guard case .array(let array) = value else { throw mismatch(key, "an array of strings", value) }
        var result: [String] = []
        for (index, element) in array.enumerated() {
            guard case .string(let string) = element else {
                throw ConfigError(source: source, field: "\(fieldPath(key))[\(index)]",
                                  message: "must be a string, not \(element.kind)\(Self.echo(element))")
            }
            result.append(string)
        }
        return result
    }

    public func ipv4(_ key: String) throws(ConfigError) -> IPv4Address? {
        guard let text = try string(key) else { return nil }
        guard let address = IPv4Address(text) else { throw error(key, "\(quoted(text)) is not an IPv4 address") }
        return address
    }

    public func ipv6(_ key: String) throws(ConfigError) -> IPv6Address? {
        guard let text = try string(key) else { return nil }
        guard let address = IPv6Address(text) else { throw error(key, "\(quoted(text)) is not an IPv6 address") }
        return address
    }

    public func ipv6Prefix(_ key: String) throws(ConfigError) -> IPv6Prefix? {
        guard let text = try string(key) else { return nil }
        guard let prefix = IPv6Prefix(text) else { throw error(key, "\(quoted(text)) is not an IPv6 prefix (fd00:10:244::/56)") }
        return prefix
    }

    public func prefix(_ key: String) throws(ConfigError) -> IPv4Prefix? {
        guard let text = try string(key) else { return nil }
        guard let prefix = IPv4Prefix(text) else { throw error(key, "\(quoted(text)) is not an IPv4 prefix (a.b.c.d/len)") }
        return prefix
    }
}
