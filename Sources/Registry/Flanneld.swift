import Foundation
import Model
import Reconcile

/// flanneld's command line, read as flanneld reads it (flannel's main.go, Go's
/// `flag` package, coreos/pkg `flagutil.SetFlagsFromEnv(flags, "FLANNELD")`):
///
/// - `-name`, `--name`, `-name=value`, `--name value`; a bool flag takes its value
///   only after `=` (`--ip-masq`, `--ip-masq=false`); `--` ends the flags;
/// - a list flag (`--iface`, `--iface-regex`) adds one entry each time it is given;
///   any other flag given twice keeps the last value;
/// - then every flag *not* given on the command line is read from
///   `FLANNELD_<NAME>` (upper case, `-` as `_`) when that is set and not empty:
///   the command line beats the environment; the variable is one value, also for a
///   list flag (`FLANNELD_IFACE=eth0`).
///
/// The flags of flanneld the agent does not implement are still known by name, so
/// that giving one (on the command line or in the environment) is an error that
/// names it and says what to use instead, and nothing starts half-configured.
public struct FlanneldOptions: Sendable, Hashable {
    public var etcdEndpoints = "http://127.0.0.1:4001,http://127.0.0.1:2379"
    public var etcdPrefix = Flannel.defaultPrefix
    public var etcdKeyfile = ""
    public var etcdCertfile = ""
    public var etcdCAFile = ""
    public var iface: [String] = []
    public var ifaceRegex: [String] = []
    public var ifaceCanReach = ""
    public var publicIP = ""
    public var publicIPv6 = ""
    public var ipMasq = false
    public var subnetFile = "/run/flannel/subnet.env"
    /// Minutes, 1...1439.
    public var subnetLeaseRenewMargin = 60
    public var healthzIP = "0.0.0.0"
    /// 0: no healthz server (flanneld's default).
    public var healthzPort = 0
    /// klog's `-v`.
    public var verbosity = 0
    public var version = false
    public var help = false
    /// flannel's Kubernetes subnet manager (`--kube-subnet-mgr`) and its flags.
    public var kubeSubnetMgr = false
    public var kubeAPIURL = ""
    public var kubeAnnotationPrefix = "flannel.alpha.coreos.com"
    public var kubeconfigFile = ""
    public var netConfigPath = "/etc/kube-flannel/net-conf.json"
    public var setNodeNetworkUnavailable = true

    public init() {}
}

/// Why a flanneld command line cannot be run; the text names the flag or variable.
public struct FlanneldError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum FlanneldFlags {
    public enum Kind: Sendable { case string, bool, int, list }

    /// One flag of flanneld's. `set` is nil for a flag the agent refuses; `instead`
    /// then says what to use.
    public struct Flag: Sendable {
        public var name: String
        public var kind: Kind
        public var help: String
        public var set: (@Sendable (inout FlanneldOptions, String) throws(FlanneldError) -> Void)?
        public var instead: String?

        public var environmentName: String { "FLANNELD_" + name.uppercased().replacingOccurrences(of: "-", with: "_") }
    }

    static func string(_ name: String, _ help: String, _ key: WritableKeyPath<FlanneldOptions, String> & Sendable) -> Flag {
        Flag(name: name, kind: .string, help: help, set: { options, value in options[keyPath: key] = value })
    }

    static func list(_ name: String, _ help: String, _ key: WritableKeyPath<FlanneldOptions, [String]> & Sendable) -> Flag {
        Flag(name: name, kind: .list, help: help, set: { options, value in options[keyPath: key].append(value) })
    }

    static func bool(_ name: String, _ help: String, _ key: WritableKeyPath<FlanneldOptions, Bool> & Sendable) -> Flag {
        Flag(name: name, kind: .bool, help: help, set: { options, value throws(FlanneldError) in
            guard let parsed = goBool(value) else { throw FlanneldError("invalid boolean value \(quoted(value)) for -\(name)") }
            options[keyPath: key] = parsed
        })
    }

