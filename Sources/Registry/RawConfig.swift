import Foundation
import Reconcile

/// Any JSON value: decoded by JSONDecoder (fast, Swift-native), turned into
/// Foundation values where `JSONFields` wants them.
enum JSONValue: Decodable {
    case string(String), number(Double), bool(Bool), null, array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    /// The value as JSONSerialization would have produced it.
    var foundation: Any {
        switch self {
        case .string(let s): s
        case .number(let d): NSNumber(value: d)
        case .bool(let b): NSNumber(value: b)
        case .null: NSNull()
        case .array(let a): a.map(\.foundation)
        case .object(let o): o.mapValues(\.foundation)
        }
    }
}

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// One `nodes[]` entry, fields as given (validated afterwards).
struct RawNode: Decodable {
    static let knownKeys: Set<String> = ["name", "publicIP", "subnet", "vtepMAC", "interface"]
    /// The first key that is not one of `knownKeys`, if any (no per-node array:
    /// an inventory of 50,000 nodes would allocate 50,000 of them).
    var unknownKey: String?
    var name: String?, publicIP: String?, subnet: String?, vtepMAC: String?, interface: String?

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        if c.allKeys.contains(where: { !Self.knownKeys.contains($0.stringValue) }) {
            unknownKey = c.allKeys.map(\.stringValue).sorted().first { !Self.knownKeys.contains($0) }
        }
        name = try c.decodeIfPresent(String.self, forKey: AnyKey("name"))
        publicIP = try c.decodeIfPresent(String.self, forKey: AnyKey("publicIP"))
        subnet = try c.decodeIfPresent(String.self, forKey: AnyKey("subnet"))
        vtepMAC = try c.decodeIfPresent(String.self, forKey: AnyKey("vtepMAC"))
        interface = try c.decodeIfPresent(String.self, forKey: AnyKey("interface"))
    }
}

/// The configuration file, fields as given: `nodes` decoded straight into
/// `RawNode`s (it may hold 50,000), every other key as a `JSONValue`.
struct RawConfig: Decodable {
    var keys: [String]
    var nodes: [RawNode]?
    var others: [String: JSONValue] = [:]

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        keys = c.allKeys.map(\.stringValue)
        nodes = try c.decodeIfPresent([RawNode].self, forKey: AnyKey("nodes"))
        for key in c.allKeys where key.stringValue != "nodes" {
            others[key.stringValue] = try c.decode(JSONValue.self, forKey: key)
        }
    }

    /// The keys other than `nodes`, for typed access with errors that name the field.
    func fields(source: String) -> JSONFields {
        JSONFields(source: source, path: "", object: others.mapValues(\.foundation))
    }

    /// Decodes `data`; every error names the file and the field.
    static func decode(_ data: Data, source: String) throws(ConfigError) -> RawConfig {
        do {
            return try JSONDecoder().decode(RawConfig.self, from: data)
        } catch let error as DecodingError {
            throw Self.configError(error, source: source)
        } catch {
            throw ConfigError(source: source, field: "", message: "invalid JSON: \(error)")
        }
    }

    static func path(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue { text += "[\(index)]" } else { text += text.isEmpty ? key.stringValue : ".\(key.stringValue)" }
        }
        return text
    }

    static func configError(_ error: DecodingError, source: String) -> ConfigError {
        switch error {
        case .typeMismatch(let type, let context):
            let field = path(context.codingPath)
            if field.isEmpty { return ConfigError(source: source, field: "", message: "expected a JSON object at the top level") }
            let what = type == String.self ? "a string" : type == [RawNode].self || type is [Any].Type ? "an array" : "an object"
            return ConfigError(source: source, field: field, message: "must be \(what)")
        case .valueNotFound(_, let context):
            return ConfigError(source: source, field: path(context.codingPath), message: "must not be null")
        case .keyNotFound(let key, let context):
            return ConfigError(source: source, field: path(context.codingPath + [key]), message: "is required")
        case .dataCorrupted(let context):
            let detail = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
                ?? context.underlyingError.map { "\($0)" } ?? context.debugDescription
            return ConfigError(source: source, field: path(context.codingPath), message: "invalid JSON: \(detail)")
        @unknown default:
            return ConfigError(source: source, field: "", message: "invalid JSON: \(error)")
        }
    }
}
