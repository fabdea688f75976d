import Foundation
import Model

/// How a plan (and the result of applying it) is shown to a person or a program.
public struct PlanOutput: Sendable {
    public var renderer: Renderer
    public var desired: DesiredState?

    public init(renderer: Renderer, desired: DesiredState? = nil) {
        self.renderer = renderer
        self.desired = desired
    }

    /// One line per change (`+ `, `~ `, `- `), then one line per skipped peer
    /// and per entry kept (`! `).
    public func lines(_ plan: Plan) -> [String] {
        plan.changes.map(renderer.describe) + plan.skipped.map { "! \($0)" } + plan.kept.map { "! \($0)" }
    }

    /// `3 to add, 1 to change, 2 to remove (12 peers, 1 skipped)` or `in sync: nothing to do (12 peers)`.
    public func summary(_ plan: Plan, applied: Bool = false, writes: Int? = nil, failures: Int = 0) -> String {
        var peers = "\(plan.peerCount) peer\(plan.peerCount == 1 ? "" : "s")"
        if !plan.skipped.isEmpty { peers += ", \(plan.skipped.count) skipped" }
        if plan.isEmpty { return "in sync: nothing to do (\(peers)\(writes.map { ", \($0) kernel writes" } ?? ""))" }
        let c = plan.counts
        var text = applied ? "applied: \(c.add) added, \(c.change) changed, \(c.remove) removed"
                           : "\(c.add) to add, \(c.change) to change, \(c.remove) to remove"
        text += " (\(peers)"
        if let writes { text += ", \(writes) kernel write\(writes == 1 ? "" : "s")" }
        if failures > 0 { text += ", \(failures) failed" }
        return text + ")"
    }

    struct JSONChange: Encodable {
        var action: String
        var kind: String
        var object: String
        var was: String?
        var peer: String?
    }

    struct JSONSkipped: Encodable {
        var name: String
        var origin: String
        var reason: String
    }

    struct JSONSummary: Encodable {
        var add: Int
        var change: Int
        var remove: Int
        var peers: Int
        var skipped: Int
    }

    struct JSONPlan: Encodable {
        /// nil for a backend without a device (host-gw).
        var device: String?
        var inSync: Bool
        var applied: Bool
        var summary: JSONSummary
        var changes: [JSONChange]
        var skippedPeers: [JSONSkipped]
        var kept: [String]
        var writes: Int?
        var failures: [String]?
    }

    /// The plan as JSON: `{"device", "inSync", "summary", "changes": [{"action", "kind", "object", "peer"}], "skippedPeers"}`.
    public func json(_ plan: Plan, applied: Bool = false, writes: Int? = nil, failures: [String]? = nil) -> String {
        let peers = desired?.peerIndex()
        let changes = plan.changes.map { change -> JSONChange in
            switch change {
            case .createDevice, .createTUN:
                return JSONChange(action: "add", kind: "link", object: String(renderer.describe(change).dropFirst(2)))
            case .recreateDevice, .updateDevice, .updateTUN:
                return JSONChange(action: "change", kind: "link", object: String(renderer.describe(change).dropFirst(2)))
            case .deleteDevice:
                return JSONChange(action: "remove", kind: "link", object: String(renderer.describe(change).dropFirst(2)))
            case .add(let entry):
                return JSONChange(action: "add", kind: entry.kind, object: renderer.describe(entry), peer: peers?.peer(of: entry))
            case .replace(let old, let new):
                return JSONChange(action: "change", kind: new.kind, object: renderer.describe(new), was: renderer.describe(old),
                                  peer: peers?.peer(of: new))
            case .remove(let entry):
                return JSONChange(action: "remove", kind: entry.kind, object: renderer.describe(entry), peer: peers?.peer(of: entry))
            }
        }
        let c = plan.counts
        let document = JSONPlan(
            device: desired.map { $0.device == nil } == true ? nil : renderer.deviceName, inSync: plan.isEmpty && (failures?.isEmpty ?? true), applied: applied,
            summary: JSONSummary(add: c.add, change: c.change, remove: c.remove, peers: plan.peerCount, skipped: plan.skipped.count),
            changes: changes,
            skippedPeers: plan.skipped.map { JSONSkipped(name: $0.name, origin: $0.origin, reason: $0.reason) },
            kept: plan.kept, writes: writes, failures: failures)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(document)) ?? Data("{}".utf8), as: UTF8.self)
    }
}