    static func int(_ name: String, _ help: String, _ key: WritableKeyPath<FlanneldOptions, Int> & Sendable) -> Flag {
        Flag(name: name, kind: .int, help: help, set: { options, value throws(FlanneldError) in
            guard let parsed = Int(value) else { throw FlanneldError("invalid value \(quoted(value)) for flag -\(name): parse error") }
            options[keyPath: key] = parsed
        })
    }

    static func refused(_ name: String, _ kind: Kind, instead: String) -> Flag {
        Flag(name: name, kind: kind, help: "not supported: \(instead)", set: nil, instead: instead)
    }

    /// The flags flanneld implements that the agent runs, with flanneld's names and help.
    public static let supported: [Flag] = [
        string("etcd-endpoints", "a comma-delimited list of etcd endpoints", \.etcdEndpoints),
        string("etcd-prefix", "etcd prefix", \.etcdPrefix),
        string("etcd-keyfile", "SSL key file used to secure etcd communication", \.etcdKeyfile),
        string("etcd-certfile", "SSL certification file used to secure etcd communication", \.etcdCertfile),
        string("etcd-cafile", "SSL Certificate Authority file used to secure etcd communication", \.etcdCAFile),
        list("iface", "interface to use (IP or name) for inter-host communication. Can be specified multiple times to check each option in order. Returns the first match found.", \.iface),
        list("iface-regex", "regex expression to match the first interface to use (IP or name) for inter-host communication. Can be specified multiple times to check each regex in order. Returns the first match found. Regexes are checked after specific interfaces specified by the iface option have already been checked.", \.ifaceRegex),
        string("iface-can-reach", "detect interface to use (IP or name) for inter-host communication based on which will be used for provided IP. This is exactly the interface to use of command 'ip route get <ip-address>'", \.ifaceCanReach),
        string("subnet-file", "filename where env variables (subnet, MTU, ... ) will be written to", \.subnetFile),
        string("public-ip", "IP accessible by other nodes for inter-host communication", \.publicIP),
        string("public-ipv6", "IPv6 accessible by other nodes for inter-host communication", \.publicIPv6),
        int("subnet-lease-renew-margin", "subnet lease renewal margin, in minutes, ranging from 1 to 1439", \.subnetLeaseRenewMargin),
        bool("ip-masq", "setup IP masquerade rule for traffic destined outside of overlay network", \.ipMasq),
        bool("version", "print version and exit", \.version),
        string("healthz-ip", "the IP address for healthz server to listen", \.healthzIP),
        int("healthz-port", "the port for healthz server to listen(0 to disable)", \.healthzPort),
        int("v", "number for the log level verbosity", \.verbosity),
        bool("kube-subnet-mgr", "contact the Kubernetes API for subnet assignment instead of etcd.", \.kubeSubnetMgr),
        string("kube-api-url", "Kubernetes API server URL. Does not need to be specified if flannel is running in a pod.", \.kubeAPIURL),
        string("kube-annotation-prefix", "Kubernetes annotation prefix. Can contain single slash \"/\", otherwise it will be appended at the end.", \.kubeAnnotationPrefix),
        string("kubeconfig-file", "kubeconfig file location. Does not need to be specified if flannel is running in a pod.", \.kubeconfigFile),
        string("net-config-path", "path to the network configuration file (with --kube-subnet-mgr)", \.netConfigPath),
        bool("set-node-network-unavailable", "set NodeNetworkUnavailable after ready", \.setNodeNetworkUnavailable),
    ]

    static let iptablesInstead = "the agent keeps its masquerade and forward rules in its own nftables table (ip vxlan-agent), checked on every sync; remove the flag"

