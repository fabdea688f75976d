import Agent
import Dataplane
import Foundation
import Logging
import Model
import Reconcile
import Registry

/// `vxlan-agent run`: keeps this node in sync continuously. Reconciles on a
/// registry change, on a kernel change that touches the agent's state (netlink
/// multicast), and every resync interval as a backstop; each reconcile is the
/// same diff-and-apply as `sync`. The first event of a burst starts a pass at
/// once; what arrives while a pass runs joins the next one, so a burst is one or
/// a few passes and a lone lease waits for nothing.
/// Writes subnet.env and the CNI configuration, keeps the masquerade table,
/// serves /healthz and /metrics. SIGTERM/SIGINT stop it and leave the forwarding
/// state in place; SIGHUP reloads the configuration file.
public final class Daemon: @unchecked Sendable {
    public struct Options: Sendable {
        public var configPath: String
        public var node: String?
        public var lockPath: String
        /// The first wait before a pass is tried again after changes failed or the
        /// lock was busy; doubled for each pass that fails again, up to 5 s.
        public var retryDelay: Duration = .milliseconds(100)

        public init(configPath: String, node: String?, lockPath: String) {
            self.configPath = configPath
            self.node = node
            self.lockPath = lockPath
        }
    }

    enum Event: Sendable {
        /// From the registry started as `generation`; a stopped registry's late events are dropped.
        case registry(RegistryEvent, generation: Int)
        case kernel(String)
        case resync
        case reload
        case stop(String)
        case reconcile
        /// A pass scheduled after a delay (a retry); skipped when a pass ran meanwhile.
        case reconcileLater
    }

    let options: Options
    let log: Logger
    public let metrics = Metrics()
    var config: AgentConfig
    let node: String
    let events: AsyncStream<Event>
    let continuation: AsyncStream<Event>.Continuation

    var view: ClusterView?
    var interface: String?
    var registry: EtcdRegistry?
    var registryTask: Task<Void, Never>?
    var registryGeneration = 0
    var monitor: KernelMonitor?
    var dataplane: Dataplane?
    var triggers: Set<String> = []
    /// A `.reconcile` is in the queue: later events join the pass it starts.
    var queued = false
    /// A `.reconcileLater` is on its way.
    var delayed = false
    /// The wait before the next retry; reset by a pass without failures.
    var retryWait: Duration = .zero
    /// (network, subnet) the masquerade table was last written for; nil: write it on the next pass.
    var firewall: (IPv4Prefix, IPv4Prefix)?
    var skippedReported: Set<String> = []

    public init(options: Options, log: Logger) throws {
        self.options = options
        self.log = log
        config = try AgentConfig.load(path: options.configPath)
        node = options.node ?? config.node ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? ""
        (events, continuation) = AsyncStream.makeStream(of: Event.self)
    }

    /// Runs until SIGTERM or SIGINT; returns the exit status.
    public func run() async -> Int32 {
        let signals = installSignalHandlers()
        defer { for source in signals { source.cancel() } }
        var server: StatusServer?
        if let address = config.daemon.metricsAddress {
            do {
                server = try await StatusServer.start(host: address.host, port: address.port, metrics: metrics)
                log.info("serving /healthz and /metrics", metadata: ["address": "\(address)"])
            } catch {
                log.error("\(error)")
                return 1
            }
        }
        do {
            dataplane = try Dataplane()
        } catch {
            log.error("cannot open netlink", metadata: ["error": "\(error)"])
            return 1
        }
        log.info("starting", metadata: ["node": "\(node)", "config": "\(options.configPath)",
                                         "registry": "\(config.etcd == nil ? "static inventory" : "etcd \(config.etcd!.endpoints.joined(separator: ","))")"])
        startRegistry()
        let resync = Task { [continuation, interval = config.daemon.resyncInterval] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                continuation.yield(.resync)
            }
        }

