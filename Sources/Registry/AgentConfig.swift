import Dataplane
import Foundation
import Reconcile

/// One entry of a static inventory.
public struct InventoryNode: Sendable, Hashable {
    public var record: NodeRecord
    /// The underlay interface on that node; default: the one holding its publicIP.
    public var interface: String?
}

/// Where the etcd registry lives (flannel's etcd v3 layout under `prefix`).
public struct EtcdSettings: Sendable, Hashable {
    public var endpoints: [String]
    public var prefix: String
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?

    public init(endpoints: [String] = ["http://127.0.0.1:2379"], prefix: String = Flannel.defaultPrefix,
                caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.endpoints = endpoints
        self.prefix = prefix
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }

    static let keys: Set<String> = ["endpoints", "prefix", "caFile", "certFile", "keyFile"]
}

/// What the daemon (`vxlan-agent run`) does besides the forwarding state.
public struct DaemonSettings: Sendable, Hashable {
    /// flannel's subnet.env; written atomically after each successful sync.
    public var subnetFile: String = "/run/flannel/subnet.env"
    /// The CNI network configuration list for this node's pods; nil: not written.
    public var cniConfFile: String? = "/etc/cni/net.d/10-vxlan-agent.conflist"
    /// The bridge the CNI `bridge` plugin puts pods on.
    public var cniBridge: String = "cni0"
    /// Masquerade pod traffic that leaves the pod network (nftables table `ip vxlan-agent`).
    public var ipMasq: Bool = true
    /// Where /healthz and /metrics are served (host, port); nil: not served.
    public var metricsAddress: Address? = Address(host: "127.0.0.1", port: 9472)
    /// The backstop: a full sync this often, whatever else happens.
    public var resyncInterval: Duration = .seconds(60)
    /// The TTL of this node's etcd lease; renewed well before it runs out.
    public var leaseTTL: Int64 = 86_400

    public init() {}

    /// An IPv4 address and TCP port to listen on.
    public struct Address: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var description: String { "\(host):\(port)" }
    }
}

/// The agent's configuration file: which node this is, where the cluster comes
/// from (a static inventory, the same file on every host, or flannel's leases
/// in etcd), and agent settings.
public struct AgentConfig: Sendable, Hashable {
    public var source: String
    /// This host's node name, if the file names it (`--node` and the hostname come next).
    public var node: String?
    /// The network (static inventory); nil with etcd, where it is `<prefix>/config`.
    public var network: NetworkConfig?
    /// The static inventory; empty with etcd.
    public var nodes: [InventoryNode]
    /// The etcd registry, if the file chooses it.
    public var etcd: EtcdSettings?
    /// This node's public IP (required with etcd; with an inventory it is the node's entry).
    public var publicIP: IPv4Address?
    /// The underlay interface (default: the one holding the public IP).
    public var interface: String?
    /// nil: nexthop objects where the kernel has them, classic routes otherwise.
    public var routeLayout: RouteLayout?
    /// Overrides the device name `flannel.<VNI>`.
    public var deviceName: String?
    public var daemon = DaemonSettings()

    static let topLevelKeys: Set<String> = [
        "node", "network", "nodes", "routeLayout", "device", "etcd", "publicIP", "interface",
        "subnetFile", "cniConfFile", "cniBridge", "ipMasq", "metricsAddress", "resyncInterval", "leaseTTL",
    ]
    static let nodeKeys = RawNode.knownKeys

