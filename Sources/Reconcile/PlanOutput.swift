import Foundation
import Model

/// How a plan (and the result of applying it) is shown to a person or a program.
public struct PlanOutput: Sendable {
    public var renderer: Renderer
    public var desired: DesiredState?
    /// Dual stack: the IPv6 plane's renderer (its device's name and index); nil: `renderer`.
    public var renderer6: Renderer?
    /// Dual stack: the IPv6 plane's desired state (names the peer of each IPv6 change in JSON).
    public var desired6: DesiredState6?
    /// An IPv6-only network (`EnableIPv4: false`): the summary counts the IPv6 plane's peers only.
    public var ipv6Only = false

    public init(renderer: Renderer, desired: DesiredState? = nil, renderer6: Renderer? = nil, desired6: DesiredState6? = nil) {
        self.renderer = renderer
        self.desired = desired
        self.renderer6 = renderer6
        self.desired6 = desired6
    }

    /// One line per change (`+ `, `~ `, `- `), then one line per skipped peer
    /// and per entry kept (`! `).
    public func lines(_ plan: Plan) -> [String] {
        plan.changes.map(renderer.describe) + plan.skipped.map { "! \($0)" } + plan.kept.map { "! \($0)" }
    }

    /// Both planes of a dual-stack node: the IPv4 plane's changes, then the
    /// IPv6 plane's, then the peers left out and the entries kept of both.
    public func lines(_ plan: Plan, _ plan6: Plan6?) -> [String] {
        guard let plan6 else { return lines(plan) }
        let renderer6 = renderer6 ?? renderer
        return plan.changes.map(renderer.describe) + plan6.changes.map(renderer6.describe)
            + (plan.skipped + plan6.skipped).map { "! \($0)" } + (plan.kept + plan6.kept).map { "! \($0)" }
    }

    /// `3 to add, 1 to change, 2 to remove (12 peers, 1 skipped)` or `in sync: nothing to do (12 peers)`;
    /// with an IPv6 plane the counts are both planes' and its peers follow
    /// (`(12 peers; IPv6: 11 peers, 1 left out)`).
    public func summary(_ plan: Plan, _ plan6: Plan6? = nil, applied: Bool = false, writes: Int? = nil, failures: Int = 0) -> String {
        func peerText(_ count: Int, _ skipped: Int, _ word: String) -> String {
            "\(count) peer\(count == 1 ? "" : "s")" + (skipped == 0 ? "" : ", \(skipped) \(word)")
        }
        var peers = peerText(plan.peerCount, plan.skipped.count, "skipped")
        if let plan6 { peers += "; IPv6: " + peerText(plan6.peerCount, plan6.skipped.count, "left out") }
        if ipv6Only, let plan6 { peers = peerText(plan6.peerCount, plan6.skipped.count, "skipped") + ", IPv6 only" }
        // With two planes, what counts both is set apart from the IPv6 plane's peers.
        let separator = plan6 == nil || ipv6Only ? ", " : "; "
        if plan.isEmpty && plan6?.isEmpty ?? true {
            return "in sync: nothing to do (\(peers)\(writes.map { "\(separator)\($0) kernel writes" } ?? ""))"
        }
        let c = plan.counts + (plan6?.counts ?? PlanCounts())
        var text = applied ? "applied: \(c.add) added, \(c.change) changed, \(c.remove) removed"
                           : "\(c.add) to add, \(c.change) to change, \(c.remove) to remove"
        var totals: [String] = []
        if let writes { totals.append("\(writes) kernel write\(writes == 1 ? "" : "s")") }
        if failures > 0 { totals.append("\(failures) failed") }
        text += " (\(peers)" + (totals.isEmpty ? "" : separator + totals.joined(separator: ", "))
        return text + ")"
    }

    struct JSONChange: Encodable {
        var action: String
        var kind: String
        var object: String
        var was: String?
        var peer: String?
        /// The plane: `ipv4` or `ipv6`.
        var family: String
    }

    struct JSONSkipped: Encodable {
        var name: String
        var origin: String
        var reason: String
        var family: String
    }

    struct JSONPlaneSummary: Encodable {
        var add: Int
        var change: Int
        var remove: Int
        var peers: Int
        var skipped: Int
    }

