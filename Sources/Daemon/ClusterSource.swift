import Foundation
import Logging
import Model
import Reconcile
import Registry

/// Where the cluster comes from: the static inventory in the file, or flannel's
/// leases in etcd, or Kubernetes Node objects (`KubeSource`). Every command reads
/// the cluster through one: `sync` and `diff` once (`read`), the daemon
/// continuously (`run`). Leases become a cluster view through one function,
/// `Flannel.clusterView`, whichever reads them.
public protocol ClusterSource: Sendable {
    /// The underlay interface the file names for this node (nil: the one holding its public IP).
    var interface: String? { get }
    /// The cluster once, with a warning per lease or node left out.
    func read() async throws -> (view: ClusterView, warnings: [String])
    /// The cluster as it changes: a whole view first (`.state`), then changes
    /// (`.peers`) and whether the source answers (`.connection`), until cancelled.
    func run(emit: @escaping @Sendable (RegistryEvent) -> Void) async
    /// Releases what `run` held (connections), after it returned.
    func shutdown() async
}

/// The source the configuration file chooses for `node`.
public func clusterSource(config: AgentConfig, node: String, log: Logger) throws -> any ClusterSource {
    if let kubernetes = config.kubernetes {
        return try KubeSource(config: config, settings: kubernetes, node: node, log: log)
    }
    if let etcd = config.etcd {
        // An IPv6-only network needs publicIPv6 only; which one the network needs is known once etcd is read.
        guard config.publicIP != nil || config.publicIPv6 != nil else {
            throw DaemonError("\(config.source): publicIP is required with etcd (publicIPv6 in an IPv6-only network)")
        }
        return EtcdSource(config: config, settings: etcd, node: node, publicIP: config.publicIP, log: log)
    }
    return try StaticInventory(config: config, node: node)
}

/// The `nodes` of the configuration file: read once, never changes while it runs
/// (a SIGHUP reads the file again and makes a new one).
public struct StaticInventory: ClusterSource {
    let view: ClusterView
    public let interface: String?

    public init(config: AgentConfig, node: String) throws {
        (view, interface) = try config.view(node: node)
    }

    public func read() async throws -> (view: ClusterView, warnings: [String]) { (view, []) }

    public func run(emit: @escaping @Sendable (RegistryEvent) -> Void) async {
        emit(.state(view, invalidLeases: 0))
        emit(.connection(true, nil))
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
    }

    public func shutdown() async {}
}

/// flannel's leases in etcd: `read` lists them once (this node must hold one
/// already); `run` is the `EtcdRegistry` (takes and renews this node's lease,
/// lists, watches).
public final class EtcdSource: ClusterSource {
    let config: AgentConfig
    let settings: EtcdSettings
    let node: String
    let publicIP: IPv4Address?
    let log: Logger
    let registry: EtcdRegistry?

    init(config: AgentConfig, settings: EtcdSettings, node: String, publicIP: IPv4Address?, log: Logger,
         registry: EtcdRegistry? = nil) {
        self.config = config
        self.settings = settings
        self.node = node
        self.publicIP = publicIP
        self.log = log
        self.registry = registry
    }

    public var interface: String? { config.interface }

    public func read() async throws -> (view: ClusterView, warnings: [String]) {
        try await readEtcdView(config: config, node: node)
    }

    /// The source with its registry made (its etcd client): what the daemon runs.
    public func started() throws -> EtcdSource {
        EtcdSource(config: config, settings: settings, node: node, publicIP: publicIP, log: log,
                   registry: try EtcdRegistry(settings: settings, node: node, publicIP: publicIP, publicIPv6: config.publicIPv6,
                                              ttl: config.daemon.leaseTTL,
                                              subnetFile: config.daemon.subnetFile, log: log,
                                              renewMargin: config.daemon.leaseRenewMargin))
    }

    public func run(emit: @escaping @Sendable (RegistryEvent) -> Void) async {
        await registry?.run(emit: emit)
    }

    public func shutdown() async { await registry?.shutdown() }
}
