import Foundation
import Model
import Reconcile
import Registry
import Testing

/// flanneld's command line, read as flanneld reads it, and what it becomes.
@Suite("flanneld's flags and FLANNELD_* variables -> the agent's configuration")
struct FlanneldTests {
    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var arguments: [String]
        var environment: [String: String] = [:]
        var check: @Sendable (FlanneldOptions) -> Bool
    }

    static let cases: [Case] = [
        Case(description: "no flags: flanneld's defaults", arguments: []) {
            $0.etcdEndpoints == "http://127.0.0.1:4001,http://127.0.0.1:2379" && $0.etcdPrefix == "/coreos.com/network"
                && $0.subnetFile == "/run/flannel/subnet.env" && $0.subnetLeaseRenewMargin == 60 && !$0.ipMasq
                && $0.healthzIP == "0.0.0.0" && $0.healthzPort == 0 && $0.verbosity == 0 && $0.iface.isEmpty
        },
        Case(description: "--flag value, -flag=value and --flag=value are the same",
             arguments: ["--etcd-endpoints", "http://a:2379", "-etcd-prefix=/p", "--subnet-file=/tmp/s.env"]) {
            $0.etcdEndpoints == "http://a:2379" && $0.etcdPrefix == "/p" && $0.subnetFile == "/tmp/s.env"
        },
        Case(description: "a bool flag alone is true; =false turns it off; the last one wins",
             arguments: ["--ip-masq", "--ip-masq=false"]) { !$0.ipMasq },
        Case(description: "--iface is repeatable, in order", arguments: ["--iface", "eth1", "--iface=198.18.0.1", "--iface-regex", "^198\\.18\\."]) {
            $0.iface == ["eth1", "198.18.0.1"] && $0.ifaceRegex == ["^198\\.18\\."]
        },
        Case(description: "every flag from FLANNELD_*", arguments: [], environment: [
            "FLANNELD_ETCD_ENDPOINTS": "https://e:2379", "FLANNELD_ETCD_PREFIX": "/x", "FLANNELD_IFACE": "eth9",
            "FLANNELD_IFACE_REGEX": "eth.*", "FLANNELD_IFACE_CAN_REACH": "198.18.0.9", "FLANNELD_PUBLIC_IP": "198.18.0.1",
            "FLANNELD_IP_MASQ": "true", "FLANNELD_SUBNET_FILE": "/run/x.env", "FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
            "FLANNELD_HEALTHZ_IP": "127.0.0.1", "FLANNELD_HEALTHZ_PORT": "8471", "FLANNELD_V": "2",
        ]) {
            $0.etcdEndpoints == "https://e:2379" && $0.etcdPrefix == "/x" && $0.iface == ["eth9"] && $0.ifaceRegex == ["eth.*"]
                && $0.ifaceCanReach == "198.18.0.9" && $0.publicIP == "198.18.0.1" && $0.ipMasq && $0.subnetFile == "/run/x.env"
                && $0.subnetLeaseRenewMargin == 30 && $0.healthzIP == "127.0.0.1" && $0.healthzPort == 8471 && $0.verbosity == 2
        },
        Case(description: "the command line beats the environment, flag by flag",
             arguments: ["--etcd-prefix=/flag", "--iface=eth1"],
             environment: ["FLANNELD_ETCD_PREFIX": "/env", "FLANNELD_IFACE": "eth2", "FLANNELD_SUBNET_FILE": "/env.env"]) {
            $0.etcdPrefix == "/flag" && $0.iface == ["eth1"] && $0.subnetFile == "/env.env"
        },
        Case(description: "an empty variable is not set", arguments: [], environment: ["FLANNELD_ETCD_PREFIX": ""]) {
            $0.etcdPrefix == "/coreos.com/network"
        },
        Case(description: "-v 3 and --version", arguments: ["-v", "3", "--version"]) { $0.verbosity == 3 && $0.version },
        Case(description: "-help", arguments: ["-help"]) { $0.help },
        Case(description: "-- ends the flags", arguments: ["--ip-masq", "--"]) { $0.ipMasq },
    ]

    @Test("flags and variables are read as flanneld reads them", arguments: cases)
    func parses(_ c: Case) throws {
        let options = try FlanneldFlags.parse(arguments: c.arguments, environment: c.environment)
        #expect(c.check(options), "\(options)")
    }

    struct Refusal: Sendable, CustomStringConvertible {
        var description: String { (arguments + environment.map { "\($0.key)=\($0.value)" }).joined(separator: " ") }
        var arguments: [String]
        var environment: [String: String] = [:]
        /// Every one must be in the message.
        var mentions: [String]
    }

    static let refusals: [Refusal] = [
        Refusal(arguments: ["--use-multi-cluster-cidr"], mentions: ["-use-multi-cluster-cidr", "podCIDR"]),
        Refusal(arguments: ["--iptables-resync=5"], mentions: ["-iptables-resync", "nftables"]),
        Refusal(arguments: ["--iptables-forward-rules=false"], mentions: ["-iptables-forward-rules", "nftables"]),
        Refusal(arguments: ["--etcd-username", "u"], mentions: ["-etcd-username", "--etcd-certfile"]),
        Refusal(arguments: [], environment: ["FLANNELD_ETCD_PASSWORD": "p"], mentions: ["FLANNELD_ETCD_PASSWORD", "--etcd-certfile"]),
        Refusal(arguments: ["--vmodule=x=2"], mentions: ["-vmodule", "-v"]),
        Refusal(arguments: ["--no-such-flag"], mentions: ["flag provided but not defined: -no-such-flag"]),
        Refusal(arguments: ["--etcd-prefix"], mentions: ["flag needs an argument: -etcd-prefix"]),
        Refusal(arguments: ["--ip-masq=maybe"], mentions: ["invalid boolean value", "-ip-masq"]),
        Refusal(arguments: ["--healthz-port=http"], mentions: ["-healthz-port"]),
        Refusal(arguments: ["eth0"], mentions: ["unexpected argument \"eth0\""]),
        Refusal(arguments: ["---iface=eth0"], mentions: ["bad flag syntax"]),
    ]

    @Test("an unsupported or malformed flag is an error that names it", arguments: refusals)
    func refuses(_ r: Refusal) {
        #expect {
            _ = try FlanneldFlags.parse(arguments: r.arguments, environment: r.environment)
        } throws: { error in
            let text = "\(error)"
            return r.mentions.allSatisfy { text.contains($0) }
        }
    }

    @Test("what flanneld's own validation refuses, the agent refuses before it starts",
          arguments: [
            (["--subnet-lease-renew-margin=0"], "--subnet-lease-renew-margin"),
            (["--subnet-lease-renew-margin=1440"], "--subnet-lease-renew-margin"),
            (["--public-ip=1.2.3"], "--public-ip"),
            (["--public-ipv6=not-an-address"], "--public-ipv6"),
            (["--public-ipv6=fe80::1"], "--public-ipv6"),
            (["--iface-can-reach=host.example"], "--iface-can-reach"),
            (["--iface-regex=("], "--iface-regex"),
            (["--subnet-file=relative.env"], "--subnet-file"),
            (["--healthz-port=70000"], "--healthz-port"),
            (["--healthz-port=8471", "--healthz-ip=localhost"], "--healthz-ip"),
          ])
    func validates(_ arguments: [String], _ flag: String) throws {
        let options = try FlanneldFlags.parse(arguments: arguments, environment: [:])
        #expect {
            try options.validate()
        } throws: { "\($0)".contains(flag) }
    }

    @Test("the configuration: etcd from the flags, subnet.env, masquerade, renew margin, healthz, no CNI file")
    func config() throws {
        let options = try FlanneldFlags.parse(arguments: [
            "--etcd-endpoints=http://127.0.0.1:2379,http://127.0.0.2:2379", "--etcd-prefix=/my/net/", "--ip-masq",
            "--subnet-file=/run/f/s.env", "--subnet-lease-renew-margin=30", "--healthz-port=8471",
        ], environment: [:])
        let config = try options.agentConfig(interface: "eth0", interfaceIP: IPv4Address("198.18.0.5")!)
        #expect(config.etcd?.endpoints == ["http://127.0.0.1:2379", "http://127.0.0.2:2379"])
        #expect(config.etcd?.prefix == "/my/net")
        #expect(config.publicIP == IPv4Address("198.18.0.5"))
        #expect(config.interface == "eth0")
        #expect(config.daemon.ipMasq)
        #expect(config.daemon.subnetFile == "/run/f/s.env")
        #expect(config.daemon.leaseRenewMargin == 1800)
        #expect(config.daemon.metricsAddress?.description == "0.0.0.0:8471")
        #expect(config.daemon.cniConfFile == nil)

        let defaults = try FlanneldFlags.parse(arguments: ["--public-ip=203.0.113.9"], environment: [:])
            .agentConfig(interface: "eth0", interfaceIP: IPv4Address("198.18.0.5")!)
        #expect(defaults.publicIP == IPv4Address("203.0.113.9"), "--public-ip beats the interface's address (NAT)")
        #expect(!defaults.daemon.ipMasq, "flanneld's --ip-masq is off by default")
        #expect(defaults.daemon.metricsAddress == nil, "flanneld serves no healthz unless --healthz-port is given")
        #expect(defaults.daemon.leaseRenewMargin == 3600)
    }

    @Test("-v: 0 info, 1-4 debug, 5+ trace", arguments: [(0, "info"), (1, "debug"), (4, "debug"), (5, "trace"), (10, "trace")])
    func verbosity(_ v: Int, _ level: String) throws {
        #expect(try FlanneldFlags.parse(arguments: ["-v=\(v)"], environment: [:]).logLevel == level)
    }

    @Test("the usage text lists flanneld's supported flags with their defaults, not the refused ones")
    func usage() {
        let text = FlanneldFlags.usage(program: "flanneld")
        #expect(text.hasPrefix("Usage: flanneld [OPTION]...\n"))
        #expect(text.contains("  -etcd-endpoints string\n    \ta comma-delimited list of etcd endpoints (default \"http://127.0.0.1:4001,http://127.0.0.1:2379\")"))
        #expect(!text.contains("use-multi-cluster-cidr"))
        #expect(text.contains("  -kube-subnet-mgr\n"))
    }

    @Test("--kube-subnet-mgr and its flags (or FLANNELD_KUBE_*) map onto the kubernetes registry, with flanneld's defaults")
    func kubeFlags() throws {
        let defaults = try FlanneldFlags.parse(arguments: ["--kube-subnet-mgr"], environment: [:])
            .agentConfig(interface: "eth0", interfaceIP: IPv4Address("198.18.0.1")!)
        let kube = try #require(defaults.kubernetes)
        #expect(defaults.etcd == nil && defaults.publicIP == IPv4Address("198.18.0.1"))
        #expect(kube == KubernetesSettings(apiURL: nil, kubeconfig: nil, annotationPrefix: "flannel.alpha.coreos.com",
                                           netConfPath: "/etc/kube-flannel/net-conf.json", setNodeNetworkUnavailable: true))
        let given = try FlanneldFlags.parse(arguments: ["--kube-api-url=https://k:6443", "--kube-annotation-prefix", "example.com/x",
                                                        "--net-config-path=/etc/nc.json", "--set-node-network-unavailable=false",
                                                        "--public-ip=198.18.0.9"],
                                            environment: ["FLANNELD_KUBE_SUBNET_MGR": "true"])
            .agentConfig(interface: "eth0", interfaceIP: IPv4Address("198.18.0.1")!)
        #expect(given.kubernetes == KubernetesSettings(apiURL: "https://k:6443", kubeconfig: nil, annotationPrefix: "example.com/x",
                                                       netConfPath: "/etc/nc.json", setNodeNetworkUnavailable: false))
        #expect(given.publicIP == IPv4Address("198.18.0.9"))
        #expect(throws: FlanneldError.self) {
            try FlanneldFlags.parse(arguments: ["--kube-subnet-mgr", "--kubeconfig-file=/nonexistent/kubeconfig"], environment: [:])
                .agentConfig(interface: "eth0", interfaceIP: IPv4Address("198.18.0.1")!)
        }
    }
}

