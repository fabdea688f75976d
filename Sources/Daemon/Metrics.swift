import CoreMetrics
import Foundation
import Prometheus
import Synchronization
import Tunnel

/// The daemon's counters and gauges. The daemon changes `State` under a lock
/// (`update`); each change is recorded through swift-metrics into this
/// instance's own `PrometheusCollectorRegistry` (not the process-wide
/// `MetricsSystem` bootstrap: several daemons in one test process each keep
/// theirs), whose text exposition is what /metrics serves.
public final class Metrics: Sendable {
    struct State {
        var peers = 0
        var peersSkipped = 0
        var leasesInvalid = 0
        var reconciles: [String: Int] = [:]
        var reconcileErrors = 0
        /// Changes the kernel accepted, by "kind action" (`Daemon.label`).
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
        /// The udp backend's data path: packets and bytes by direction, drops by reason.
        var tunnelPackets: [String: Int] = [:]
        var tunnelBytes: [String: Int] = [:]
        var tunnelDrops: [String: Int] = [:]
        var tunnelMergedWrites = 0
    }

    /// Where the udp data path's counters are read at each scrape (nil: no data path).
    let tunnel = Mutex<(@Sendable () -> TunnelStatistics)?>(nil)

    /// Takes the data path's counters in (at each scrape: they move with every packet).
    func recordTunnel() {
        guard let read = tunnel.withLock({ $0 }) else { return }
        let s = read()
        update {
            $0.tunnelPackets = ["tx": Int(s.txPackets), "rx": Int(s.rxPackets)]
            $0.tunnelBytes = ["tx": Int(s.txBytes), "rx": Int(s.rxBytes)]
            $0.tunnelDrops = Dictionary(uniqueKeysWithValues: s.drops.map { ($0.key.rawValue, Int($0.value)) })
            $0.tunnelMergedWrites = Int(s.mergedWrites)
        }
    }

    /// What /metrics shows: every series of this daemon and nothing else.
    public let registry: PrometheusCollectorRegistry
    let recorded: Mutex<Recorded>
    /// How long the registry may be unreachable before /healthz says 503: a
    /// failover to another etcd member or a restarted member is not an outage.
    public let registryGrace: Double

    public init(registryGrace: Double = 10) {
        self.registryGrace = registryGrace
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        recorded = Mutex(Recorded(factory: DescribedMetricsFactory(registry: registry, help: Self.help)))
    }

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

    /// Changes the state and records the change: counters grow by what their
    /// field grew, gauges take their field's value.
    func update(_ body: (inout State) -> Void) {
        recorded.withLock { recorded in
            let before = recorded.state
            body(&recorded.state)
            recorded.record(since: before)
        }
    }

    func read<T>(_ body: (State) -> T) -> T { recorded.withLock { body($0.state) } }

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

