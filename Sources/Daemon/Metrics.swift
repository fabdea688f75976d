import Foundation
import Synchronization

/// The daemon's counters and gauges, rendered in Prometheus' text format.
public final class Metrics: Sendable {
    struct State {
        var peers = 0
        var peersSkipped = 0
        var leasesInvalid = 0
        var reconciles: [String: Int] = [:]
        var reconcileErrors = 0
        var changes: [String: Int] = [:]
        var kernelWrites = 0
        var changeFailures = 0
        var kernelEvents = 0
        var lastSuccess: Double?
        var lastDuration: Double = 0
        var registryConnected = false
        /// When the registry stopped answering (nil while it answers), and why.
        var registryDownSince: Double?
        var registryError: String?
        var registryReady = false
        var registryErrors = 0
        var firewallErrors = 0
        var lastError: String?
        var subnet: String?
    }

    let state = Mutex(State())
    /// How long the registry may be unreachable before /healthz says 503: a
    /// failover to another etcd member or a restarted member is not an outage.
    public let registryGrace: Double

    public init(registryGrace: Double = 10) { self.registryGrace = registryGrace }

    /// The registry answered (true) or stopped answering (false, with why) at `now`.
    func registry(connected: Bool, error: String?, now: Double = Date().timeIntervalSince1970) {
        update {
            $0.registryConnected = connected
            if connected {
                $0.registryDownSince = nil
                $0.registryError = nil
            } else {
                $0.registryErrors += 1
                $0.registryDownSince = $0.registryDownSince ?? now
                $0.registryError = error ?? $0.registryError
            }
        }
    }

    func update(_ body: (inout State) -> Void) { state.withLock { body(&$0) } }
    func read<T>(_ body: (State) -> T) -> T { state.withLock { body($0) } }

    /// 200 once a sync succeeded, the last one did, and the registry answers
    /// (or has been unreachable for less than `registryGrace` seconds); 503 with
    /// the reason otherwise.
    public func health(now: Double = Date().timeIntervalSince1970) -> (ok: Bool, text: String) {
        read { s in
            guard s.registryReady else {
                return (false, "waiting for the registry: \(s.registryError ?? s.lastError ?? "no cluster state yet")\n")
            }
            guard let last = s.lastSuccess else { return (false, "no successful sync yet: \(s.lastError ?? "starting")\n") }
            if let error = s.lastError { return (false, "last sync failed: \(error)\n") }
            var text = "ok: \(s.peers) peers, last sync \(String(format: "%.1f", now - last)) s ago"
            if let since = s.registryDownSince {
                let down = "registry unreachable for \(String(format: "%.0f", max(now - since, 0))) s"
                if now - since >= registryGrace {
                    return (false, "\(down) (changes in the cluster are not seen; forwarding state kept): \(s.registryError ?? "")\n")
                }
                text += " (\(down); forwarding state kept)"
            }
            return (true, text + "\n")
        }
    }

    public func render() -> String {
        read { s in
            var out = ""
            func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Double)]) {
                out += "# HELP vxlan_agent_\(name) \(help)\n# TYPE vxlan_agent_\(name) \(type)\n"
                for (labels, value) in samples {
                    let number = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(format: "%.3f", value)
                    out += "vxlan_agent_\(name)\(labels) \(number)\n"
                }
            }
            metric("peers", "gauge", "Peers programmed (route, neighbor and FDB entry each).", [("", Double(s.peers))])
            metric("peers_skipped", "gauge", "Peers left out because their record is wrong from this host's view.",
                   [("", Double(s.peersSkipped))])
            metric("leases_invalid", "gauge", "Lease records in the registry that could not be parsed or validated.",
                   [("", Double(s.leasesInvalid))])
            metric("reconciles_total", "counter", "Reconcile passes, by what triggered them.",
                   s.reconciles.sorted { $0.key < $1.key }.map { ("{trigger=\"\($0.key)\"}", Double($0.value)) })
            metric("reconcile_errors_total", "counter", "Reconcile passes that failed before applying.", [("", Double(s.reconcileErrors))])
            metric("changes_applied_total", "counter", "Kernel changes applied, by kind and action.",
                   s.changes.sorted { $0.key < $1.key }.map { key, value in
                       let parts = key.split(separator: " ")
                       return ("{kind=\"\(parts[0])\",action=\"\(parts[1])\"}", Double(value))
                   })
            metric("change_failures_total", "counter", "Kernel changes the kernel refused.", [("", Double(s.changeFailures))])
            metric("kernel_writes_total", "counter", "Netlink requests written.", [("", Double(s.kernelWrites))])
            metric("kernel_events_total", "counter", "Kernel events about the agent's state (including its own writes).",
                   [("", Double(s.kernelEvents))])
            metric("last_successful_sync_timestamp_seconds", "gauge", "When the kernel last matched the desired state.",
                   [("", s.lastSuccess ?? 0)])
            metric("last_reconcile_duration_seconds", "gauge", "How long the last reconcile took.", [("", s.lastDuration)])
            metric("registry_connected", "gauge", "Whether the registry (etcd) answers: 0 from the moment it is found unreachable, 1 again once it answers.",
                   [("", s.registryConnected ? 1 : 0)])
            metric("registry_errors_total", "counter", "Registry failures (connection, lease, watch).", [("", Double(s.registryErrors))])
            metric("firewall_errors_total", "counter", "Failed nftables updates.", [("", Double(s.firewallErrors))])
            return out
        }
    }
}