    /// flanneld's flags the agent does not run. Add a flag to `supported` (and
    /// remove it here) when the agent learns it.
    public static let refusedFlags: [Flag] = [
        refused("use-multi-cluster-cidr", .bool, instead: "MultiClusterCIDR (removed from Kubernetes) is not supported; each Node's podCIDR is its subnet"),
        refused("persistent-mac", .bool, instead: "the agent's VTEP MAC is stable already (derived from the node's lease); remove the flag"),
        refused("iptables-resync", .int, instead: iptablesInstead),
        refused("iptables-forward-rules", .bool, instead: iptablesInstead),
        refused("etcd-username", .string, instead: "etcd basic authentication is not supported; use client certificates (--etcd-certfile, --etcd-keyfile, --etcd-cafile)"),
        refused("etcd-password", .string, instead: "etcd basic authentication is not supported; use client certificates (--etcd-certfile, --etcd-keyfile, --etcd-cafile)"),
        refused("vmodule", .string, instead: "per-file log levels are not supported; use -v"),
        refused("log_backtrace_at", .string, instead: "not supported; use -v"),
        refused("subnet-dir", .string, instead: "multi-network mode is not supported; one network per etcd prefix, written to --subnet-file"),
        refused("networks", .string, instead: "multi-network mode is not supported; one network per etcd prefix"),
        refused("listen", .string, instead: "flannel's client/server mode is not supported; run the agent on every node against etcd"),
        refused("remote", .string, instead: "flannel's client/server mode is not supported; run the agent on every node against etcd"),
        refused("remote-keyfile", .string, instead: "flannel's client/server mode is not supported"),
        refused("remote-certfile", .string, instead: "flannel's client/server mode is not supported"),
        refused("remote-cafile", .string, instead: "flannel's client/server mode is not supported"),
    ]

    public static let all: [Flag] = supported + refusedFlags
    static let byName: [String: Flag] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// Go's strconv.ParseBool.
    static func goBool(_ text: String) -> Bool? {
        switch text {
        case "1", "t", "T", "TRUE", "true", "True": true
        case "0", "f", "F", "FALSE", "false", "False": false
        default: nil
        }
    }

    /// Parses `arguments` (without the program name) and then `environment`, as
    /// flanneld does. `help` is set for `-h`/`-help`/`--help`; `version` for
    /// `--version` (flanneld reads no environment then: neither do we).
    public static func parse(arguments: [String], environment: [String: String]) throws(FlanneldError) -> FlanneldOptions {
        var options = FlanneldOptions()
        var given = Set<String>()
        var index = 0
        func apply(_ flag: Flag, _ value: String, from source: String) throws(FlanneldError) {
            guard let set = flag.set else {
                throw FlanneldError("\(source) is a flag of flanneld's that vxlan-agent does not support: \(flag.instead ?? "remove it")")
            }
            try set(&options, value)
        }
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.count >= 2, argument.hasPrefix("-") else {
                throw FlanneldError("unexpected argument \(quoted(argument)): flanneld takes flags only (-name or --name, value after = or as the next argument)")
            }
            var name = Substring(argument.dropFirst())
            if name.hasPrefix("-") {
                name = name.dropFirst()
                if name.isEmpty {
                    if index < arguments.count {
                        throw FlanneldError("unexpected argument \(quoted(arguments[index])) after --: flanneld takes flags only")
                    }
                    break
                }
            }
            guard !name.isEmpty, !name.hasPrefix("-"), !name.hasPrefix("=") else { throw FlanneldError("bad flag syntax: \(argument)") }
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = name[..<equals]
            }
            let key = String(name)
            guard let flag = byName[key] else {
                if key == "help" || key == "h" {
                    options.help = true
                    return options
                }
                throw FlanneldError("flag provided but not defined: -\(key) (see `flanneld --help` for the flags vxlan-agent runs)")
            }
            if flag.kind == .bool {
                try apply(flag, value ?? "true", from: "-\(key)")
            } else {
                if value == nil {
                    guard index < arguments.count else { throw FlanneldError("flag needs an argument: -\(key)") }
                    value = arguments[index]
                    index += 1
                }
                try apply(flag, value!, from: "-\(key)")
            }
            given.insert(key)
        }
        if options.version { return options }
        for flag in all where !given.contains(flag.name) {
            guard let value = environment[flag.environmentName], !value.isEmpty else { continue }
            try apply(flag, value, from: "\(flag.environmentName) (the environment's -\(flag.name))")
        }
        return options
    }

    /// flanneld's usage text (`flanneld --help`), Go's `PrintDefaults` layout, the
    /// refused flags left out.
    public static func usage(program: String) -> String {
        var text = "Usage: \(program) [OPTION]...\n"
        for flag in supported.sorted(by: { $0.name < $1.name }) {
            let type = switch flag.kind {
            case .bool: ""
            case .int: " int"
            case .string: " string"
            case .list: " value"
            }
            text += "  -\(flag.name)\(type)\n    \t\(flag.help)"
            let defaults = FlanneldOptions()
            let shown: String? = switch flag.name {
            case "etcd-endpoints": "\"\(defaults.etcdEndpoints)\""
            case "etcd-prefix": "\"\(defaults.etcdPrefix)\""
            case "subnet-file": "\"\(defaults.subnetFile)\""
            case "healthz-ip": "\"\(defaults.healthzIP)\""
            case "subnet-lease-renew-margin": "60"
            default: nil
            }
            if let shown { text += " (default \(shown))" }
            text += "\n"
        }
        text += "Each flag can also be given as FLANNELD_<FLAG> in the environment (e.g. FLANNELD_ETCD_ENDPOINTS); the command line wins.\n"
        return text
    }
}

