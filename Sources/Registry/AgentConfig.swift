import Foundation
import Model
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

/// flannel's Kubernetes subnet manager (`--kube-subnet-mgr`): each node's subnet
/// is its Node's `spec.podCIDR`, its backend data are annotations on its Node,
/// and the network configuration is flannel's net-conf.json in a file.
public struct KubernetesSettings: Sendable, Hashable {
    /// The API server (`--kube-api-url`); nil: the kubeconfig's, or in-cluster.
    public var apiURL: String?
    /// A kubeconfig file (`--kubeconfig-file`); nil: in-cluster (the pod's service account).
    public var kubeconfig: String?
    /// The annotations' prefix (`--kube-annotation-prefix`).
    public var annotationPrefix: String = "flannel.alpha.coreos.com"
    /// flannel's net-conf.json (`--net-config-path`).
    public var netConfPath: String = "/etc/kube-flannel/net-conf.json"
    /// Set the Node's NetworkUnavailable condition to False once this node is
    /// up (`--set-node-network-unavailable`, true in flanneld).
    public var setNodeNetworkUnavailable: Bool = true

    public init(apiURL: String? = nil, kubeconfig: String? = nil, annotationPrefix: String = "flannel.alpha.coreos.com",
                netConfPath: String = "/etc/kube-flannel/net-conf.json", setNodeNetworkUnavailable: Bool = true) {
        self.apiURL = apiURL
        self.kubeconfig = kubeconfig
        self.annotationPrefix = annotationPrefix
        self.netConfPath = netConfPath
        self.setNodeNetworkUnavailable = setNodeNetworkUnavailable
    }

    static let keys: Set<String> = ["apiURL", "kubeconfig", "annotationPrefix", "netConfPath", "setNodeNetworkUnavailable"]

    /// flannel's `newAnnotations`: at most one slash; without one, a slash is
    /// added; a prefix that does not end in "/" or "-" gets a "-"; the result is
    /// `fqdn/[a-z0-9_-]*-`. nil: not a prefix flanneld accepts.
    public static func annotationBase(_ prefix: String) -> String? {
        var prefix = prefix
        let slashes = prefix.filter { $0 == "/" }.count
        if slashes > 1 { return nil }
        if slashes == 0 { prefix += "/" }
        if !prefix.hasSuffix("/") && !prefix.hasSuffix("-") { prefix += "-" }
        let parts = prefix.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        func word(_ text: Substring) -> Bool {
            !text.isEmpty && text.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }
        }
        // fqdn: two or more words joined by dots.
        let labels = parts[0].split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, labels.allSatisfy(word) else { return nil }
        // After the slash: nothing, or a word ending in "-".
        let tail = parts[1]
        guard tail.isEmpty || (tail.hasSuffix("-") && word(tail)) else { return nil }
        return prefix
    }
}

/// What the daemon (`vxlan-agent run`) does besides the forwarding state.
public struct DaemonSettings: Sendable, Hashable {
    /// flannel's subnet.env; written atomically after each pass that reached the kernel.
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
    /// How long before it runs out the lease is renewed, in seconds (flanneld's
    /// --subnet-lease-renew-margin, 60 minutes); at most two thirds of the TTL.
    public var leaseRenewMargin: Int64 = 3600

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
    /// Kubernetes Node objects (flannel's `--kube-subnet-mgr`), if the file chooses them.
    public var kubernetes: KubernetesSettings?
    /// This node's public IP (required with etcd; with an inventory it is the node's entry).
    public var publicIP: IPv4Address?
    /// Dual stack: this node's IPv6 underlay address (flanneld's --public-ipv6); nil:
    /// the underlay interface's global IPv6 address. With an inventory it is the node's entry.
    public var publicIPv6: IPv6Address?
    /// The underlay interface (default: the one holding the public IP).
    public var interface: String?
    /// Instead of `interface`: choose it as flanneld does (`interfaces`,
    /// `interfaceRegex`, `interfaceCanReach`: flanneld's --iface, --iface-regex,
    /// --iface-can-reach). `resolvingInterface(on:)` turns it into `interface`
    /// (and, with etcd and no publicIP, the public IP) when the kernel is at hand.
    public var interfaceSelection: InterfaceSelection?
    /// nil: nexthop objects where the kernel has them, classic routes otherwise.
    public var routeLayout: RouteLayout?
    /// Overrides the device name `flannel.<VNI>`.
    public var deviceName: String?
    public var daemon = DaemonSettings()