/// Interface selection over a described host (the kernel's side is tested in EndToEndTests).
@Suite("interface selection as flanneld does it")
struct InterfaceSelectionTests {
    static let host = HostNetwork(interfaces: [
        HostInterface(index: 1, name: "lo", mtu: 65536, addresses: [IPv4Address("127.0.0.1")!]),
        HostInterface(index: 2, name: "eth0", mtu: 1500, addresses: [IPv4Address("198.18.0.1")!, IPv4Address("198.18.0.11")!]),
        HostInterface(index: 3, name: "eth1", mtu: 9000, addresses: [IPv4Address("198.19.0.1")!]),
        HostInterface(index: 4, name: "bond0", mtu: 1500, addresses: []),
    ], defaultRouteIndex: 2, route: { ip in
        "\(ip)".hasPrefix("198.19.") ? (index: 3, source: IPv4Address("198.19.0.1")) : (index: 2, source: nil)
    })

    @Test("each way of choosing", arguments: [
        (InterfaceSelection(), "eth0 198.18.0.1"),
        (InterfaceSelection(publicIP: "198.18.0.11"), "eth0 198.18.0.11"),
        (InterfaceSelection(names: ["eth1"]), "eth1 198.19.0.1"),
        (InterfaceSelection(names: ["198.18.0.11"]), "eth0 198.18.0.11"),
        (InterfaceSelection(names: ["nope", "bond0", "eth1"]), "eth1 198.19.0.1"),
        (InterfaceSelection(names: ["nope"], regexes: ["^198\\.19"]), "eth1 198.19.0.1"),
        (InterfaceSelection(regexes: ["^eth1$"]), "eth1 198.19.0.1"),
        (InterfaceSelection(regexes: ["\\.11$"]), "eth0 198.18.0.11"),
        (InterfaceSelection(canReach: "198.19.7.7"), "eth1 198.19.0.1"),
        (InterfaceSelection(names: ["eth1"], canReach: "198.18.7.7"), "eth1 198.19.0.1"),
        (InterfaceSelection(regexes: ["^nomatch$"], canReach: "198.18.7.7"), "eth0 198.18.0.1"),
    ])
    func chooses(_ selection: InterfaceSelection, _ expected: String) throws {
        let choice = try selection.choose(on: Self.host)
        #expect("\(choice.interface.name) \(choice.address.map { "\($0)" } ?? "none")" == expected)
    }