extension FlanneldOptions {
    /// How the underlay interface is chosen (flannel's order: each --iface, then
    /// each --iface-regex, then --iface-can-reach; with none of them, the interface
    /// holding --public-ip, else the default route's).
    public var interfaceSelection: InterfaceSelection {
        InterfaceSelection(names: iface, regexes: ifaceRegex, canReach: ifaceCanReach.isEmpty ? nil : ifaceCanReach,
                           publicIP: publicIP.isEmpty ? nil : publicIP, publicIPv6: publicIPv6.isEmpty ? nil : publicIPv6)
    }

    /// The agent's configuration for this command line, once the interface is
    /// chosen (`interface`, its address `interfaceIP`; nil: it has none, an IPv6-only
    /// underlay, where --public-ipv6 or its IPv6 address is used). Every value is
    /// checked here; an error names the flag.
    public func agentConfig(interface: String, interfaceIP: IPv4Address?) throws(FlanneldError) -> AgentConfig {
        try validate()
        var daemon = DaemonSettings()
        daemon.subnetFile = subnetFile
        daemon.ipMasq = ipMasq
        // flanneld writes no CNI configuration: its DaemonSet's init container does.
        daemon.cniConfFile = nil
        daemon.leaseRenewMargin = Int64(subnetLeaseRenewMargin) * 60
        daemon.metricsAddress = healthzPort == 0 ? nil : DaemonSettings.Address(host: healthzIP, port: healthzPort)
        let publicAddress = publicIP.isEmpty ? interfaceIP : IPv4Address(publicIP)
        if kubeSubnetMgr {
            // The Node objects are the registry: the etcd flags are not read, as in flanneld.
            guard netConfigPath.hasPrefix("/") else { throw FlanneldError("--net-config-path: \(quoted(netConfigPath)) must be an absolute path") }
            if !kubeconfigFile.isEmpty && !FileManager.default.isReadableFile(atPath: kubeconfigFile) {
                throw FlanneldError("--kubeconfig-file: \(escaped(kubeconfigFile)) \(FileManager.default.fileExists(atPath: kubeconfigFile) ? "cannot be read" : "does not exist")")
            }
            let kubernetes = KubernetesSettings(apiURL: kubeAPIURL.isEmpty ? nil : kubeAPIURL,
                                                kubeconfig: kubeconfigFile.isEmpty ? nil : kubeconfigFile,
                                                annotationPrefix: kubeAnnotationPrefix, netConfPath: netConfigPath,
                                                setNodeNetworkUnavailable: setNodeNetworkUnavailable)
            var config = AgentConfig(source: "flanneld command line", node: nil, network: nil, nodes: [], etcd: nil,
                                     publicIP: publicAddress, interface: interface, interfaceSelection: nil, routeLayout: nil,
                                     deviceName: nil, daemon: daemon)
            config.kubernetes = kubernetes
            config.publicIPv6 = IPv6Address(publicIPv6)
            return config
        }
        var settings = EtcdSettings()
        settings.endpoints = etcdEndpoints.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        for endpoint in settings.endpoints {
            let rest = endpoint.hasPrefix("http://") ? endpoint.dropFirst(7) : endpoint.hasPrefix("https://") ? endpoint.dropFirst(8) : nil
            guard let rest, !rest.isEmpty, !rest.contains(" ") else {
                throw FlanneldError("--etcd-endpoints: \(quoted(endpoint)) is not an endpoint (http://host:port or https://host:port)")
            }
        }
        guard etcdPrefix.hasPrefix("/"), !Flannel.trimmed(etcdPrefix).isEmpty else {
            throw FlanneldError("--etcd-prefix: \(quoted(etcdPrefix)) must be an absolute key prefix like /coreos.com/network")
        }
        settings.prefix = Flannel.trimmed(etcdPrefix)
        for (flag, path) in [("--etcd-cafile", etcdCAFile), ("--etcd-certfile", etcdCertfile), ("--etcd-keyfile", etcdKeyfile)] where !path.isEmpty {
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw FlanneldError("\(flag): \(escaped(path)) \(FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist")")
            }
        }
        settings.caFile = etcdCAFile.isEmpty ? nil : etcdCAFile
        settings.certFile = etcdCertfile.isEmpty ? nil : etcdCertfile
        settings.keyFile = etcdKeyfile.isEmpty ? nil : etcdKeyfile
        if (settings.certFile == nil) != (settings.keyFile == nil) {
            throw FlanneldError(settings.certFile == nil ? "--etcd-keyfile needs --etcd-certfile" : "--etcd-certfile needs --etcd-keyfile")
        }
        var config = AgentConfig(source: "flanneld command line", node: nil, network: nil, nodes: [], etcd: settings,
                                 publicIP: publicAddress, interface: interface, interfaceSelection: nil, routeLayout: nil, deviceName: nil,
                                 daemon: daemon)
        config.publicIPv6 = IPv6Address(publicIPv6)
        return config
    }

    /// The checks that need no kernel (flanneld's own, and ours).
    public func validate() throws(FlanneldError) {
        if subnetLeaseRenewMargin >= 24 * 60 || subnetLeaseRenewMargin <= 0 {
            throw FlanneldError("--subnet-lease-renew-margin: \(subnetLeaseRenewMargin) is out of the acceptable range (1 to 1439 minutes)")
        }
        if !publicIP.isEmpty && IPv4Address(publicIP) == nil {
            throw FlanneldError("--public-ip: \(quoted(publicIP)) is not an IPv4 address")
        }
        if !publicIPv6.isEmpty {
            // Go's net.ParseIP takes IPv4 text here too; an IPv6 underlay needs an IPv6 address.
            guard let address = IPv6Address(publicIPv6) else {
                throw FlanneldError("--public-ipv6: \(quoted(publicIPv6)) is not an IPv6 address")
            }
            if let problem = AgentConfig.publicIPv6Problem(address) { throw FlanneldError("--public-ipv6: \(problem)") }
        }
        if !ifaceCanReach.isEmpty && IPv4Address(ifaceCanReach) == nil {
            throw FlanneldError("--iface-can-reach: \(quoted(ifaceCanReach)) is not an IPv4 address")
        }
        for pattern in ifaceRegex {
            do { _ = try Regex(pattern) } catch {
                throw FlanneldError("--iface-regex: could not compile the regex \(quoted(pattern)): \(error)")
            }
        }
        guard subnetFile.hasPrefix("/") else { throw FlanneldError("--subnet-file: \(quoted(subnetFile)) must be an absolute path") }
        if healthzPort != 0 {
            guard (1...65535).contains(healthzPort) else { throw FlanneldError("--healthz-port: \(healthzPort) is not a port (1-65535, 0 to disable)") }
            guard IPv4Address(healthzIP) != nil else { throw FlanneldError("--healthz-ip: \(quoted(healthzIP)) is not an IPv4 address") }
        }
        if verbosity < 0 { throw FlanneldError("-v: \(verbosity) is not a level (0 or more)") }
    }

    /// `-v` as the agent's log level: 0 info, 1-4 debug (flannel: 1 shows the data
    /// path's messages), 5 and more trace.
    public var logLevel: String {
        switch verbosity {
        case ..<1: "info"
        case 1...4: "debug"
        default: "trace"
        }
    }
}
