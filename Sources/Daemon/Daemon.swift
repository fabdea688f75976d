import Agent
import Dataplane
import Foundation
import Logging
import Model
import Reconcile
import Registry
import ServiceLifecycle
import UnixSignals

/// `vxlan-agent run`: keeps this node in sync continuously.
///
/// Three threads of work: the registry (etcd's watch, or the static inventory)
/// and the signals on the cooperative pool; the kernel monitor on a thread of
/// its own; and the `Reconciler`, on a thread of its own with its netlink
/// socket, which applies what the other two report: a lease or a kernel event
/// as soon as it arrives, touching only its entries, and a full pass (the same
/// diff as `sync`) at start, after failures, after lost events and every resync
/// interval. It writes subnet.env and the CNI configuration, keeps the
/// masquerade table, and /healthz and /metrics are served beside it.
/// SIGTERM/SIGINT stop it and leave the forwarding state in place; SIGHUP
/// reloads the configuration file.
public final class Daemon: @unchecked Sendable {
    public struct Options: Sendable {
        public var configPath: String
        public var node: String?
        public var lockPath: String
        /// The first wait before a pass is tried again after changes failed or the
        /// lock was busy; doubled for each pass that fails again, up to 5 s.
        public var retryDelay: Duration = .milliseconds(100)
        /// A configuration made elsewhere (`vxlan-agent flanneld`'s command line)
        /// instead of the file at `configPath`; SIGHUP then has nothing to reload.
        public var preloaded: AgentConfig?
        /// Applied to every configuration read (at start and on SIGHUP): the
        /// command resolves the file's interface selection on the kernel here.
        public var prepare: (@Sendable (AgentConfig) throws -> AgentConfig)?

        public init(configPath: String, node: String?, lockPath: String) {
            self.configPath = configPath
            self.node = node
            self.lockPath = lockPath
        }
    }

    /// What the coordinating service reacts to.
    enum Event: Sendable {
        /// From the registry started as `generation`; a stopped registry's late events are dropped.
        case registry(RegistryEvent, generation: Int)
        case reload
        case stop
    }

    let options: Options
    let log: Logger
    public let metrics = Metrics()
    var config: AgentConfig
    let node: String
    let events: AsyncStream<Event>
    let continuation: AsyncStream<Event>.Continuation

    var source: (any ClusterSource)?
    var registryTask: Task<Void, Never>?
    var registryGeneration = 0
    var reconciler: Reconciler?

    public init(options: Options, log: Logger) throws {
        self.options = options
        self.log = log
        let loaded = try options.preloaded ?? AgentConfig.load(path: options.configPath)
        config = try options.prepare?(loaded) ?? loaded
        node = AgentConfig.nodeName(flag: options.node, config: config)
        (events, continuation) = AsyncStream.makeStream(of: Event.self)
    }

