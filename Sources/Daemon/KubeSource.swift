import Foundation
import Logging
import Model
import Reconcile
import Registry

/// flannel's annotation names under a prefix (`newAnnotations` in flannel's
/// pkg/subnet/kube): `<prefix>/kube-subnet-manager`, `backend-type`,
/// `backend-data`, `public-ip`, and the IPv6 and overwrite ones.
public struct KubeAnnotations: Sendable, Hashable {
    public var kubeSubnetManager, backendData, backendV6Data, backendType, publicIP, publicIPv6: String
    public var nodePublicIP, nodePublicIPv6, publicIPOverwrite, publicIPv6Overwrite: String

    public init(prefix: String = "flannel.alpha.coreos.com") throws {
        guard let base = KubernetesSettings.annotationBase(prefix) else {
            throw DaemonError("kubernetes.annotationPrefix \(quoted(prefix)) is not a prefix flanneld accepts (fqdn/[a-z0-9_-]*)")
        }
        kubeSubnetManager = base + "kube-subnet-manager"
        backendData = base + "backend-data"
        backendV6Data = base + "backend-v6-data"
        backendType = base + "backend-type"
        publicIP = base + "public-ip"
        publicIPv6 = base + "public-ipv6"
        nodePublicIP = base + "node-public-ip"
        nodePublicIPv6 = base + "node-public-ipv6"
        publicIPOverwrite = base + "public-ip-overwrite"
        publicIPv6Overwrite = base + "public-ipv6-overwrite"
    }
}

/// Node objects to flannel leases and back, pure: what flanneld's kube subnet
/// manager reads on every Node (`nodeToLease`) and writes on its own (`AcquireLease`).
public enum KubeNodes {
    /// The key a Node's peer has in the view (`NodeRecord.origin`), and its removal's.
    public static func origin(_ name: String) -> String { "node/\(name)" }

    /// The Node's IPv4 pod subnet: `spec.podCIDRs`' IPv4 entry (at most two
    /// entries: IPv4, IPv6 or both), else `spec.podCIDR`. nil with a reason when
    /// there is none yet or it does not parse.
    public static func podSubnet(_ node: KubeNode) -> Result<IPv4Prefix, SkippedLease> {
        func skip(_ reason: String) -> Result<IPv4Prefix, SkippedLease> { .failure(SkippedLease(key: origin(node.name), reason: reason)) }
        let cidrs = node.podCIDRs.isEmpty ? (node.podCIDR.map { [$0] } ?? []) : node.podCIDRs
        if cidrs.count > 2 { return skip("spec.podCIDRs has \(cidrs.count) entries: at most IPv4 and IPv6") }
        guard let text = cidrs.first(where: { !$0.contains(":") }), !text.isEmpty else {
            return skip(cidrs.isEmpty || cidrs == [""] ? "no podCIDR assigned yet (spec.podCIDR)" : "no IPv4 podCIDR (\(cidrs.joined(separator: ",")))")
        }
        guard let prefix = IPv4Prefix(text) else { return skip("spec.podCIDR \(quoted(text)) is not an IPv4 prefix") }
        // Go's net.ParseCIDR gives the network: host bits are dropped.
        return .success(IPv4Prefix(prefix.network, prefix.length))
    }