    /// /readyz: 200 once the registry gave this node its place in the cluster
    /// (with etcd: the lease is held) and the first sync was applied; it stays
    /// ready after that (a later failure is /healthz's to report). 503 with the
    /// reason before.
    public func readiness() -> (ok: Bool, text: String) {
        read { s in
            guard s.registryReady else {
                return (false, "not ready: waiting for the registry (no lease yet): \(s.registryError ?? s.lastError ?? "starting")\n")
            }
            guard s.lastSuccess != nil else {
                return (false, "not ready: the first sync has not been applied yet: \(s.lastError ?? "starting")\n")
            }
            return (true, "ready: subnet \(s.subnet ?? "?"), \(s.peers) peers\n")
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of this daemon's registry.
    public func render() -> String {
        recordTunnel()
        return registry.emitToString()
    }

    // MARK: recording

    static let prefix = "vxlan_agent_"

    /// Each metric's `# HELP` text, by name (without the prefix).
    static let help: [String: String] = [
        "peers": "Peers programmed (route, neighbor and FDB entry each).",
        "peers_skipped": "Peers left out because their record is wrong from this host's view.",
        "leases_invalid": "Lease records in the registry that could not be parsed or validated.",
        "reconciles_total": "Reconcile passes, by what triggered them.",
        "reconcile_errors_total": "Reconcile passes that failed before applying.",
        "changes_applied_total": "Kernel changes the kernel accepted, by kind and action (refused and skipped ones are not counted).",
        "change_failures_total": "Kernel changes refused by the kernel or skipped because one they depend on failed.",
        "kernel_writes_total": "Netlink requests written.",
        "kernel_events_total": "Kernel events about the agent's state (including its own writes).",
        "last_successful_sync_timestamp_seconds": "When the kernel last matched the desired state (0: not yet).",
        "last_reconcile_duration_seconds": "How long the last reconcile took.",
        "registry_connected": "Whether the registry (etcd) answers: 0 from the moment it is found unreachable, 1 again once it answers.",
        "registry_errors_total": "Registry failures (connection, lease, watch).",
        "firewall_errors_total": "Failed nftables updates.",
        "tunnel_packets_total": "udp backend: packets the data path moved, by direction (tx: from the TUN device to peers; rx: from peers into it).",
        "tunnel_bytes_total": "udp backend: bytes of inner packets the data path moved, by direction.",
        "tunnel_drops_total": "udp backend: packets dropped, by reason (no_route, ttl, malformed, unknown_sender, spoofed_source, wrong_destination, unsupported_offload, send_failed, write_failed).",
        "tunnel_merged_writes_total": "udp backend: writes to the TUN device that carried several received TCP segments merged into one.",
    ]

    /// The state, and the swift-metrics instruments it is recorded into.
    struct Recorded {
        var state = State()
        let factory: DescribedMetricsFactory
        let gauges: [(Meter, (State) -> Double)]
        let counters: [(CoreMetrics.Counter, (State) -> Int)]
        var reconciles: [String: CoreMetrics.Counter] = [:]
        var changes: [String: CoreMetrics.Counter] = [:]
        var labelled: [String: CoreMetrics.Counter] = [:]
        var tunnelStarted = false

        init(factory: DescribedMetricsFactory) {
            self.factory = factory
            func gauge(_ name: String, _ value: @escaping (State) -> Double) -> (Meter, (State) -> Double) {
                (Meter(label: Metrics.prefix + name, factory: factory), value)
            }
            func counter(_ name: String, _ value: @escaping (State) -> Int) -> (CoreMetrics.Counter, (State) -> Int) {
                (CoreMetrics.Counter(label: Metrics.prefix + name, factory: factory), value)
            }
            gauges = [
                gauge("peers") { Double($0.peers) },
                gauge("peers_skipped") { Double($0.peersSkipped) },
                gauge("leases_invalid") { Double($0.leasesInvalid) },
                gauge("last_successful_sync_timestamp_seconds") { $0.lastSuccess ?? 0 },
                gauge("last_reconcile_duration_seconds") { $0.lastDuration },
                gauge("registry_connected") { $0.registryConnected ? 1 : 0 },
            ]
            counters = [
                counter("reconcile_errors_total") { $0.reconcileErrors },
                counter("change_failures_total") { $0.changeFailures },
                counter("kernel_writes_total") { $0.kernelWrites },
                counter("kernel_events_total") { $0.kernelEvents },
                counter("registry_errors_total") { $0.registryErrors },
                counter("firewall_errors_total") { $0.firewallErrors },
            ]
            for (meter, value) in gauges { meter.set(value(state)) }
        }

        /// Records what changed since `before`. A counter only grows: a field
        /// that went down (nothing does) records nothing.
        mutating func record(since before: State) {
            for (meter, value) in gauges where value(state) != value(before) { meter.set(value(state)) }
            for (counter, value) in counters where value(state) > value(before) {
                counter.increment(by: value(state) - value(before))
            }
            for (trigger, count) in state.reconciles where count > before.reconciles[trigger, default: 0] {
                let counter = reconciles[trigger] ?? CoreMetrics.Counter(
                    label: Metrics.prefix + "reconciles_total", dimensions: [("trigger", trigger)], factory: factory)
                reconciles[trigger] = counter
                counter.increment(by: count - before.reconciles[trigger, default: 0])
            }
            func grow(_ name: String, _ label: String, _ now: [String: Int], _ then: [String: Int]) {
                for (value, count) in now where count > then[value, default: 0] {
                    let key = "\(name)|\(value)"
                    let counter = labelled[key] ?? CoreMetrics.Counter(label: Metrics.prefix + name, dimensions: [(label, value)], factory: factory)
                    labelled[key] = counter
                    counter.increment(by: count - then[value, default: 0])
                }
            }
            grow("tunnel_packets_total", "direction", state.tunnelPackets, before.tunnelPackets)
            grow("tunnel_bytes_total", "direction", state.tunnelBytes, before.tunnelBytes)
            grow("tunnel_drops_total", "reason", state.tunnelDrops, before.tunnelDrops)
            // Only a daemon with a data path has the series (no labels: it appears with the data path).
            if state.tunnelMergedWrites > before.tunnelMergedWrites || (tunnelStarted == false && state.tunnelPackets.isEmpty == false) {
                let counter = labelled["tunnel_merged_writes_total"]
                    ?? CoreMetrics.Counter(label: Metrics.prefix + "tunnel_merged_writes_total", factory: factory)
                labelled["tunnel_merged_writes_total"] = counter
                counter.increment(by: state.tunnelMergedWrites - before.tunnelMergedWrites)
                tunnelStarted = true
            }
            for (key, count) in state.changes where count > before.changes[key, default: 0] {
                let counter = changes[key] ?? {
                    let parts = key.split(separator: " ", maxSplits: 1).map(String.init)
                    return CoreMetrics.Counter(label: Metrics.prefix + "changes_applied_total",
                                               dimensions: [("kind", parts[0]), ("action", parts.count > 1 ? parts[1] : "")],
                                               factory: factory)
                }()
                changes[key] = counter
                counter.increment(by: count - before.changes[key, default: 0])
            }
        }
    }
}

/// swift-prometheus' `PrometheusMetricsFactory`, with a `# HELP` line for each
/// metric named in `help` (the stock factory writes none).
struct DescribedMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    let help: [String: String]
    let stock: PrometheusMetricsFactory

    init(registry: PrometheusCollectorRegistry, help: [String: String]) {
        self.registry = registry
        self.help = help
        stock = PrometheusMetricsFactory(registry: registry)
    }

    func text(_ label: String) -> String? {
        label.hasPrefix(Metrics.prefix) ? help[String(label.dropFirst(Metrics.prefix.count))] : nil
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        guard let text = text(label) else { return stock.makeCounter(label: label, dimensions: dimensions) }
        return registry.makeCounter(descriptor: MetricNameDescriptor(metricName: label, unitName: "", helpText: text), labels: dimensions)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        guard let text = text(label) else { return stock.makeMeter(label: label, dimensions: dimensions) }
        return registry.makeGauge(descriptor: MetricNameDescriptor(metricName: label, unitName: "", helpText: text), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        stock.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        stock.makeTimer(label: label, dimensions: dimensions)
    }

    func destroyCounter(_ handler: any CounterHandler) { stock.destroyCounter(handler) }
    func destroyMeter(_ handler: any MeterHandler) { stock.destroyMeter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { stock.destroyRecorder(handler) }
    func destroyTimer(_ handler: any TimerHandler) { stock.destroyTimer(handler) }
}
