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
    static let nodeKeys: Set<String> = ["name", "publicIP", "subnet", "vtepMAC", "interface"]

    /// Reads and validates the file; every error names the file and the field.
    public static func load(path: String) throws(ConfigError) -> AgentConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist"
            throw ConfigError(source: path, field: "", message: "the configuration file \(reason)")
        }
        return try parse(data, source: path)
    }

    public static func parse(_ data: Data, source: String) throws(ConfigError) -> AgentConfig {
        let root = try JSONFields.parse(data, source: source)
        for key in root.keys.sorted() where !topLevelKeys.contains(key) {
            throw root.error(key, "unknown key (expected one of: \(topLevelKeys.sorted().joined(separator: ", ")))")
        }
        guard let networkFields = try root.object("network") else { throw root.error("network", "is required") }
        let network = try NetworkConfig.parse(networkFields)
        var routeLayout: RouteLayout?
        if let text = try root.string("routeLayout"), text != "auto" {
            guard let layout = RouteLayout(rawValue: text) else {
                throw root.error("routeLayout", "\"\(text)\" is not one of auto, nexthop, classic")
            }
            routeLayout = layout
        }
        let deviceName = try root.string("device")
        if let deviceName, deviceName.isEmpty || deviceName.utf8.count > 15 || deviceName.contains("/") || deviceName.contains(" ") {
            throw root.error("device", "\"\(deviceName)\" is not a valid interface name (1-15 characters, no '/' or spaces)")
        }
        guard let entries = try root.objects("nodes") else { throw root.error("nodes", "is required") }
        guard !entries.isEmpty else { throw root.error("nodes", "is empty: list at least this node") }

        var nodes: [InventoryNode] = []
        var names: [String: String] = [:], subnets: [IPv4Prefix: String] = [:]
        var ips: [IPv4Address: String] = [:], macs: [MACAddress: String] = [:]
        for entry in entries {
            for key in entry.keys.sorted() where !nodeKeys.contains(key) {
                throw entry.error(key, "unknown key (expected one of: \(nodeKeys.sorted().joined(separator: ", ")))")
            }
            let name = try entry.requiredString("name")
            guard !name.isEmpty else { throw entry.error("name", "must not be empty") }
            guard let ip = try entry.ipv4("publicIP") else { throw entry.error("publicIP", "is required") }
            guard let subnet = try entry.prefix("subnet") else { throw entry.error("subnet", "is required") }
            guard subnet.isCanonical else {
                throw entry.error("subnet", "\(subnet) has host bits set (did you mean \(subnet.network)/\(subnet.length)?)")
            }
            guard subnet.length == network.subnetLen else {
                throw entry.error("subnet", "\(subnet) is a /\(subnet.length); the network's SubnetLen is \(network.subnetLen)")
            }
            guard network.network.contains(subnet) else {
                throw entry.error("subnet", "\(subnet) is outside the network \(network.network)")
            }
            var mac: MACAddress?
            if let text = try entry.string("vtepMAC") {
                guard let parsed = MACAddress(text) else { throw entry.error("vtepMAC", "\"\(text)\" is not a MAC address (xx:xx:xx:xx:xx:xx)") }
                guard parsed.isValidUnicast else { throw entry.error("vtepMAC", "\(parsed) is not a unicast MAC (multicast bit set or all zeros)") }
                mac = parsed
            }
            let interface = try entry.string("interface")
            if let other = names[name] { throw entry.error("name", "\"\(name)\" is already used by \(other)") }
            if let other = subnets[subnet] { throw entry.error("subnet", "\(subnet) is already used by \(other)") }
            if let overlap = subnets.first(where: { $0.key.overlaps(subnet) }) {
                throw entry.error("subnet", "\(subnet) overlaps \(overlap.key) of \(overlap.value)")
            }
            if let other = ips[ip] { throw entry.error("publicIP", "\(ip) is already used by \(other)") }
            let record = NodeRecord(name: name, publicIP: ip, subnet: subnet, vtepMAC: mac, origin: "\(source) \(entry.path)")
            let effectiveMAC = record.mac(vni: network.vni)
            if let other = macs[effectiveMAC] { throw entry.error("vtepMAC", "\(effectiveMAC) is already used by \(other)") }
            let label = "node \"\(name)\" (\(entry.path))"
            names[name] = label
            subnets[subnet] = label
            ips[ip] = label
            macs[effectiveMAC] = label
            nodes.append(InventoryNode(record: record, interface: interface))
        }
        return AgentConfig(source: source, node: try root.string("node"), network: network, nodes: nodes,
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