    @Test("nothing matches: the error says what was tried", arguments: [
        (InterfaceSelection(names: ["bond0"]), "failed to find IPv4 address for interface bond0"),
        (InterfaceSelection(names: ["wlan0"], regexes: ["^zz"]), "--iface-regex ^zz: could not match pattern ^zz"),
        (InterfaceSelection(publicIP: "203.0.113.1"), "no interface holds 203.0.113.1"),
    ])
    func fails(_ selection: InterfaceSelection, _ text: String) {
        #expect {
            _ = try selection.choose(on: Self.host)
        } throws: { "\($0)".contains(text) }
    }

    @Test("no default route and nothing named: an error that says which flags to use")
    func noDefault() {
        var host = Self.host
        host.defaultRouteIndex = nil
        #expect {
            _ = try InterfaceSelection().choose(on: host)
        } throws: { "\($0)".contains("--iface") }
    }
}

/// The same selection in the agent's own file: `interfaces`, `interfaceRegex`, `interfaceCanReach`.
@Suite("interface selection keys in the configuration file")
struct InterfaceSelectionConfigTests {
    static let etcd = #"{"etcd": {"endpoints": ["http://127.0.0.1:2379"]}, "#

    @Test("the keys parse; with etcd they make publicIP optional; resolving sets the interface and the public IP")
    func parses() throws {
        let config = try AgentConfig.parse(Data((Self.etcd + #""interfaces": ["nosuch", "198.19.0.1"], "interfaceRegex": ["^eth"], "interfaceCanReach": "198.19.70.1"}"#).utf8),
                                           source: "agent.json")
        #expect(config.interfaceSelection == InterfaceSelection(names: ["nosuch", "198.19.0.1"], regexes: ["^eth"], canReach: "198.19.70.1"))
        #expect(config.publicIP == nil)
        let resolved = try config.resolvingInterface(on: InterfaceSelectionTests.host)
        #expect(resolved.interface == "eth1")
        #expect(resolved.publicIP == IPv4Address("198.19.0.1"))

        let pinned = try AgentConfig.parse(Data((Self.etcd + #""publicIP": "203.0.113.5", "interfaceRegex": ["^eth1$"]}"#).utf8), source: "agent.json")
            .resolvingInterface(on: InterfaceSelectionTests.host)
        #expect(pinned.interface == "eth1")
        #expect(pinned.publicIP == IPv4Address("203.0.113.5"), "a publicIP in the file stays (NAT)")
    }

    @Test("bad keys name the field", arguments: [
        (#""interface": "eth0", "interfaces": ["eth1"]"#, "interfaces"),
        (#""interfaces": []"#, "interfaces"),
        (#""interfaces": ["a/b"]"#, "interfaces[0]"),
        (#""interfaceRegex": ["("]"#, "interfaceRegex[0]"),
        (#""interfaceCanReach": "gateway""#, "interfaceCanReach"),
    ])
    func refuses(_ keys: String, _ field: String) {
        #expect {
            _ = try AgentConfig.parse(Data((Self.etcd + #""publicIP": "198.18.0.1", "# + keys + "}").utf8), source: "agent.json")
        } throws: { error in
            guard let error = error as? ConfigError else { return false }
            return error.field == field && error.source == "agent.json"
        }
    }

    @Test("etcd without publicIP and without a selection is still an error")
    func publicIPRequired() {
        #expect {
            _ = try AgentConfig.parse(Data((Self.etcd + "}").replacingOccurrences(of: ", }", with: "}").utf8), source: "agent.json")
        } throws: { ($0 as? ConfigError)?.field == "publicIP" }
    }

    @Test("nothing matches on this host: the error names the file")
    func unresolved() throws {
        let config = try AgentConfig.parse(Data((Self.etcd + #""interfaces": ["wlan9"]}"#).utf8), source: "agent.json")
        #expect {
            _ = try config.resolvingInterface(on: InterfaceSelectionTests.host)
        } throws: { "\($0)".contains("agent.json") && "\($0)".contains("wlan9") }
    }
}
