import Dataplane
import Foundation
import Reconcile

/// One entry of a static inventory.
public struct InventoryNode: Sendable, Hashable {
    public var record: NodeRecord
    /// The underlay interface on that node; default: the one holding its publicIP.
    public var interface: String?
}

/// The agent's configuration file: which node this is, where the cluster comes
/// from (a static inventory, the same file on every host), and agent settings.
public struct AgentConfig: Sendable, Hashable {
    public var source: String
    /// This host's node name, if the file names it (`--node` and the hostname come next).
    public var node: String?
    public var network: NetworkConfig
    public var nodes: [InventoryNode]
    /// nil: nexthop objects where the kernel has them, classic routes otherwise.
    public var routeLayout: RouteLayout?
    /// Overrides the device name `flannel.<VNI>`.
    public var deviceName: String?

    static let topLevelKeys: Set<String> = ["node", "network", "nodes", "routeLayout", "device"]
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
        let root = JSONFields(source: source, path: "", object: [:])
        for key in raw.keys.sorted() where !topLevelKeys.contains(key) {
            throw root.error(key, "unknown key (expected one of: \(topLevelKeys.sorted().joined(separator: ", ")))")
        }
        guard let networkValue = raw.network, case .object = networkValue else {
            throw root.error("network", raw.network == nil ? "is required" : "must be an object")
        }
        let networkFields = JSONFields(source: source, path: "network", object: networkValue.foundation as? [String: Any] ?? [:])
        let network = try NetworkConfig.parse(networkFields)
        var routeLayout: RouteLayout?
        if let text = raw.routeLayout, text != "auto" {
            guard let layout = RouteLayout(rawValue: text) else {
                throw root.error("routeLayout", "\"\(text)\" is not one of auto, nexthop, classic")
            }
            routeLayout = layout
        }
        let deviceName = raw.device
        if let deviceName, deviceName.isEmpty || deviceName.utf8.count > 15 || deviceName.contains("/") || deviceName.contains(" ") {
            throw root.error("device", "\"\(deviceName)\" is not a valid interface name (1-15 characters, no '/' or spaces)")
        }
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
        return AgentConfig(source: source, node: raw.node, network: network, nodes: nodes,
                           routeLayout: routeLayout, deviceName: deviceName)
    }

    /// The cluster as `nodeName` sees it; an error names the file if the node is not listed.
    public func view(node nodeName: String) throws(ConfigError) -> (view: ClusterView, interface: String?) {
        guard let local = nodes.first(where: { $0.record.name == nodeName }) else {
            let known = nodes.prefix(5).map(\.record.name).joined(separator: ", ")
            throw ConfigError(source: source, field: "nodes",
                              message: "this node \"\(nodeName)\" is not listed (nodes: \(known)\(nodes.count > 5 ? ", ..." : "")); "
                                + "set \"node\" in the file or pass --node")
        }
        let peers = nodes.filter { $0.record.name != nodeName }.map(\.record)
        return (ClusterView(network: network, local: local.record, peers: peers), local.interface)
    }
}