    static let topLevelKeys: Set<String> = [
        "node", "network", "nodes", "routeLayout", "device", "etcd", "kubernetes", "publicIP", "publicIPv6", "interface",
        "interfaces", "interfaceRegex", "interfaceCanReach",
        "subnetFile", "cniConfFile", "cniBridge", "ipMasq", "metricsAddress", "resyncInterval", "leaseTTL",
    ]
    static let nodeKeys: Set<String> = ["name", "publicIP", "subnet", "vtepMAC", "interface", "publicIPv6", "subnetV6"]

    /// The largest configuration file read: 50,000 nodes take about 5 MB.
    public static let maximumFileSize = 64 << 20

    /// Reads and validates the file; every error names the file and the field.
    public static func load(path: String) throws(ConfigError) -> AgentConfig {
        try parse(try readFile(path), source: path)
    }

    /// The file's bytes, or an error that says what is wrong with it: missing, a
    /// dangling symlink or a symlink loop, not readable, a directory, empty, too big.
    public static func readFile(_ path: String) throws(ConfigError) -> Data {
        func fail(_ message: String) -> ConfigError { ConfigError(source: path, field: "", message: "the configuration file \(message)") }
        guard !path.isEmpty else { throw ConfigError(source: "--config", field: "", message: "the configuration file name is empty") }
        // O_NONBLOCK: a FIFO without a writer must not hang the open (cleared below).
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else {
            let code = errno
            switch code {
            case ENOENT:
                var info = stat()
                if lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK {
                    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?"
                    throw fail("is a symbolic link to \(quoted(target)), which does not exist (a dangling link)")
                }
                throw fail("does not exist")
            case ELOOP:
                throw fail("cannot be opened: a symbolic link loop (ELOOP: too many levels of symbolic links)")
            case EACCES, EPERM:
                throw fail("cannot be read: permission denied (\(code == EACCES ? "EACCES" : "EPERM"))")
            case ENOTDIR:
                throw fail("cannot be opened: a component of the path is not a directory (ENOTDIR)")
            case ENAMETOOLONG:
                throw fail("cannot be opened: the name is too long (ENAMETOOLONG)")
            default:
                throw fail("cannot be opened: \(String(cString: strerror(code))) (errno \(code))")
            }
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw fail("cannot be examined: \(String(cString: strerror(errno)))") }
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            if info.st_size > maximumFileSize {
                throw fail("is \(info.st_size) bytes, larger than the limit of \(maximumFileSize >> 20) MiB (is it the right file?)")
            }
        case S_IFDIR:
            throw fail("is a directory, not a file")
        case S_IFIFO, S_IFCHR:
            break // a pipe (--config <(...)) or /dev/stdin: read up to the limit
        default:
            throw fail("is not a regular file (a socket or a block device)")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                let code = errno
                if code == EISDIR { throw fail("is a directory, not a file") }
                throw fail("cannot be read: \(String(cString: strerror(code))) (errno \(code))")
            }
            if count == 0 { break }
            data.append(contentsOf: buffer[0..<count])
            if data.count > maximumFileSize {
                throw fail("is larger than the limit of \(maximumFileSize >> 20) MiB (is it the right file?)")
            }
        }
        guard !data.isEmpty else { throw fail("is empty (0 bytes)") }
        return data
    }

    public static func parse(_ data: Data, source: String) throws(ConfigError) -> AgentConfig {
        try stage(data, source: source).validated()
    }

    /// A configuration read up to its `nodes`: the document parsed, every
    /// top-level field and the network validated; the nodes (10,000 of them take
    /// most of the time) are validated by `validated()`, which `sync` runs while
    /// it reads the kernel. Errors come in the order `parse` gives them.
    /// This node's name: `--node`, else `NODE_NAME` (what flanneld reads, set by a
    /// DaemonSet from the downward API), else the file's `node`, else the host name
    /// up to its first dot.
    public static func nodeName(flag: String?, config: AgentConfig, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let flag { return flag }
        if let name = environment["NODE_NAME"], !name.isEmpty { return name }
        return config.node ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? ""
    }

    public struct Staged: Sendable {
        /// The configuration without its nodes (all of it with etcd).
        public let partial: AgentConfig
        let entries: [JSONFields]
        let rangeGiven: Bool

        /// The whole configuration: every node validated (duplicates included).
        public func validated() throws(ConfigError) -> AgentConfig {
            guard let network = partial.network, !entries.isEmpty else { return partial }
            var config = partial
            config.nodes = try AgentConfig.nodes(entries, network: network, rangeGiven: rangeGiven)
            return config
        }

        /// What `view(node:)` will very likely answer for `nodeName`, read from
        /// its entry alone without validating the others: the network, this
        /// node's record (no peers) and its underlay interface. nil when the
        /// registry is etcd, or the entry is not found or not plainly readable.
        /// A guess to start reading the kernel with: compare it with the real view.
        public func provisionalView(node nodeName: String) -> (view: ClusterView, interface: String?)? {
            guard let network = partial.network else { return nil }
            for index in entries.indices {
                let object = entries[index].object
                guard let at = object.keys.firstIndex(of: "name"), case .string(let name) = object.values[at],
                      name == nodeName else { continue }
                guard let fields = AgentConfig.nodeStrings(object) else { return nil }
                if !network.enableIPv4 {
                    guard fields.publicIP == nil, fields.subnet == nil, fields.vtepMAC == nil, let text = fields.subnetV6,
                          let subnet6 = IPv6Prefix(text), let ipText = fields.publicIPv6, let ip6 = IPv6Address(ipText) else { return nil }
                    let record = NodeRecord.ipv6Only(name: name, ipv6: NodeRecord.IPv6Half(subnet: subnet6, publicIP: ip6), origin: "nodes[\(index)]")
                    return (ClusterView(network: network, local: record, peers: []), fields.interface ?? partial.interface)
                }
                guard let ipText = fields.publicIP, let ip = IPv4Address(ipText),
                      let subnetText = fields.subnet, let subnet = IPv4Prefix(subnetText) else { return nil }
                var mac: MACAddress?
                if let text = fields.vtepMAC {
                    guard let parsed = MACAddress(text) else { return nil }
                    mac = parsed
                }
                var record = NodeRecord(name: name, publicIP: ip, subnet: subnet, vtepMAC: mac, origin: "nodes[\(index)]")
                if network.ipv6 != nil, network.backendType != "udp" {
                    guard let text = fields.subnetV6, let subnet6 = IPv6Prefix(text), let ipText = fields.publicIPv6,
                          let ip6 = IPv6Address(ipText) else { return nil }
                    record.ipv6 = NodeRecord.IPv6Half(subnet: subnet6, publicIP: ip6)
                }
                return (ClusterView(network: network, local: record, peers: []), fields.interface ?? partial.interface)
            }
            return nil
        }
    }

    /// `parse` up to the nodes.
    public static func stage(_ data: Data, source: String) throws(ConfigError) -> Staged {
        let raw = try RawConfig.decode(data, source: source)
        let root = raw.root
        try root.rejectUnknownKeys(topLevelKeys)
        var routeLayout: RouteLayout?
        if let text = try root.string("routeLayout"), text != "auto" {
            guard let layout = RouteLayout(rawValue: text) else {
                throw root.error("routeLayout", "\(quoted(text)) is not one of auto, nexthop, classic")
            }
            routeLayout = layout
        }
        let deviceName = try root.string("device")
        if let deviceName, let problem = interfaceNameProblem(deviceName) { throw root.error("device", problem) }
        let interface = try root.string("interface")
        if let interface, let problem = interfaceNameProblem(interface) { throw root.error("interface", problem) }
        let selection = try parseInterfaceSelection(root, interface: interface)
        let daemon = try parseDaemon(root)
        let node = try root.string("node")
        if let node, let problem = nodeNameProblem(node) { throw root.error("node", problem) }
        let publicIP = try root.ipv4("publicIP")
        let publicIPv6 = try root.ipv6("publicIPv6")
        if let publicIPv6, let problem = publicIPv6Problem(publicIPv6) { throw root.error("publicIPv6", problem) }

        if let kubeFields = try root.object("kubernetes") {
            if raw.nodes != nil { throw root.error("kubernetes", "cannot be used with \"nodes\": choose one registry") }
            if root.has("etcd") { throw root.error("kubernetes", "cannot be used with \"etcd\": choose one registry") }
            if root.has("network") {
                throw root.error("network", "comes from kubernetes.netConfPath (flannel's net-conf.json) with the kubernetes registry; remove it here")
            }
            // publicIP is optional: without it, the Node's public-ip-overwrite
            // annotation, then its first InternalIP, name this node's address.
            var config = AgentConfig(source: source, node: node, network: nil, nodes: [], etcd: nil, publicIP: publicIP,
                                     interface: interface, interfaceSelection: selection, routeLayout: routeLayout,
                                     deviceName: deviceName, daemon: daemon)
            config.kubernetes = try parseKubernetes(kubeFields)
            config.publicIPv6 = publicIPv6
            return Staged(partial: config, entries: [], rangeGiven: false)
        }
        if let etcdFields = try root.object("etcd") {
            if raw.nodes != nil { throw root.error("etcd", "cannot be used with \"nodes\": choose one registry") }
            if root.has("network") {
                throw root.error("network", "comes from etcd (<prefix>/config) when the registry is etcd; remove it here")
            }
            // publicIPv6 alone: enough for an IPv6-only network (the network, in etcd, says which is needed).
            guard publicIP != nil || publicIPv6 != nil || selection != nil else {
                // The text stays as it was (tests and scripts match it); Docs/configuration.md
                // says that interfaces, interfaceRegex or interfaceCanReach may choose it instead.
                throw root.error("publicIP", "is required with the etcd registry (this node's underlay address)")
            }
            var config = AgentConfig(source: source, node: node, network: nil, nodes: [], etcd: try parseEtcd(etcdFields),
                                     publicIP: publicIP, interface: interface, interfaceSelection: selection, routeLayout: routeLayout,
                                     deviceName: deviceName, daemon: daemon)
            config.publicIPv6 = publicIPv6
            return Staged(partial: config, entries: [], rangeGiven: false)
        }
        guard let networkFields = try root.object("network") else { throw root.error("network", "is required") }
        if publicIPv6 != nil { throw root.error("publicIPv6", "comes from this node's entry in \"nodes\" with a static inventory; remove it here") }
        let network = try NetworkConfig.parse(networkFields)
        // SubnetMin/SubnetMax given in a static inventory: every node's subnet is in the range.
        // IPv6 only: IPv6SubnetMin/IPv6SubnetMax (the IPv4 keys are not read then).
        let rangeGiven = network.enableIPv4 ? networkFields.has("SubnetMin") || networkFields.has("SubnetMax")
            : networkFields.has("IPv6SubnetMin") || networkFields.has("IPv6SubnetMax")
        guard let entries = raw.nodes else { throw root.error("nodes", "is required") }
        guard !entries.isEmpty else { throw root.error("nodes", "is empty: list at least this node") }
        let config = AgentConfig(source: source, node: node, network: network, nodes: [], etcd: nil, publicIP: publicIP,
                                 interface: interface, interfaceSelection: selection, routeLayout: routeLayout, deviceName: deviceName,
                                 daemon: daemon)
        return Staged(partial: config, entries: entries, rangeGiven: rangeGiven)
    }

    /// The inventory's nodes, validated one by one and against each other.
    static func nodes(_ entries: [JSONFields], network: NetworkConfig, rangeGiven: Bool) throws(ConfigError) -> [InventoryNode] {
        var nodes: [InventoryNode] = []
        nodes.reserveCapacity(entries.count)
        // Values are indexes into `nodes`; the label is built only for an error.
        var names: [String: Int] = [:], subnets: [IPv4Prefix: Int] = [:]
        var ips: [IPv4Address: Int] = [:], macs: [MACAddress: Int] = [:]
        var subnetsV6: [IPv6Prefix: Int] = [:], ipsV6: [IPv6Address: Int] = [:], macsV6: [MACAddress: Int] = [:]
        names.reserveCapacity(entries.count)
        subnets.reserveCapacity(entries.count)
        ips.reserveCapacity(entries.count)
        macs.reserveCapacity(entries.count)
        func label(_ index: Int) -> String { "node \(quoted(nodes[index].record.name)) (nodes[\(index)])" }
        for index in entries.indices {
            let entry = entries[index]
            func fail(_ key: String, _ message: String) -> ConfigError { entry.error(key, message) }
            // One pass over the members when they are all known keys with string
            // (or null) values, as in every good file; otherwise field by field,
            // in the order that names the first problem.
            let fast = Self.nodeStrings(entry.object)
            func string(_ key: String, _ fastValue: String?) throws(ConfigError) -> String? {
                fast != nil ? fastValue : try entry.string(key)
            }
            if fast == nil { try entry.rejectUnknownKeys(nodeKeys) }
            guard let name = try string("name", fast?.name) else { throw fail("name", "is required") }
            if let problem = nodeNameProblem(name) { throw fail("name", problem) }
            /// The node's IPv6 half (`subnetV6`, `publicIPv6`), validated and recorded against the others'.
            func ipv6Half(_ v6Subnet: String?, _ v6IP: String?) throws(ConfigError) -> NodeRecord.IPv6Half {
                let ipv6 = network.ipv6!
                let why = network.enableIPv4 ? "the network is dual stack (EnableIPv6)" : "the network is IPv6-only (EnableIPv4 false)"
                guard let subnetText = v6Subnet else { throw fail("subnetV6", "is required: \(why)") }
                guard let subnet6 = IPv6Prefix(subnetText) else {
                    throw fail("subnetV6", "\(quoted(subnetText)) is not an IPv6 prefix (fd00:10:244:1::/64)")
                }
                guard subnet6.isCanonical else {
                    throw fail("subnetV6", "\(subnet6) has host bits set (did you mean \(subnet6.network)/\(subnet6.length)?)")
                }
                guard subnet6.length == ipv6.subnetLen else {
                    throw fail("subnetV6", "\(subnet6) is a /\(subnet6.length); the network's IPv6SubnetLen is \(ipv6.subnetLen)")
                }
                guard ipv6.network.contains(subnet6) else { throw fail("subnetV6", "\(subnet6) is outside the IPv6 network \(ipv6.network)") }
                if rangeGiven && !(ipv6.subnetMin...ipv6.subnetMax).contains(subnet6.network) {
                    throw fail("subnetV6", "\(subnet6) is outside IPv6SubnetMin...IPv6SubnetMax (\(ipv6.subnetMin)...\(ipv6.subnetMax))")
                }
                guard let ipText = v6IP else { throw fail("publicIPv6", "is required: \(why)") }
                guard let ip6 = IPv6Address(ipText) else { throw fail("publicIPv6", "\(quoted(ipText)) is not an IPv6 address") }
                if let problem = publicIPv6Problem(ip6) { throw fail("publicIPv6", problem) }
                if ipv6.network.contains(ip6) {
                    throw fail("publicIPv6", "\(ip6) is inside the IPv6 pod network \(ipv6.network): its packets would be routed back into the overlay")
                }
                if let other = subnetsV6[subnet6] { throw fail("subnetV6", "\(subnet6) is already used by \(label(other))") }
                if let other = ipsV6[ip6] { throw fail("publicIPv6", "\(ip6) is already used by \(label(other))") }
                let half = NodeRecord.IPv6Half(subnet: subnet6, publicIP: ip6)
                // The IPv6 VTEP MAC is derived from the address's last four bytes: two
                // addresses alike there would share one MAC.
                let mac6 = half.mac(vni: network.vni)
                if let other = macsV6[mac6] {
                    throw fail("publicIPv6", "\(ip6) gives the IPv6 VTEP MAC \(mac6) (from its last four bytes), already used by \(label(other))")
                }
                subnetsV6[subnet6] = index
                ipsV6[ip6] = index
                macsV6[mac6] = index
                return half
            }
            if !network.enableIPv4 {
                // IPv6 only: no IPv4 half in the file; flannel's empty one in the record.
                for (key, value) in [("publicIP", try string("publicIP", fast?.publicIP)), ("subnet", try string("subnet", fast?.subnet)),
                                     ("vtepMAC", try string("vtepMAC", fast?.vtepMAC))] where value != nil {
                    throw fail(key, "is set but EnableIPv4 is false (an IPv6-only cluster: a node has publicIPv6 and subnetV6 only; remove \(key))")
                }
                let nodeInterface = try string("interface", fast?.interface)
                if let nodeInterface, let problem = interfaceNameProblem(nodeInterface) { throw fail("interface", problem) }
                if let other = names[name] { throw fail("name", "\(quoted(name)) is already used by \(label(other))") }
                let half = try ipv6Half(try string("subnetV6", fast?.subnetV6), try string("publicIPv6", fast?.publicIPv6))
                names[name] = index
                nodes.append(InventoryNode(record: .ipv6Only(name: name, ipv6: half, origin: "nodes[\(index)]"), interface: nodeInterface))
                continue
            }
            guard let ipText = try string("publicIP", fast?.publicIP) else { throw fail("publicIP", "is required") }
            guard let ip = IPv4Address(ipText) else { throw fail("publicIP", "\(quoted(ipText)) is not an IPv4 address") }
            guard let subnetText = try string("subnet", fast?.subnet) else { throw fail("subnet", "is required") }
            guard let subnet = IPv4Prefix(subnetText) else {
                throw fail("subnet", "\(quoted(subnetText)) is not an IPv4 prefix (a.b.c.d/len)")
            }
            guard subnet.isCanonical else {
                throw fail("subnet", "\(subnet) has host bits set (did you mean \(subnet.network)/\(subnet.length)?)")
            }
            guard subnet.length == network.subnetLen else {
                throw fail("subnet", "\(subnet) is a /\(subnet.length); the network's SubnetLen is \(network.subnetLen)")
            }
            guard network.network.contains(subnet) else {
                throw fail("subnet", "\(subnet) is outside the network \(network.network)")
            }
            if rangeGiven && !(network.subnetMin...network.subnetMax).contains(subnet.network) {
                throw fail("subnet", "\(subnet) is outside SubnetMin...SubnetMax (\(network.subnetMin)...\(network.subnetMax))")
            }
            var mac: MACAddress?
            if let text = try string("vtepMAC", fast?.vtepMAC) {
                guard let parsed = MACAddress(text) else { throw fail("vtepMAC", "\(quoted(text)) is not a MAC address (xx:xx:xx:xx:xx:xx)") }
                guard parsed.isValidUnicast else { throw fail("vtepMAC", "\(parsed) is not a unicast MAC (multicast bit set or all zeros)") }
                mac = parsed
            }
            let nodeInterface = try string("interface", fast?.interface)
            if let nodeInterface, let problem = interfaceNameProblem(nodeInterface) { throw fail("interface", problem) }
            if let other = names[name] { throw fail("name", "\(quoted(name)) is already used by \(label(other))") }
            // Every subnet is a canonical /SubnetLen (checked above), so two overlap
            // exactly when they are equal: the duplicate check covers overlaps in O(1).
            if let other = subnets[subnet] { throw fail("subnet", "\(subnet) is already used by \(label(other))") }
            if let other = ips[ip] { throw fail("publicIP", "\(ip) is already used by \(label(other))") }
            var record = NodeRecord(name: name, publicIP: ip, subnet: subnet, vtepMAC: mac, origin: "nodes[\(index)]")
            let effectiveMAC = record.mac(vni: network.vni)
            if let other = macs[effectiveMAC] { throw fail("vtepMAC", "\(effectiveMAC) is already used by \(label(other))") }
            let v6Subnet = try string("subnetV6", fast?.subnetV6), v6IP = try string("publicIPv6", fast?.publicIPv6)
            if network.ipv6 != nil, network.backendType != "udp" {
                record.ipv6 = try ipv6Half(v6Subnet, v6IP)
            } else if v6Subnet != nil || v6IP != nil {
                let key = v6Subnet != nil ? "subnetV6" : "publicIPv6"
                throw fail(key, network.ipv6 == nil ? "is set but the network is not dual stack (set \"EnableIPv6\": true, or remove \(key))"
                           : "is set but the udp backend carries IPv4 only (remove \(key))")
            }
            names[name] = index
            subnets[subnet] = index
            ips[ip] = index
            macs[effectiveMAC] = index
            nodes.append(InventoryNode(record: record, interface: nodeInterface))
        }
        return nodes
    }

    /// `interfaces` (names or addresses), `interfaceRegex` (regular expressions),
    /// `interfaceCanReach` (an IPv4 address): flanneld's --iface, --iface-regex,
    /// --iface-can-reach, tried in that order. Not with `interface`.
    static func parseInterfaceSelection(_ root: JSONFields, interface: String?) throws(ConfigError) -> InterfaceSelection? {
        let names = try root.strings("interfaces") ?? []
        let regexes = try root.strings("interfaceRegex") ?? []
        let canReach = try root.string("interfaceCanReach")
        guard !names.isEmpty || !regexes.isEmpty || canReach != nil else {
            for key in ["interfaces", "interfaceRegex"] where root.has(key) { throw root.error(key, "is empty: list at least one, or remove it") }
            return nil
        }
        if interface != nil {
            let key = !names.isEmpty ? "interfaces" : !regexes.isEmpty ? "interfaceRegex" : "interfaceCanReach"
            throw root.error(key, "cannot be used with \"interface\": name the interface, or let \(key) choose it")
        }
        for (index, name) in names.enumerated() where IPv4Address(name) == nil && IPv6Address(name) == nil {
            if let problem = interfaceNameProblem(name) { throw root.error("interfaces[\(index)]", "\(problem), nor an IP address") }
        }
        for (index, pattern) in regexes.enumerated() {
            do { _ = try Regex(pattern) } catch {
                throw root.error("interfaceRegex[\(index)]", "\(quoted(pattern)) is not a regular expression: \(error)")
            }
        }
        if let canReach, IPv4Address(canReach) == nil {
            throw root.error("interfaceCanReach", "\(quoted(canReach)) is not an IPv4 address")
        }
        return InterfaceSelection(names: names, regexes: regexes, canReach: canReach)
    }

    /// The configuration with `interfaceSelection` resolved on `host`: `interface`
    /// set to the chosen one, and (with etcd and no `publicIP`) the public IP set to
    /// its address. Unchanged without a selection. The error names the file.
    public func resolvingInterface(on host: @autoclosure () throws -> HostNetwork) throws -> AgentConfig {
        guard let selection = interfaceSelection else { return self }
        let choice: InterfaceSelection.Choice
        do {
            choice = try selection.choose(on: try host())
        } catch {
            throw ConfigError(source: source, field: "interfaces", message: "\(error)")
        }
        var resolved = self
        resolved.interface = choice.interface.name
        if etcd != nil && publicIP == nil { resolved.publicIP = choice.address }
        if (etcd != nil || kubernetes != nil) && publicIPv6 == nil { resolved.publicIPv6 = choice.ipv6Address }
        return resolved
    }

    /// A node's string fields, read in one pass.
    struct NodeStrings {
        var name, publicIP, subnet, vtepMAC, interface, publicIPv6, subnetV6: String?
    }

    /// The node's fields when every member is one of `nodeKeys` with a string or
    /// null value (null reads as absent, as `JSONFields` reads it); nil otherwise.
    /// The strict dialect has refused duplicate keys already.
    static func nodeStrings(_ object: JSONObject) -> NodeStrings? {
        var fields = NodeStrings()
        for (key, value) in zip(object.keys, object.values) {
            let text: String?
            switch value {
            case .string(let string): text = string
            case .null: text = nil
            default: return nil
            }
            // The length first: a mismatched short string compares slowly. A key
            // of another length that equals one of these as a String (Unicode
            // equivalence) falls back to field-by-field reading, which decides.
            switch key.utf8.count {
            case 4 where key == "name": fields.name = text
            case 8 where key == "publicIP": fields.publicIP = text
            case 6 where key == "subnet": fields.subnet = text
            case 7 where key == "vtepMAC": fields.vtepMAC = text
            case 9 where key == "interface": fields.interface = text
            case 10 where key == "publicIPv6": fields.publicIPv6 = text
            case 8 where key == "subnetV6": fields.subnetV6 = text
            default: return nil
            }
        }
        return fields
    }

    /// Why `address` cannot be a node's IPv6 underlay address, or nil.
    static func publicIPv6Problem(_ address: IPv6Address) -> String? {
        if address.isUnspecified || address.isLoopback || address.isMulticast || address.isIPv4Mapped {
            return "\(address) is not a unicast address another host can send to"
        }
        if address.isLinkLocal { return "\(address) is link-local: a VXLAN peer needs a global (or unique local) address" }
        return nil
    }

    /// Why `name` cannot be a node name, or nil: names are echoed in messages,
    /// logs and metrics labels, so they must print as themselves.
    static func nodeNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "must not be empty" }
        // The common case, checked cheaply (50,000 nodes): printable ASCII only.
        if name.utf8.count <= 253, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != 0x22 && $0 != 0x5c }) { return nil }
        if name.unicodeScalars.count > 253 { return "is \(name.unicodeScalars.count) characters long: at most 253" }
        if escaped(name, limit: .max) != name || name.contains("\"") || name.contains("\\") || name.unicodeScalars.contains(where: \.properties.isWhitespace) {
            return "\(quoted(name)) contains a control, invisible, white-space, quote or backslash character"
        }
        return nil
    }

    /// Why the kernel would refuse `name` as an interface name (dev_valid_name), or nil.
    static func interfaceNameProblem(_ name: String) -> String? {
        let shape = !name.isEmpty && name.utf8.count <= 15 && name != "." && name != ".." && !name.contains("/") && !name.contains(":")
        let printable = name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f }
            || (escaped(name, limit: .max) == name && !name.unicodeScalars.contains(where: \.properties.isWhitespace))
        return shape && printable ? nil
            : "\(quoted(name)) is not a valid interface name (1-15 bytes; no '/', ':', white space or control characters; not . or ..)"
    }

    static func parseEtcd(_ fields: JSONFields) throws(ConfigError) -> EtcdSettings {
        try fields.rejectUnknownKeys(EtcdSettings.keys)
        var settings = EtcdSettings()
        if let endpoints = try fields.strings("endpoints") {
            guard !endpoints.isEmpty else { throw fields.error("endpoints", "is empty: list at least one etcd endpoint") }
            for (index, endpoint) in endpoints.enumerated() {
                let rest = endpoint.hasPrefix("http://") ? endpoint.dropFirst(7) : endpoint.hasPrefix("https://") ? endpoint.dropFirst(8) : nil
                guard let rest, !rest.isEmpty, !rest.contains(" ") else {
                    throw fields.error("endpoints[\(index)]", "\(quoted(endpoint)) is not an endpoint (http://host:port or https://host:port)")
                }
            }
            settings.endpoints = endpoints
        }
        if let prefix = try fields.string("prefix") {
            guard prefix.hasPrefix("/"), Flannel.trimmed(prefix).count > 0 else {
                throw fields.error("prefix", "\(quoted(prefix)) must be an absolute key prefix like /coreos.com/network")
            }
            settings.prefix = Flannel.trimmed(prefix)
        }
        for key in ["caFile", "certFile", "keyFile"] {
            guard let path = try fields.string(key) else { continue }
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw fields.error(key, "\(escaped(path)) \(FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist")")
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

    static func parseKubernetes(_ fields: JSONFields) throws(ConfigError) -> KubernetesSettings {
        try fields.rejectUnknownKeys(KubernetesSettings.keys)
        var settings = KubernetesSettings()
        if let url = try fields.string("apiURL") {
            let rest = url.hasPrefix("http://") ? url.dropFirst(7) : url.hasPrefix("https://") ? url.dropFirst(8) : nil
            guard let rest, !rest.isEmpty, !rest.contains(" ") else {
                throw fields.error("apiURL", "\(quoted(url)) is not an API server URL (https://host:port)")
            }
            settings.apiURL = url
        }
        if let path = try fields.string("kubeconfig") {
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw fields.error("kubeconfig", "\(escaped(path)) \(FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist")")
            }
            settings.kubeconfig = path
        }
        if let prefix = try fields.string("annotationPrefix") {
            guard KubernetesSettings.annotationBase(prefix) != nil else {
                throw fields.error("annotationPrefix", "\(quoted(prefix)) is not an annotation prefix flanneld accepts (fqdn/[a-z0-9_-]*, at most one slash)")
            }
            settings.annotationPrefix = prefix
        }
        if let path = try fields.string("netConfPath") {
            guard path.hasPrefix("/") else { throw fields.error("netConfPath", "\(quoted(path)) must be an absolute path") }
            settings.netConfPath = path
        }
        settings.setNodeNetworkUnavailable = try fields.bool("setNodeNetworkUnavailable") ?? true
        return settings
    }

    static func parseDaemon(_ root: JSONFields) throws(ConfigError) -> DaemonSettings {
        var settings = DaemonSettings()
        if let path = try root.string("subnetFile") {
            guard path.hasPrefix("/") else { throw root.error("subnetFile", "\(quoted(path)) must be an absolute path") }
            settings.subnetFile = path
        }
        if let path = try root.string("cniConfFile") {
            guard path.isEmpty || path.hasPrefix("/") else {
                throw root.error("cniConfFile", "\(quoted(path)) must be an absolute path (or \"\" to write none)")
            }
            settings.cniConfFile = path.isEmpty ? nil : path
        }
        if let bridge = try root.string("cniBridge") {
            if let problem = interfaceNameProblem(bridge) { throw root.error("cniBridge", problem) }
            settings.cniBridge = bridge
        }
        settings.ipMasq = try root.bool("ipMasq") ?? true
        if let text = try root.string("metricsAddress") {
            if text.isEmpty {
                settings.metricsAddress = nil
            } else {
                let parts = text.split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count == 2, let host = IPv4Address(String(parts[0])), let port = Int(parts[1]), (1...65535).contains(port) else {
                    throw root.error("metricsAddress", "\(quoted(text)) is not IPv4:port (e.g. 127.0.0.1:9472; \"\" serves none)")
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
        // One pass: this node (names are unique), and every other as a peer.
        var found: InventoryNode?
        var peers: [NodeRecord] = []
        peers.reserveCapacity(max(0, nodes.count - 1))
        for node in nodes {
            if node.record.name == nodeName {
                if found == nil { found = node }
            } else {
                peers.append(node.record)
            }
        }
        guard let local = found else {
            let known = nodes.prefix(5).map { escaped($0.record.name) }.joined(separator: ", ")
            throw ConfigError(source: source, field: "nodes",
                              message: "this node \(quoted(nodeName)) is not listed (nodes: \(known)\(nodes.count > 5 ? ", ..." : "")); "
                                + "set \"node\" in the file or pass --node")
        }
        return (ClusterView(network: network, local: local.record, peers: peers), local.interface ?? interface)
    }
}