    /// Reads and validates the file; every error names the file and the field.
    public static func load(path: String) throws(ConfigError) -> AgentConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist"
            throw ConfigError(source: path, field: "", message: "the configuration file \(reason)")
        }
        return try parse(data, source: path)
    }

    public static func parse(_ data: Data, source: String) throws(ConfigError) -> AgentConfig {
        let raw = try RawConfig.decode(data, source: source)
        let root = raw.fields(source: source)
        for key in raw.keys.sorted() where !topLevelKeys.contains(key) {
            throw root.error(key, "unknown key (expected one of: \(topLevelKeys.sorted().joined(separator: ", ")))")
        }
        var routeLayout: RouteLayout?
        if let text = try root.string("routeLayout"), text != "auto" {
            guard let layout = RouteLayout(rawValue: text) else {
                throw root.error("routeLayout", "\"\(text)\" is not one of auto, nexthop, classic")
            }
            routeLayout = layout
        }
        let deviceName = try root.string("device")
        if let deviceName, !isInterfaceName(deviceName) {
            throw root.error("device", "\"\(deviceName)\" is not a valid interface name (1-15 characters, no '/' or spaces)")
        }
        let interface = try root.string("interface")
        if let interface, !isInterfaceName(interface) {
            throw root.error("interface", "\"\(interface)\" is not a valid interface name (1-15 characters, no '/' or spaces)")
        }
        let daemon = try parseDaemon(root)
        let node = try root.string("node")
        let publicIP = try root.ipv4("publicIP")

        if let etcdFields = try root.object("etcd") {
            if raw.nodes != nil { throw root.error("etcd", "cannot be used with \"nodes\": choose one registry") }
            if root.has("network") {
                throw root.error("network", "comes from etcd (<prefix>/config) when the registry is etcd; remove it here")
            }
            guard let publicIP else { throw root.error("publicIP", "is required with the etcd registry (this node's underlay address)") }
            return AgentConfig(source: source, node: node, network: nil, nodes: [], etcd: try parseEtcd(etcdFields),
                               publicIP: publicIP, interface: interface, routeLayout: routeLayout, deviceName: deviceName,
                               daemon: daemon)
        }
        guard let networkFields = try root.object("network") else { throw root.error("network", "is required") }
        let network = try NetworkConfig.parse(networkFields)
        guard let entries = raw.nodes else { throw root.error("nodes", "is required") }
        guard !entries.isEmpty else { throw root.error("nodes", "is empty: list at least this node") }

        var nodes: [InventoryNode] = []
        nodes.reserveCapacity(entries.count)
        // Values are indexes into `nodes`; the label is built only for an error.
        var names: [String: Int] = [:], subnets: [IPv4Prefix: Int] = [:]
        var ips: [IPv4Address: Int] = [:], macs: [MACAddress: Int] = [:]
        func label(_ index: Int) -> String { "node \"\(nodes[index].record.name)\" (nodes[\(index)])" }
        for (index, entry) in entries.enumerated() {
            func fail(_ key: String, _ message: String) -> ConfigError {
                ConfigError(source: source, field: "nodes[\(index)].\(key)", message: message)
            }
            if let key = entry.unknownKey {
                throw fail(key, "unknown key (expected one of: \(nodeKeys.sorted().joined(separator: ", ")))")
            }
            guard let name = entry.name else { throw fail("name", "is required") }
            guard !name.isEmpty else { throw fail("name", "must not be empty") }
            guard let ipText = entry.publicIP else { throw fail("publicIP", "is required") }
            guard let ip = IPv4Address(ipText) else { throw fail("publicIP", "\"\(ipText)\" is not an IPv4 address") }
            guard let subnetText = entry.subnet else { throw fail("subnet", "is required") }
            guard let subnet = IPv4Prefix(subnetText) else { throw fail("subnet", "\"\(subnetText)\" is not an IPv4 prefix (a.b.c.d/len)") }
            guard subnet.isCanonical else {
                throw fail("subnet", "\(subnet) has host bits set (did you mean \(subnet.network)/\(subnet.length)?)")
            }
            guard subnet.length == network.subnetLen else {
                throw fail("subnet", "\(subnet) is a /\(subnet.length); the network's SubnetLen is \(network.subnetLen)")
            }
            guard network.network.contains(subnet) else {
                throw fail("subnet", "\(subnet) is outside the network \(network.network)")
            }
            var mac: MACAddress?
            if let text = entry.vtepMAC {
                guard let parsed = MACAddress(text) else { throw fail("vtepMAC", "\"\(text)\" is not a MAC address (xx:xx:xx:xx:xx:xx)") }
                guard parsed.isValidUnicast else { throw fail("vtepMAC", "\(parsed) is not a unicast MAC (multicast bit set or all zeros)") }
                mac = parsed
            }
            if let other = names[name] { throw fail("name", "\"\(name)\" is already used by \(label(other))") }
            // Every subnet is a canonical /SubnetLen (checked above), so two overlap
            // exactly when they are equal: the duplicate check covers overlaps in O(1).
            if let other = subnets[subnet] { throw fail("subnet", "\(subnet) is already used by \(label(other))") }
            if let other = ips[ip] { throw fail("publicIP", "\(ip) is already used by \(label(other))") }
            let record = NodeRecord(name: name, publicIP: ip, subnet: subnet, vtepMAC: mac, origin: "nodes[\(index)]")
            let effectiveMAC = record.mac(vni: network.vni)
            if let other = macs[effectiveMAC] { throw fail("vtepMAC", "\(effectiveMAC) is already used by \(label(other))") }
            names[name] = index
            subnets[subnet] = index
            ips[ip] = index
            macs[effectiveMAC] = index
            nodes.append(InventoryNode(record: record, interface: entry.interface))
        }
        return AgentConfig(source: source, node: node, network: network, nodes: nodes, etcd: nil, publicIP: publicIP,
                           interface: interface, routeLayout: routeLayout, deviceName: deviceName, daemon: daemon)
    }

    static func isInterfaceName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 15 && !name.contains("/") && !name.contains(" ")
    }

    static func parseEtcd(_ fields: JSONFields) throws(ConfigError) -> EtcdSettings {
        for key in fields.keys.sorted() where !EtcdSettings.keys.contains(key) {
            throw fields.error(key, "unknown key (expected one of: \(EtcdSettings.keys.sorted().joined(separator: ", ")))")
        }
        var settings = EtcdSettings()
        if let endpoints = try fields.strings("endpoints") {
            guard !endpoints.isEmpty else { throw fields.error("endpoints", "is empty: list at least one etcd endpoint") }
            for (index, endpoint) in endpoints.enumerated() {
                let rest = endpoint.hasPrefix("http://") ? endpoint.dropFirst(7) : endpoint.hasPrefix("https://") ? endpoint.dropFirst(8) : nil
                guard let rest, !rest.isEmpty, !rest.contains(" ") else {
                    throw fields.error("endpoints[\(index)]", "\"\(endpoint)\" is not an endpoint (http://host:port or https://host:port)")
                }
            }
            settings.endpoints = endpoints
        }
        if let prefix = try fields.string("prefix") {
            guard prefix.hasPrefix("/"), Flannel.trimmed(prefix).count > 0 else {
                throw fields.error("prefix", "\"\(prefix)\" must be an absolute key prefix like /coreos.com/network")
            }
            settings.prefix = Flannel.trimmed(prefix)
        }
        for key in ["caFile", "certFile", "keyFile"] {
            guard let path = try fields.string(key) else { continue }
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw fields.error(key, "\(path) \(FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist")")
            }
            switch key {
            case "caFile": settings.caFile = path
            case "certFile": settings.certFile = path
            default: settings.keyFile = path
            }
        }
        if (settings.certFile == nil) != (settings.keyFile == nil) {
            throw fields.error(settings.certFile == nil ? "certFile" : "keyFile", "is required with \(settings.certFile == nil ? "keyFile" : "certFile")")
        }
        return settings
    }

    static func parseDaemon(_ root: JSONFields) throws(ConfigError) -> DaemonSettings {
        var settings = DaemonSettings()
        if let path = try root.string("subnetFile") {
            guard path.hasPrefix("/") else { throw root.error("subnetFile", "\"\(path)\" must be an absolute path") }
            settings.subnetFile = path
        }
        if let path = try root.string("cniConfFile") {
            guard path.isEmpty || path.hasPrefix("/") else {
                throw root.error("cniConfFile", "\"\(path)\" must be an absolute path (or \"\" to write none)")
            }
            settings.cniConfFile = path.isEmpty ? nil : path
        }
        if let bridge = try root.string("cniBridge") {
            guard isInterfaceName(bridge) else { throw root.error("cniBridge", "\"\(bridge)\" is not a valid interface name") }
            settings.cniBridge = bridge
        }
        settings.ipMasq = try root.bool("ipMasq") ?? true
        if let text = try root.string("metricsAddress") {
            if text.isEmpty {
                settings.metricsAddress = nil
            } else {
                let parts = text.split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count == 2, let host = IPv4Address(String(parts[0])), let port = Int(parts[1]), (1...65535).contains(port) else {
                    throw root.error("metricsAddress", "\"\(text)\" is not IPv4:port (e.g. 127.0.0.1:9472; \"\" serves none)")
                }
                settings.metricsAddress = DaemonSettings.Address(host: "\(host)", port: port)
            }
        }
        if let seconds = try root.integer("resyncInterval", in: 1...86_400) { settings.resyncInterval = .seconds(seconds) }
        if let ttl = try root.integer("leaseTTL", in: 10...(30 * 86_400)) { settings.leaseTTL = ttl }
        return settings
    }

    /// The cluster as `nodeName` sees it; an error names the file if the node is not listed.
    public func view(node nodeName: String) throws(ConfigError) -> (view: ClusterView, interface: String?) {
        guard let network else {
            throw ConfigError(source: source, field: "etcd", message: "the etcd registry has no static view (internal error)")
        }
        guard let local = nodes.first(where: { $0.record.name == nodeName }) else {
            let known = nodes.prefix(5).map(\.record.name).joined(separator: ", ")
            throw ConfigError(source: source, field: "nodes",
                              message: "this node \"\(nodeName)\" is not listed (nodes: \(known)\(nodes.count > 5 ? ", ..." : "")); "
                                + "set \"node\" in the file or pass --node")
        }
        let peers = nodes.filter { $0.record.name != nodeName }.map(\.record)
        return (ClusterView(network: network, local: local.record, peers: peers), local.interface ?? interface)
    }
}