    /// A peer from another node's Node (flanneld: only Nodes whose
    /// kube-subnet-manager annotation is "true"; nil for the others), checked as
    /// a lease of `network`'s backend is: its public-ip, backend-type and
    /// backend-data, its VNI.
    public static func peer(_ node: KubeNode, annotations: KubeAnnotations, network: NetworkConfig) -> Result<NodeRecord, SkippedLease>? {
        guard node.annotations[annotations.kubeSubnetManager] == "true" else { return nil }
        let key = origin(node.name)
        func skip(_ reason: String) -> Result<NodeRecord, SkippedLease> { .failure(SkippedLease(key: key, reason: reason)) }
        let subnet: IPv4Prefix
        switch podSubnet(node) {
        case .success(let prefix): subnet = prefix
        case .failure(let skipped): return .failure(skipped)
        }
        guard let ipText = node.annotations[annotations.publicIP] else { return skip("\(annotations.publicIP) is missing") }
        // The annotations as the lease value flanneld's etcd registry would hold,
        // read by the same reader: backend-data must be one JSON value of its own.
        var value = "{\"PublicIP\":\(jsonString(ipText))"
        let type = node.annotations[annotations.backendType] ?? ""
        if !type.isEmpty { value += ",\"BackendType\":\(jsonString(type))" }
        if let data = node.annotations[annotations.backendData], !data.isEmpty {
            guard (try? JSONSerialization.jsonObject(with: Data(data.utf8), options: .fragmentsAllowed)) != nil else {
                return skip("\(annotations.backendData) is not JSON: \(quoted(data))")
            }
            value += ",\"BackendData\":" + data
        }
        value += "}"
        do {
            let attributes = try LeaseAttributes.parse(Array(value.utf8), key: key, backendType: network.backendType)
            if let vni = attributes.vni, vni != network.vni {
                return skip("\(annotations.backendData): VNI \(vni), but the network uses VNI \(network.vni)")
            }
            return .success(NodeRecord(name: node.name, publicIP: attributes.publicIP, subnet: subnet,
                                       vtepMAC: attributes.vtepMAC, origin: key))
        } catch {
            let field = [annotations.publicIP: "PublicIP", annotations.backendType: "BackendType", annotations.backendData: "BackendData"]
                .first { error.field.hasPrefix($0.value) }?.key ?? error.field
            return skip(field.isEmpty ? error.message : "\(field): \(error.message)")
        }
    }

    static func jsonString(_ text: String) -> String {
        (try? JSONEncoder().encode(text)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
    }

    /// The annotations flanneld writes on its own Node for `network`'s backend
    /// (`AcquireLease`): backend-type, backend-data (vxlan: `{"VNI":1,"VtepMAC":...}`;
    /// host-gw and udp: `null`), public-ip, kube-subnet-manager "true". udp has
    /// no backend type (flanneld's udp leases have none).
    public static func ownAnnotations(network: NetworkConfig, publicIP: IPv4Address, annotations: KubeAnnotations) -> [String: String] {
        let attributes = LeaseAttributes.own(publicIP: publicIP, network: network)
        let data = attributes.vtepMAC.map { mac in "{" + (attributes.vni.map { "\"VNI\":\($0)," } ?? "") + "\"VtepMAC\":\"\(mac)\"}" } ?? "null"
        return [annotations.backendType: attributes.backendType, annotations.backendData: data,
                annotations.publicIP: "\(publicIP)", annotations.kubeSubnetManager: "true"]
    }

    /// This node's public IP: the Node's public-ip-overwrite annotation (flanneld
    /// publishes it instead of its own address), else the configured one, else
    /// the Node's first IPv4 InternalIP.
    public static func publicIP(of node: KubeNode, configured: IPv4Address?, annotations: KubeAnnotations) -> IPv4Address? {
        if let text = node.annotations[annotations.publicIPOverwrite], let address = IPv4Address(text) { return address }
        if let configured { return configured }
        return node.internalIPs.lazy.compactMap { IPv4Address($0) }.first
    }

    /// The strategic merge patch that makes the Node's annotations `wanted`, or
    /// nil when they say so already (flanneld patches only then).
    public static func annotationPatch(_ node: KubeNode, wanted: [String: String]) -> [UInt8]? {
        let differing = wanted.filter { node.annotations[$0.key] != $0.value }
        guard !differing.isEmpty else { return nil }
        let fields = differing.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
        return Array("{\"metadata\":{\"annotations\":{\(fields.joined(separator: ","))}}}".utf8)
    }

    /// flanneld's `CompleteLease`: NetworkUnavailable False, reason FlannelIsUp.
    public static func networkAvailablePatch(now: Date = Date()) -> [UInt8] {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        let time = formatter.string(from: now)
        return Array(("{\"status\":{\"conditions\":[{\"type\":\"NetworkUnavailable\",\"status\":\"False\","
            + "\"lastHeartbeatTime\":\"\(time)\",\"lastTransitionTime\":\"\(time)\","
            + "\"reason\":\"FlannelIsUp\",\"message\":\"Flannel is running on this node\"}]}}").utf8)
    }

    /// This node's record, or why it cannot be built yet.
    public static func local(_ node: KubeNode?, name: String, network: NetworkConfig, configuredIP: IPv4Address?,
                             annotations: KubeAnnotations) -> Result<NodeRecord, DaemonError> {
        guard let node else { return .failure(DaemonError("Node \(quoted(name)) does not exist (yet)")) }
        let subnet: IPv4Prefix
        switch podSubnet(node) {
        case .success(let prefix): subnet = prefix
        case .failure(let skipped): return .failure(DaemonError("node \(quoted(name)) pod cidr not assigned: \(skipped.reason)"))
        }
        guard network.network.contains(subnet) && subnet.length >= network.network.length else {
            return .failure(DaemonError("subnet \(network.network) specified in the flannel net config doesn't contain "
                                        + "\(subnet) PodCIDR of the \(quoted(name)) node"))
        }
        guard let publicIP = publicIP(of: node, configured: configuredIP, annotations: annotations) else {
            return .failure(DaemonError("node \(quoted(name)): no public IP: set publicIP (--public-ip), or the Node needs an IPv4 InternalIP"))
        }
        return .success(NodeRecord(name: name, publicIP: publicIP, subnet: subnet, vtepMAC: .vtep(vni: network.vni, publicIP: publicIP),
                                   origin: origin(name)))
    }

    /// The view from listed Nodes, and the Nodes left out (with why), as `sync` reads it.
    public static func view(nodes: [KubeNode], node name: String, network: NetworkConfig, configuredIP: IPv4Address?,
                            annotations: KubeAnnotations) -> Result<(view: ClusterView, skipped: [SkippedLease]), DaemonError> {
        let local: NodeRecord
        switch Self.local(nodes.first { $0.name == name }, name: name, network: network, configuredIP: configuredIP, annotations: annotations) {
        case .success(let record): local = record
        case .failure(let error): return .failure(error)
        }
        var peers: [NodeRecord] = [], skipped: [SkippedLease] = []
        for node in nodes.sorted(by: { $0.name < $1.name }) where node.name != name {
            switch peer(node, annotations: annotations, network: network) {
            case .success(let record)?: peers.append(record)
            case .failure(let reason)?: skipped.append(reason)
            case nil: break
            }
        }
        return .success((ClusterView(network: network, local: local, peers: peers), skipped))
    }
}

/// Kubernetes Node objects, as flanneld's `--kube-subnet-mgr`: each node's
/// subnet is its Node's podCIDR, each node's backend data are annotations on
/// its Node, and the network is flannel's net-conf.json in a file. `read`
/// lists the Nodes once; `run` lists, then watches from the list's
/// resourceVersion (a watch that ends is resumed from the last version seen;
/// 410 Gone lists again), writes this node's annotations, and waits for a
/// podCIDR when the Node has none yet.
public final class KubeSource: ClusterSource {
    let config: AgentConfig
    let settings: KubernetesSettings
    let node: String
    let log: Logger
    let credentials: KubeCredentials
    let annotations: KubeAnnotations
    let network: NetworkConfig
    /// The server's watch timeout (`timeoutSeconds`); tests shorten it.
    let watchTimeout: Duration