        var reason = ""
        loop: for await event in events {
            switch event {
            case .registry(_, let generation) where generation != registryGeneration:
                continue
            case .registry(.state(let newView, let invalid), _):
                view = newView
                metrics.update {
                    $0.registryReady = true
                    $0.leasesInvalid = invalid
                    $0.subnet = "\(newView.local.subnet)"
                }
                schedule("registry")
            case .registry(.connection(let connected, let why), _):
                let was = metrics.read(\.registryConnected)
                metrics.registry(connected: connected, error: why)
                if connected && !was { log.info("registry connected") }
                if !connected && was { log.warning("registry unreachable; keeping the forwarding state", metadata: ["error": "\(why ?? "")"]) }
            case .kernel(let what):
                metrics.update { $0.kernelEvents += 1 }
                log.debug("kernel event", metadata: ["event": "\(what)"])
                schedule("kernel")
            case .resync:
                firewall = nil
                schedule("resync")
            case .reload:
                reload()
            case .stop(let why):
                reason = why
                break loop
            case .reconcile:
                queued = false
                reconcile()
            case .reconcileLater:
                delayed = false
                if !triggers.isEmpty { reconcile() }
            }
        }
        log.info("stopping; the forwarding state stays in place", metadata: ["signal": "\(reason)"])
        resync.cancel()
        monitor?.stop()
        await stopRegistry().value
        await server?.stop()
        return 0
    }

    /// Asks for a pass: at once (behind the events already queued, which join
    /// it), or after `delay` for a retry. One pass is queued at most; a trigger
    /// that arrives meanwhile is served by it.
    func schedule(_ trigger: String, after delay: Duration = .zero) {
        triggers.insert(trigger)
        if delay == .zero {
            guard !queued else { return }
            queued = true
            continuation.yield(.reconcile)
        } else {
            guard !queued, !delayed else { return }
            delayed = true
            Task { [continuation] in
                try? await Task.sleep(for: delay)
                continuation.yield(.reconcileLater)
            }
        }
    }

    /// Schedules a retry, waiting longer each time a pass fails again.
    func scheduleRetry(_ trigger: String) {
        retryWait = retryWait == .zero ? options.retryDelay : min(retryWait * 2, .seconds(5))
        schedule(trigger, after: retryWait)
    }

    // MARK: registry

    func startRegistry() {
        registryGeneration += 1
        let generation = registryGeneration
        if let etcd = config.etcd, let publicIP = config.publicIP {
            interface = config.interface
            do {
                let registry = try EtcdRegistry(settings: etcd, node: node, publicIP: publicIP, ttl: config.daemon.leaseTTL,
                                                subnetFile: config.daemon.subnetFile, log: log)
                self.registry = registry
                registryTask = Task { [continuation] in
                    await registry.run { continuation.yield(.registry($0, generation: generation)) }
                }
            } catch {
                log.error("etcd client", metadata: ["error": "\(error)"])
                metrics.update { $0.lastError = "\(error)" }
            }
        } else {
            do {
                let (staticView, staticInterface) = try config.view(node: node)
                interface = staticInterface
                continuation.yield(.registry(.state(staticView, invalidLeases: 0), generation: generation))
                continuation.yield(.registry(.connection(true, nil), generation: generation))
            } catch {
                log.error("\(error)")
                metrics.update { $0.lastError = "\(error)" }
            }
        }
    }

    /// Stops the running registry; its shutdown finishes in the background.
    func stopRegistry() -> Task<Void, Never> {
        let task = registryTask, registry = self.registry
        registryTask = nil
        self.registry = nil
        task?.cancel()
        return Task {
            await task?.value
            await registry?.shutdown()
        }
    }

    func reload() {
        let next: AgentConfig
        do {
            next = try AgentConfig.load(path: options.configPath)
        } catch {
            log.error("reload failed; keeping the running configuration", metadata: ["error": "\(error)"])
            return
        }
        log.info("configuration reloaded", metadata: ["config": "\(options.configPath)"])
        if next.daemon.metricsAddress != config.daemon.metricsAddress {
            log.warning("metricsAddress changes take effect on restart")
        }
        if next.daemon.resyncInterval != config.daemon.resyncInterval {
            log.warning("resyncInterval changes take effect on restart")
        }
        if options.node == nil, let named = next.node, named != node {
            log.warning("node changes take effect on restart", metadata: ["node": "\(node)", "in file": "\(named)"])
        }
        let registryChanged = next.etcd != config.etcd || next.publicIP != config.publicIP || next.daemon.leaseTTL != config.daemon.leaseTTL
        config = next
        firewall = nil
        if next.etcd == nil || registryChanged {
            // The last view stays until the new registry reports: nothing is flushed meanwhile.
            _ = stopRegistry()
            startRegistry()
        }
        schedule("reload")
    }

    // MARK: reconcile

    func reconcile() {
        let started = ContinuousClock.now
        let reasons = triggers
        triggers = []
        guard let view, let dataplane else { return }
        let deviceName = config.deviceName ?? view.network.deviceName
        if monitor == nil {
            let monitor = KernelMonitor(deviceName: deviceName, proto: AgentSettings.defaultProtocol)
            do {
                try monitor.start { [continuation] in continuation.yield(.kernel($0)) }
                self.monitor = monitor
            } catch {
                log.error("cannot listen to kernel events; relying on the resync interval", metadata: ["error": "\(error)"])
            }
        }
        metrics.update { for trigger in reasons { $0.reconciles[trigger, default: 0] += 1 } }

        let lock: SyncLock
        do {
            lock = try SyncLock(path: options.lockPath, timeout: .seconds(5))
        } catch {
            log.warning("another sync holds the lock; trying again", metadata: ["error": "\(error)"])
            scheduleRetry("lock")
            return
        }
        defer { withExtendedLifetime(lock) {} }

        let syncer = Syncer(view: view, interface: interface, layout: config.routeLayout, deviceName: config.deviceName)
        let outcome: SyncOutcome
        do {
            outcome = try syncer.run(dataplane: dataplane, dryRun: false)
        } catch {
            metrics.update {
                $0.reconcileErrors += 1
                $0.lastError = "\(error)"
            }
            log.error("sync failed; nothing applied", metadata: ["error": "\(error)", "trigger": "\(reasons.sorted().joined(separator: ","))"])
            return
        }
        let report = outcome.report ?? ApplyReport()
        monitor?.setDeviceIndex(outcome.deviceIndex)
        // Changes applied: the plan's, less the ones the kernel refused or that were skipped.
        var counts: [String: Int] = [:]
        for change in outcome.plan.changes { counts[Self.label(change), default: 0] += 1 }
        for failure in report.failures { counts[Self.label(failure.change), default: 0] -= 1 }
        counts = counts.filter { $0.value > 0 }
        for failure in report.failures {
            var metadata: Logger.Metadata = ["error": "\(failure.message)"]
            if let name = failure.codeName { metadata["errno"] = "\(name)" }
            log.error("change failed", metadata: metadata)
        }
        let skipped = Set(outcome.plan.skipped.map(\.description))
        for line in skipped.subtracting(skippedReported).sorted() { log.warning("peer skipped", metadata: ["reason": "\(line)"]) }
        skippedReported = skipped
        if !outcome.plan.isEmpty {
            log.info("synced", metadata: [
                "trigger": "\(reasons.sorted().joined(separator: ","))", "peers": "\(outcome.desired.peerCount)",
                "changes": "\(counts.sorted { $0.key < $1.key }.map { "\($0.key.replacingOccurrences(of: " ", with: "-"))=\($0.value)" }.joined(separator: ","))",
                "writes": "\(report.writes)", "failures": "\(report.failures.count)",
            ])
        }

        var fileError: String?
        let network = view.network.network, subnet = view.local.subnet
        let mtu = outcome.desired.device.mtu
        do {
            let env = SubnetEnv(network: network, subnet: subnet, mtu: mtu, ipMasq: config.daemon.ipMasq)
            if try writeAtomically(env.text, to: config.daemon.subnetFile) {
                log.info("wrote subnet.env", metadata: ["path": "\(config.daemon.subnetFile)", "subnet": "\(subnet)"])
            }
            if let path = config.daemon.cniConfFile {
                let cni = CNIConfig(bridge: config.daemon.cniBridge, network: network, subnet: subnet, mtu: mtu)
                if try writeAtomically(cni.text, to: path) { log.info("wrote the CNI configuration", metadata: ["path": "\(path)"]) }
            }
        } catch {
            fileError = "\(error)"
            log.error("cannot write a file", metadata: ["error": "\(error)"])
        }
        do {
            if config.daemon.ipMasq {
                if firewall.map({ $0 != (network, subnet) }) ?? true {
                    try Masquerade.apply(network: network, subnet: subnet)
                    log.debug("masquerade table written", metadata: ["network": "\(network)", "subnet": "\(subnet)"])
                    firewall = (network, subnet)
                }
            } else if firewall != nil || reasons.contains("resync") || reasons.contains("reload") {
                if try Masquerade.remove() { log.info("masquerade table removed (ipMasq is false)") }
                firewall = nil
            }
        } catch {
            firewall = nil
            metrics.update { $0.firewallErrors += 1 }
            fileError = fileError ?? "\(error)"
            log.error("masquerade", metadata: ["error": "\(error)"])
        }

        let elapsed = ContinuousClock.now - started
        metrics.update {
            $0.peers = outcome.desired.peerCount
            $0.peersSkipped = outcome.plan.skipped.count
            $0.kernelWrites += report.writes
            $0.changeFailures += report.failures.count
            for (key, value) in counts { $0.changes[key, default: 0] += value }
            $0.lastDuration = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            if report.failures.isEmpty && fileError == nil {
                $0.lastSuccess = Date().timeIntervalSince1970
                $0.lastError = nil
            } else {
                $0.lastError = report.failures.first?.message ?? fileError
            }
        }
        if report.failures.isEmpty {
            retryWait = .zero
        } else {
            // A busy kernel or a broken exchange is worth another pass soon; a
            // refusal (EEXIST, EINVAL, ...) repeats until something changes: back off.
            if report.failures.allSatisfy(\.isTransient) { retryWait = .zero }
            scheduleRetry("retry")
        }
    }

    /// "kind action" of a change, for metrics.
    static func label(_ change: Change) -> String {
        switch change {
        case .createDevice: "link add"
        case .recreateDevice: "link recreate"
        case .updateDevice: "link update"
        case .deleteDevice: "link remove"
        case .add(let entry): "\(entry.kind) add"
        case .replace(_, let entry): "\(entry.kind) update"
        case .remove(let entry): "\(entry.kind) remove"
        }
    }

    // MARK: signals

    func installSignalHandlers() -> [any DispatchSourceSignal] {
        [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT"), (SIGHUP, "SIGHUP")].map { number, name in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [continuation] in
                continuation.yield(number == SIGHUP ? .reload : .stop(name))
            }
            source.resume()
            return source
        }
    }
}