    struct JSONSummary: Encodable {
        /// Both planes' changes.
        var add: Int
        var change: Int
        var remove: Int
        /// The IPv4 plane's peers.
        var peers: Int
        var skipped: Int
        /// The IPv6 plane alone (dual stack).
        var ipv6: JSONPlaneSummary?
    }

    struct JSONPlan: Encodable {
        /// nil for a backend without a device (host-gw).
        var device: String?
        /// The IPv6 plane's device (dual stack).
        var device6: String?
        var inSync: Bool
        var applied: Bool
        var summary: JSONSummary
        var changes: [JSONChange]
        var skippedPeers: [JSONSkipped]
        var kept: [String]
        var writes: Int?
        var failures: [String]?
    }

    /// The plan as JSON: `{"device", "inSync", "summary", "changes": [{"action", "kind", "object", "peer", "family"}],
    /// "skippedPeers"}`; with an IPv6 plane also `"device6"` and `summary.ipv6`, and its changes with `"family": "ipv6"`.
    public func json(_ plan: Plan, _ plan6: Plan6? = nil, applied: Bool = false, writes: Int? = nil,
                     failures: [String]? = nil) -> String {
        let peers = desired?.peerIndex()
        var changes = Self.jsonChanges(plan, family: "ipv4", renderer: renderer) { peers?.peer(of: $0) }
        if let plan6 {
            let peers6 = desired6?.peerIndex()
            changes += Self.jsonChanges(plan6, family: "ipv6", renderer: renderer6 ?? renderer) { peers6?.peer(of: $0) }
        }
        let c = plan.counts + (plan6?.counts ?? PlanCounts())
        let summary6 = plan6.map { p in
            let c = p.counts
            return JSONPlaneSummary(add: c.add, change: c.change, remove: c.remove, peers: p.peerCount, skipped: p.skipped.count)
        }
        let skipped = plan.skipped.map { JSONSkipped(name: $0.name, origin: $0.origin, reason: $0.reason, family: $0.ipv6 ? "ipv6" : "ipv4") }
            + (plan6?.skipped ?? []).map { JSONSkipped(name: $0.name, origin: $0.origin, reason: $0.reason, family: "ipv6") }
        let device6: String? = plan6 == nil || desired6.map({ $0.device == nil }) == true ? nil : (renderer6 ?? renderer).deviceName
        let document = JSONPlan(
            device: desired.map { $0.device == nil } == true ? nil : renderer.deviceName, device6: device6,
            inSync: plan.isEmpty && (plan6?.isEmpty ?? true) && (failures?.isEmpty ?? true), applied: applied,
            summary: JSONSummary(add: c.add, change: c.change, remove: c.remove, peers: plan.peerCount, skipped: plan.skipped.count,
                                 ipv6: summary6),
            changes: changes,
            skippedPeers: skipped,
            kept: plan.kept + (plan6?.kept ?? []), writes: writes, failures: failures)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(document)) ?? Data("{}".utf8), as: UTF8.self)
    }

    static func jsonChanges<A: IPFamilyAddress>(_ plan: PlanOf<A>, family: String, renderer: Renderer,
                                                peer: (EntryOf<A>) -> String?) -> [JSONChange] {
        plan.changes.map { change -> JSONChange in
            let line = renderer.describeChange(change)
            switch change {
            case .createDevice, .createTUN:
                return JSONChange(action: "add", kind: "link", object: String(line.dropFirst(2)), family: family)
            case .recreateDevice, .updateDevice, .updateTUN:
                return JSONChange(action: "change", kind: "link", object: String(line.dropFirst(2)), family: family)
            case .deleteDevice:
                return JSONChange(action: "remove", kind: "link", object: String(line.dropFirst(2)), family: family)
            case .add(let entry):
                return JSONChange(action: "add", kind: entry.kind, object: renderer.describeEntry(entry), peer: peer(entry), family: family)
            case .replace(let old, let new):
                return JSONChange(action: "change", kind: new.kind, object: renderer.describeEntry(new), was: renderer.describeEntry(old),
                                  peer: peer(new), family: family)
            case .remove(let entry):
                return JSONChange(action: "remove", kind: entry.kind, object: renderer.describeEntry(entry), peer: peer(entry), family: family)
            }
        }
    }
}