    public init(config: AgentConfig, settings: KubernetesSettings, node: String, log: Logger,
                environment: [String: String] = ProcessInfo.processInfo.environment,
                serviceAccount: String = KubeCredentials.serviceAccountDirectory, watchTimeout: Duration = .seconds(300)) throws {
        self.config = config
        self.settings = settings
        self.node = node
        self.log = log
        self.watchTimeout = watchTimeout
        annotations = try KubeAnnotations(prefix: settings.annotationPrefix)
        credentials = try KubeCredentials.resolve(settings, environment: environment, serviceAccount: serviceAccount)
        let data: Data
        do {
            data = try AgentConfig.readFile(settings.netConfPath)
        } catch {
            throw DaemonError("failed to read net conf \(settings.netConfPath) (kubernetes.netConfPath, --net-config-path): \(error.message)")
        }
        var network = try NetworkConfig.parse(data, source: settings.netConfPath)
        // Dual stack from Node objects (podCIDRs' IPv6 entry, the IPv6 annotations)
        // is not built yet: the Kubernetes registry runs the IPv4 network only, as
        // an IPv4-only flanneld in a dual-stack cluster does.
        if network.ipv6 != nil {
            log.warning("EnableIPv6: the Kubernetes registry runs IPv4 only (dual stack from Node objects is not built yet)",
                        metadata: ["netConfPath": "\(settings.netConfPath)"])
            network.ipv6 = nil
        }
        self.network = network
    }