    /// Runs until SIGTERM or SIGINT; returns the exit status.
    ///
    /// The daemon is a `ServiceGroup` of three services: the reconciler (its
    /// thread), the status server, and the coordinator (the registry, SIGHUP,
    /// and the hand-over of what the registry reports). SIGTERM and SIGINT shut
    /// the group down gracefully, in reverse order: the registry stops first,
    /// the reconciler finishes its pass last. The forwarding state stays.
    public func run() async -> Int32 {
        Self.tuneMalloc()
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let address = config.daemon.metricsAddress {
            do {
                let server = try await StatusServer.start(host: address.host, port: address.port, metrics: metrics)
                log.info("serving /healthz, /readyz and /metrics", metadata: ["address": "\(address)"])
                services.append(.init(service: StatusService(server: server)))
            } catch {
                log.error("\(error)")
                return 1
            }
        }
        let reconciler: Reconciler
        do {
            reconciler = try Reconciler(options: options, config: config, metrics: metrics, log: log)
        } catch {
            log.error("cannot open netlink", metadata: ["error": "\(error)"])
            return 1
        }
        self.reconciler = reconciler
        services.insert(.init(service: ReconcilerService(reconciler: reconciler)), at: 0)
        services.append(.init(service: Coordinator(daemon: self), successTerminationBehavior: .gracefullyShutdownGroup))
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: log)
        configuration.logging.keys.signalKey = "signal"
        let group = ServiceGroup(configuration: configuration)
        do {
            try await group.run()
        } catch {
            log.error("stopped", metadata: ["error": "\(error)"])
            return 1
        }
        return 0
    }

    /// glibc's allocator, for a daemon that holds tens of MiB in a few large
    /// tables: at most two arenas (glibc makes up to eight per core, one for each
    /// thread that finds the others locked, and each keeps what its threads freed),
    /// and blocks from 256 KiB up mapped on their own (a table that grows hands
    /// its old storage back at once; glibc's own threshold climbs to 32 MiB after
    /// the first such block is freed, and then they stay in the heap).
    /// Measured at 50,000 peers: VmHWM 94 -> 88 MiB.
    static func tuneMalloc() {
        _ = mallopt(-8 /* M_ARENA_MAX */, 2)
        _ = mallopt(-3 /* M_MMAP_THRESHOLD */, 256 * 1024)
    }

    /// The coordinator's work: start the registry, hand what it reports to the
    /// reconciler, reload on SIGHUP, until the group shuts down.
    func coordinate() async {
        let registry = if let etcd = config.etcd { "etcd \(etcd.endpoints.joined(separator: ","))" }
            else if let kube = config.kubernetes { "kubernetes \(kube.apiURL ?? kube.kubeconfig ?? "in-cluster")" }
            else { "static inventory" }
        log.info("starting", metadata: ["node": "\(node)", "config": "\(options.configPath)", "registry": "\(registry)"])
        startRegistry()
        let hangups = Task { [continuation] in
            for await _ in await UnixSignalsSequence(trapping: .sighup) { continuation.yield(.reload) }
        }
        await withGracefulShutdownHandler {
            loop: for await event in events {
                switch event {
                case .registry(_, let generation) where generation != registryGeneration:
                    continue
                case .registry(.state(let view, let invalid), _):
                    metrics.update {
                        $0.registryReady = true
                        $0.leasesInvalid = invalid
                        $0.subnet = view.network.enableIPv4 ? "\(view.local.subnet)" : view.local.ipv6.map { "\($0.subnet)" }
                    }
                    reconciler?.post { $0.view = view }
                case .registry(.peers(let upserts, let removals, let invalid), _):
                    metrics.update { $0.leasesInvalid = invalid }
                    reconciler?.post { work in
                        for key in removals {
                            work.upserts[key] = nil
                            work.removals.insert(key)
                        }
                        for record in upserts {
                            work.removals.remove(record.origin)
                            work.upserts[record.origin] = record
                        }
                    }
                case .registry(.connection(let connected, let why), _):
                    let was = metrics.read(\.registryConnected)
                    metrics.registry(connected: connected, error: why)
                    if connected && !was { log.info("registry connected") }
                    if !connected && was { log.warning("registry unreachable; keeping the forwarding state", metadata: ["error": "\(why ?? "")"]) }
                case .reload:
                    reload()
                case .stop:
                    break loop
                }
            }
        } onGracefulShutdown: { [continuation] in
            continuation.yield(.stop)
        }
        hangups.cancel()
        log.info("stopping; the forwarding state stays in place")
        await stopRegistry().value
    }

    // MARK: registry

    func startRegistry() {
        registryGeneration += 1
        let generation = registryGeneration
        do {
            var source = try clusterSource(config: config, node: node, log: log)
            if let etcd = source as? EtcdSource { source = try etcd.started() }
            let interface = source.interface
            reconciler?.post { $0.interface = .some(interface) }
            self.source = source
            registryTask = Task { [continuation] in
                await source.run { continuation.yield(.registry($0, generation: generation)) }
            }
        } catch {
            log.error("\(error)")
            metrics.update { $0.lastError = "\(error)" }
        }
    }

    /// Stops the running registry; its shutdown finishes in the background.
    func stopRegistry() -> Task<Void, Never> {
        let task = registryTask, source = self.source
        registryTask = nil
        self.source = nil
        task?.cancel()
        return Task {
            await task?.value
            await source?.shutdown()
        }
    }

    func reload() {
        if options.preloaded != nil {
            log.info("SIGHUP: the configuration comes from the command line; nothing to reload")
            return
        }
        var next: AgentConfig
        do {
            next = try AgentConfig.load(path: options.configPath)
            if let prepare = options.prepare { next = try prepare(next) }
        } catch {
            log.error("reload failed; keeping the running configuration", metadata: ["error": "\(error)"])
            return
        }
        log.info("configuration reloaded", metadata: ["config": "\(options.configPath)"])
        if next.daemon.metricsAddress != config.daemon.metricsAddress {
            log.warning("metricsAddress changes take effect on restart")
        }
        if next.daemon.resyncInterval != config.daemon.resyncInterval {
            log.info("resyncInterval changed; it takes effect after the next resync")
        }
        if options.node == nil, let named = next.node, named != node {
            log.warning("node changes take effect on restart", metadata: ["node": "\(node)", "in file": "\(named)"])
        }
        if next.deviceName != config.deviceName {
            // The monitor and the picture follow the running device; a rename would leave the old one behind.
            log.warning("device changes take effect on restart", metadata: ["device": "\(config.deviceName ?? "default")"])
            next.deviceName = config.deviceName
        }
        let registryChanged = next.etcd != config.etcd || next.publicIP != config.publicIP || next.publicIPv6 != config.publicIPv6 || next.daemon.leaseTTL != config.daemon.leaseTTL
        config = next
        reconciler?.post { $0.config = next }
        if next.etcd == nil || registryChanged {
            // The last view stays until the new registry reports: nothing is flushed meanwhile.
            _ = stopRegistry()
            startRegistry()
        }
    }
}

/// The reconciler's thread, as a service: started with the group, stopped last.
struct ReconcilerService: Service {
    let reconciler: Reconciler

    func run() async throws {
        reconciler.start()
        try? await gracefulShutdown()
        await reconciler.stop()
    }
}

/// /healthz and /metrics, as a service.
struct StatusService: Service {
    let server: StatusServer

    func run() async throws {
        try? await gracefulShutdown()
        await server.stop()
    }
}

/// The registry, SIGHUP and the hand-over to the reconciler, as a service.
struct Coordinator: Service {
    let daemon: Daemon

    func run() async throws { await daemon.coordinate() }
}
