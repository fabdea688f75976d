import Dataplane
import Foundation

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
        field.isEmpty ? "\(source): \(message)" : "\(source): \(field): \(message)"
    }
}

/// A JSON object read field by field, each error naming its path. Missing
/// optional fields and JSON null are the same.
public struct JSONFields: @unchecked Sendable {
    // @unchecked: holds only values produced by JSONSerialization (immutable Foundation containers).
    public let source: String
    let parentPath: String
    /// The index in the parent array, if this object is an array element (the
    /// path string is built only when an error needs it).
    let index: Int?
    let object: [String: Any]

    public init(source: String, path: String, object: [String: Any]) {
        self.init(source: source, parentPath: path, index: nil, object: object)
    }

    init(source: String, parentPath: String, index: Int?, object: [String: Any]) {
        self.source = source
        self.parentPath = parentPath
        self.index = index
        self.object = object
    }

    /// `nodes[3]`, `network.Backend`, or empty for the document.
    public var path: String { index.map { "\(parentPath)[\($0)]" } ?? parentPath }

    /// Parses a whole document that must be a JSON object.
    public static func parse(_ data: Data, source: String) throws(ConfigError) -> JSONFields {
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            throw ConfigError(source: source, field: "", message: "invalid JSON: \(detail)")
        }
        guard let object = value as? [String: Any] else {
            throw ConfigError(source: source, field: "", message: "expected a JSON object at the top level")
        }
        return JSONFields(source: source, path: "", object: object)
    }

    public func fieldPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(source: source, field: fieldPath(key), message: message)
    }

    public var keys: [String] { Array(object.keys) }

    func value(_ key: String) -> Any? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        return value
    }

    public func has(_ key: String) -> Bool { value(key) != nil }

    public func string(_ key: String) throws(ConfigError) -> String? {
        guard let value = value(key) else { return nil }
        guard let string = value as? String else { throw error(key, "must be a string") }
        return string
    }

    public func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let string = try string(key) else { throw error(key, "is required") }
        return string
    }

    public func integer(_ key: String, in range: ClosedRange<Int64>) throws(ConfigError) -> Int64? {
        guard let value = value(key) else { return nil }
        guard let number = value as? NSNumber, !Self.isBoolean(number),
              let exact = Int64(exactly: number.doubleValue) else {
            throw error(key, "must be a whole number")
        }
        guard range.contains(exact) else { throw error(key, "\(exact) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return exact
    }

    public func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let value = value(key) else { return nil }
        guard let number = value as? NSNumber, Self.isBoolean(number) else {
            throw error(key, "must be true or false")
        }
        return number.boolValue
    }

    /// JSON true/false arrive as NSNumber too; their ObjC type is `c` (char).
    static func isBoolean(_ number: NSNumber) -> Bool { String(cString: number.objCType) == "c" }

    public func object(_ key: String) throws(ConfigError) -> JSONFields? {
        guard let value = value(key) else { return nil }
        guard let object = value as? [String: Any] else { throw error(key, "must be an object") }
        return JSONFields(source: source, path: fieldPath(key), object: object)
    }

    public func objects(_ key: String) throws(ConfigError) -> [JSONFields]? {
        guard let value = value(key) else { return nil }
        guard let array = value as? [Any] else { throw error(key, "must be an array") }
        var result: [JSONFields] = []
        for (index, element) in array.enumerated() {
            guard let object = element as? [String: Any] else { throw error("\(key)[\(index)]", "must be an object") }
            result.append(JSONFields(source: source, parentPath: fieldPath(key), index: index, object: object))
        }
        return result
    }

    public func strings(_ key: String) throws(ConfigError) -> [String]? {
        guard let value = value(key) else { return nil }
        guard let array = value as? [Any], array.allSatisfy({ $0 is String }) else { throw error(key, "must be an array of strings") }
        return array.compactMap { $0 as? String }
    }

    public func ipv4(_ key: String) throws(ConfigError) -> IPv4Address? {
        guard let text = try string(key) else { return nil }
        guard let address = IPv4Address(text) else { throw error(key, "\"\(text)\" is not an IPv4 address") }
        return address
    }

    public func prefix(_ key: String) throws(ConfigError) -> IPv4Prefix? {
        guard let text = try string(key) else { return nil }
        guard let prefix = IPv4Prefix(text) else { throw error(key, "\"\(text)\" is not an IPv4 prefix (a.b.c.d/len)") }
        return prefix
    }
}