    public var interface: String? { config.interface }

    func makeClient() throws -> KubeClient { try KubeClient(credentials: credentials, watchTimeout: watchTimeout) }

    public func read() async throws -> (view: ClusterView, warnings: [String]) {
        let client = try makeClient()
        do {
            let (nodes, _) = try await client.listNodes()
            await client.shutdown()
            switch KubeNodes.view(nodes: nodes, node: node, network: network, configuredIP: config.publicIP, annotations: annotations) {
            case .success(let result): return (result.view, result.skipped.map(\.description))
            case .failure(let error): throw error
            }
        } catch {
            await client.shutdown()
            throw error
        }
    }

    public func shutdown() async {}

    /// What `run` keeps between events: the peers it reported, this node's
    /// Node, and the Nodes skipped (by name: the resourceVersion logged).
    /// One `run`'s, on its task only.
    final class Tracked {
        var version = ""
        var resumed = false
        var peers: [String: NodeRecord] = [:]
        var skipped: [String: String] = [:]
        var own: KubeNode?
        /// This node's record as last reported (nil: not ready, nothing reported).
        var local: NodeRecord?
        /// NetworkUnavailable set to False (once per run, as flanneld's CompleteLease).
        var conditionSet = false
        var waitingLogged = false
    }

    public func run(emit: @escaping @Sendable (RegistryEvent) -> Void) async {
        let client: KubeClient
        do {
            client = try makeClient()
        } catch {
            emit(.connection(false, "\(error)"))
            log.error("\(error)")
            return
        }
        log.info("starting the kube subnet manager", metadata: ["node": "\(node)", "server": "\(credentials.server)",
                                                                "credentials": "\(credentials.origin)"])
        let tracked = Tracked()
        var delay = Duration.milliseconds(250)
        var listed = false
        while !Task.isCancelled {
            do {
                let (nodes, listVersion) = try await client.listNodes(fromCache: !listed)
                listed = true
                emit(.connection(true, nil))
                delay = .milliseconds(250)
                tracked.version = listVersion
                tracked.peers = [:]
                tracked.local = nil
                tracked.own = nodes.first { $0.name == node }
                // Nodes deleted while the watch was away are no longer skipped ones.
                let names = Set(nodes.map(\.name))
                tracked.skipped = tracked.skipped.filter { names.contains($0.key) }
                for item in nodes where item.name != node { track(item, in: tracked) }
                try await becomeReady(tracked, client: client, emit: emit, force: true)
                log.debug("listed nodes", metadata: ["nodes": "\(nodes.count)", "resourceVersion": "\(listVersion)"])
                // Watch until 410 Gone; a watch the server ends is resumed from the
                // last version, and so is one that breaks, once: a second break
                // before any event is an outage (reported, then a list).
                tracked.resumed = false
                while !Task.isCancelled {
                    do {
                        try await watch(client: client, tracked, emit: emit)
                        tracked.resumed = false
                    } catch let error as KubeError where error.status == nil && !tracked.resumed && !Task.isCancelled {
                        tracked.resumed = true
                        log.info("the watch broke; resuming it from the last resourceVersion",
                                 metadata: ["error": "\(error)", "resourceVersion": "\(tracked.version)"])
                    }
                }
            } catch let error as KubeError where error.isGone {
                log.info("the watch's resourceVersion expired (410 Gone); listing the Nodes again", metadata: ["error": "\(error)"])
            } catch {
                if Task.isCancelled { continue }
                emit(.connection(false, "\(error)"))
                log.error("the Kubernetes API is unavailable; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(8))
            }
        }
        await client.shutdown()
    }

    /// One watch from `version`, applying each event as it comes.
    func watch(client: KubeClient, _ tracked: Tracked, emit: @escaping @Sendable (RegistryEvent) -> Void) async throws {
        try await client.watchNodes(from: tracked.version) { event in
            tracked.resumed = false
            switch event {
            case .bookmark(let rv):
                tracked.version = rv
            case .added(let item), .modified(let item):
                tracked.version = item.resourceVersion
                try await self.apply(item, deleted: false, tracked, client: client, emit: emit)
            case .deleted(let item):
                tracked.version = item.resourceVersion
                try await self.apply(item, deleted: true, tracked, client: client, emit: emit)
            case .error:
                break
            }
        }
    }

    /// Records another node's Node in `tracked`; returns the change to report
    /// (an upsert, a removal, or nothing).
    @discardableResult
    func track(_ item: KubeNode, deleted: Bool = false, in tracked: Tracked) -> (upsert: NodeRecord?, removal: String?) {
        let key = KubeNodes.origin(item.name)
        let result = deleted ? nil : KubeNodes.peer(item, annotations: annotations, network: network)
        switch result {
        case .success(let record)?:
            tracked.skipped[item.name] = nil
            if tracked.peers[item.name] == record { return (nil, nil) }
            tracked.peers[item.name] = record
            return (record, nil)
        case .failure(let skipped)?:
            if tracked.skipped[item.name] != item.resourceVersion {
                tracked.skipped[item.name] = item.resourceVersion
                if skipped.reason.hasPrefix("no podCIDR") {
                    log.info("node skipped until it has a podCIDR", metadata: ["node": "\(item.name)"])
                } else {
                    log.warning("node skipped", metadata: ["node": "\(Flannel.printable(item.name))",
                                                           "error": "\(Flannel.printable(skipped.reason, limit: 512))"])
                }
            }
        case nil:
            tracked.skipped[item.name] = nil
        }
        return tracked.peers.removeValue(forKey: item.name) != nil ? (nil, key) : (nil, nil)
    }

    func apply(_ item: KubeNode, deleted: Bool, _ tracked: Tracked, client: KubeClient,
               emit: @escaping @Sendable (RegistryEvent) -> Void) async throws {
        if item.name == node {
            if deleted {
                log.warning("this node's Node was deleted; keeping the last state", metadata: ["node": "\(node)"])
                tracked.own = nil
                return
            }
            tracked.own = item
            try await becomeReady(tracked, client: client, emit: emit, force: false)
            return
        }
        let change = track(item, deleted: deleted, in: tracked)
        // Until this node is ready nothing has been reported: the state that makes it ready carries every peer.
        guard tracked.local != nil, change.upsert != nil || change.removal != nil else { return }
        emit(.peers(upserts: change.upsert.map { [$0] } ?? [], removals: change.removal.map { [$0] } ?? [],
                    invalidLeases: tracked.skipped.count))
    }

    /// Reports the whole state when this node is ready (its Node has a podCIDR)
    /// and its record changed (or `force`: after a list), writing its
    /// annotations first; logs once why it waits otherwise.
    func becomeReady(_ tracked: Tracked, client: KubeClient, emit: @escaping @Sendable (RegistryEvent) -> Void,
                     force: Bool) async throws {
        let local: NodeRecord
        switch KubeNodes.local(tracked.own, name: node, network: network, configuredIP: config.publicIP, annotations: annotations) {
        case .success(let record): local = record
        case .failure(let why):
            if !tracked.waitingLogged {
                tracked.waitingLogged = true
                log.warning("waiting for this node's Node: \(why) (the controller manager assigns podCIDRs with --allocate-node-cidrs)",
                            metadata: ["node": "\(node)"])
            }
            return
        }
        tracked.waitingLogged = false
        if let own = tracked.own,
           let patch = KubeNodes.annotationPatch(own, wanted: KubeNodes.ownAnnotations(network: network, publicIP: local.publicIP,
                                                                                       annotations: annotations)) {
            tracked.own = try await client.patchNodeStatus(node, patch: patch)
            log.info("annotations written on this node's Node", metadata: ["node": "\(node)", "subnet": "\(local.subnet)",
                                                                          "public_ip": "\(local.publicIP)"])
        }
        guard force || tracked.local != local else { return }
        if tracked.local == nil { log.info("lease acquired", metadata: ["subnet": "\(local.subnet)", "node": "\(node)"]) }
        tracked.local = local
        let peers = tracked.peers.values.sorted { $0.origin < $1.origin }
        emit(.state(ClusterView(network: network, local: local, peers: peers), invalidLeases: tracked.skipped.count))
        if settings.setNodeNetworkUnavailable && !tracked.conditionSet {
            tracked.own = try await client.patchNodeStatus(node, patch: KubeNodes.networkAvailablePatch())
            tracked.conditionSet = true
            log.info("NetworkUnavailable condition set to False", metadata: ["node": "\(node)"])
        }
    }
}
