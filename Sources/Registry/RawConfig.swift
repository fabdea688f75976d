import Foundation
import Reconcile

/// The configuration file as written: the top-level object, and its `nodes`
/// (which may hold 50,000 entries) as objects, both read with the strict dialect:
/// a duplicate key is an error naming it, as is any syntax error (with its line,
/// column and an excerpt).
struct RawConfig {
    var root: JSONFields
    var nodes: [JSONFields]?

    static func decode(_ data: Data, source: String) throws(ConfigError) -> RawConfig {
        let root = try JSONFields.parse(data, source: source, dialect: .strict)
        return RawConfig(root: root, nodes: try root.objects("nodes"))
    }
}
