import Agent
import Dataplane
import Foundation
import Logging
import Model
import Reconcile
import Registry

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

        public init(configPath: String, node: String?, lockPath: String) {
            self.configPath = configPath
            self.node = node
            self.lockPath = lockPath
        }
    }

    /// What the async side reacts to.
    enum Event: Sendable {
        /// From the registry started as `generation`; a stopped registry's late events are dropped.
        case registry(RegistryEvent, generation: Int)
        case reload
        case stop(String)
    }

    let options: Options
    let log: Logger
    public let metrics = Metrics()
    var config: AgentConfig
    let node: String
    let events: AsyncStream<Event>
    let continuation: AsyncStream<Event>.Continuation

    var registry: EtcdRegistry?
    var registryTask: Task<Void, Never>?
    var registryGeneration = 0
    var reconciler: Reconciler?

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
        let reconciler: Reconciler
        do {
            reconciler = try Reconciler(options: options, config: config, metrics: metrics, log: log)
        } catch {
            log.error("cannot open netlink", metadata: ["error": "\(error)"])
            return 1
        }
        self.reconciler = reconciler
        reconciler.start()
        log.info("starting", metadata: ["node": "\(node)", "config": "\(options.configPath)",
                                         "registry": "\(config.etcd == nil ? "static inventory" : "etcd \(config.etcd!.endpoints.joined(separator: ","))")"])
        startRegistry()

        var reason = ""
        loop: for await event in events {
            switch event {
            case .registry(_, let generation) where generation != registryGeneration:
                continue
            case .registry(.state(let view, let invalid), _):
                metrics.update {
                    $0.registryReady = true
                    $0.leasesInvalid = invalid
                    $0.subnet = "\(view.local.subnet)"
                }
                reconciler.post { $0.view = view }
            case .registry(.peers(let upserts, let removals, let invalid), _):
                metrics.update { $0.leasesInvalid = invalid }
                reconciler.post { work in
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
            case .stop(let why):
                reason = why
                break loop
            }
        }
        log.info("stopping; the forwarding state stays in place", metadata: ["signal": "\(reason)"])
        await reconciler.stop()
        await stopRegistry().value
        await server?.stop()
        return 0
    }

    // MARK: registry

    func startRegistry() {
        registryGeneration += 1
        let generation = registryGeneration
        if let etcd = config.etcd, let publicIP = config.publicIP {
            let interface = config.interface
            reconciler?.post { $0.interface = .some(interface) }
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
                reconciler?.post { $0.interface = .some(staticInterface) }
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
        reconciler?.post { $0.config = next }
        if next.etcd == nil || registryChanged {
            // The last view stays until the new registry reports: nothing is flushed meanwhile.
            _ = stopRegistry()
            startRegistry()
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
