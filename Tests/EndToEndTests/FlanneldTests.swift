import Foundation
import Testing
import TestSupport

/// `vxlan-agent interface`: flanneld's interface selection against a real kernel.
@Suite("interface selection in a namespace", kernelTests, .blocking)
struct InterfaceSelectionKernelTests {
    /// eth0 198.18.0.1/24 with the default route; eth2 198.19.0.1/24 (and a second
    /// address) with a route to 198.19.64.0/18 behind 198.19.0.254.
    static func host(defaultRoute: Bool = true) throws -> TestHost {
        let host = try TestHost()
        do {
            try sh("""
            ip -n \(host.namespace) link add eth2 mtu 1400 type veth peer name eth3
            ip -n \(host.namespace) addr add 198.19.0.1/24 dev eth2
            ip -n \(host.namespace) addr add 198.19.0.9/24 dev eth2
            ip -n \(host.namespace) link set eth2 up
            ip -n \(host.namespace) link set eth3 up
            ip -n \(host.namespace) route add 198.19.64.0/18 via 198.19.0.254 dev eth2
            """)
            if defaultRoute { try sh("ip -n \(host.namespace) route add default via 198.18.0.254 dev eth0") }
        } catch {
            host.close()
            throw error
        }
        return host
    }

    @Test("each way of choosing, as flanneld chooses", arguments: [
        ("", "eth0 198.18.0.1 mtu 1500"),
        ("--iface eth2", "eth2 198.19.0.1 mtu 1400"),
        ("--iface 198.19.0.9", "eth2 198.19.0.9 mtu 1400"),
        ("--iface nosuch --iface eth2", "eth2 198.19.0.1 mtu 1400"),
        ("--iface-regex '^198\\.19\\.'", "eth2 198.19.0.1 mtu 1400"),
        ("--iface-regex '^eth2$'", "eth2 198.19.0.1 mtu 1400"),
        ("--iface nosuch --iface-regex '^eth0$'", "eth0 198.18.0.1 mtu 1500"),
        ("--iface-can-reach 198.19.70.1", "eth2 198.19.0.1 mtu 1400"),
        ("--iface-can-reach 203.0.113.1", "eth0 198.18.0.1 mtu 1500"),
        ("--public-ip 198.19.0.9", "eth2 198.19.0.9 mtu 1400"),
    ])
    func chooses(_ flags: String, _ expected: String) throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        let result = try host.exec("\(agentBinary) interface \(flags)")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == expected + "\n")
    }

    @Test("the same keys in the agent's file: sync puts flannel.1 on the interface they choose; nothing matches: an error naming the file, nothing created")
    func configFile() throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        let chosen = try host.write("regex.json", inventory(peers: 2).replacingOccurrences(of: #"{"node": "node-1","#,
                                                                                        with: #"{"node": "node-1", "interfaces": ["nosuch"], "interfaceRegex": ["^eth2$"],"#))
        let sync = try host.agent("sync --config \(chosen)")
        #expect(sync.status == 0, "\(sync.stderr)")
        #expect(try host.exec("ip -d link show flannel.1").stdout.contains(" dev eth2 "))
        try sh("ip -n \(host.namespace) link del flannel.1")

        let none = try host.write("none.json", inventory(peers: 2).replacingOccurrences(of: #"{"node": "node-1","#,
                                                                                      with: #"{"node": "node-1", "interfaces": ["nosuch"],"#))
        let failed = try host.agent("sync --config \(none)")
        #expect(failed.status == 1)
        #expect(failed.stderr.contains(none) && failed.stderr.contains("nosuch"), "\(failed.stderr)")
        #expect(try host.exec("ip link show flannel.1").status != 0, "nothing was created")
    }

    @Test("dual stack: the chosen interface's IPv6 address, read from the kernel: global, not link-local nor deprecated")
    func ipv6Address() throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        // TestHost's namespaces have IPv6 off; eth2 gets it back (and a link-local address).
        // The kernel lists the newer of two global addresses first: the deprecated one is
        // added last so that it comes first and must be passed over.
        try sh("""
        ip netns exec \(host.namespace) sysctl -qw net.ipv6.conf.eth2.disable_ipv6=0
        ip -n \(host.namespace) addr add fd00:198:19::1/64 dev eth2 nodad
        ip -n \(host.namespace) addr add fd00:198:19::9/64 dev eth2 nodad preferred_lft 0
        """)
        let listed = try host.exec("ip -6 addr show dev eth2").stdout
        #expect(listed.contains("fd00:198:19::9/64 scope global nodad deprecated"), "\(listed)")
        #expect(listed.contains("fe80::"), "a link-local address too: \(listed)")
        let result = try host.exec("\(agentBinary) interface --iface eth2")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "eth2 198.19.0.1 mtu 1400 ipv6 fd00:198:19::1\n")
        let none = try host.exec("\(agentBinary) interface --iface eth0")
        #expect(none.stdout == "eth0 198.18.0.1 mtu 1500\n", "link-local only: no IPv6 address to use")
    }

    @Test("no default route and nothing named; nothing matches: an error that says what was tried", arguments: [
        (false, "", "no IPv4 default route"),
        (true, "--iface nosuch --iface-regex '^zz'", "--iface nosuch: no interface \"nosuch\"; --iface-regex ^zz: could not match pattern ^zz"),
        (true, "--iface eth3", "failed to find IPv4 address for interface eth3"),
    ])
    func fails(_ defaultRoute: Bool, _ flags: String, _ text: String) throws {
        try requireKernel()
        let host = try Self.host(defaultRoute: defaultRoute)
        defer { host.close() }
        let result = try host.exec("\(agentBinary) interface \(flags)")
        #expect(result.status == 1)
        #expect(result.stderr.contains(text), "\(result.stderr)")
    }
}

/// The binary started as `flanneld` (a symlink) with flanneld's flags, beside a
/// `vxlan-agent run`, against one etcd.
@Suite("flanneld's command line against a real etcd", kernelTests, .blocking, .serialized)
struct FlanneldDaemonTests {
    @Test("started as flanneld with flanneld's flags and FLANNELD_IFACE: it takes a lease, programs the peer, writes flanneld's subnet.env, serves /readyz")
    func dropIn() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 2)
        defer { cluster.close() }
        try cluster.start(1)
        let bin = "\(cluster.directory)/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(bin)/flanneld", withDestinationPath: agentBinary)
        try FileManager.default.createDirectory(atPath: cluster.hostDirectory(2), withIntermediateDirectories: true)
        let env = "\(cluster.hostDirectory(2))/subnet.env"
        cluster.daemons[2] = try spawn(["ip", "netns", "exec", cluster.ns(2), "env", "FLANNELD_IFACE=eth0", "FLANNELD_ETCD_PREFIX=/coreos.com/network",
                                        "\(bin)/flanneld", "--etcd-endpoints=http://198.18.0.254:2379", "-subnet-file", env,
                                        "--ip-masq", "--healthz-ip=127.0.0.1", "--healthz-port=9472", "-v=1"],
                                       stdout: cluster.logPath(2))
        try cluster.waitUntil("h1 and h2 program each other") {
            try cluster.routes(1).count == 1 && cluster.routes(2).count == 1 && FileManager.default.fileExists(atPath: env)
        }
        let subnet = try cluster.subnet(2)
        let text = try String(contentsOfFile: env, encoding: .utf8)
        #expect(text == "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=\(subnet.replacingOccurrences(of: ".0/24", with: ".1/24"))\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
        let leases = try cluster.leases()
        #expect(leases["\(DaemonCluster.leasePrefix)/subnets/\(subnet.replacingOccurrences(of: "/", with: "-"))"] == flannelLease("198.18.0.2", mac: derivedMAC(2)),
                "\(leases)")
        try cluster.waitUntil("/readyz 200 on h2") { try cluster.http(2, "/readyz").contains("200 OK") }
        #expect(try cluster.http(2, "/readyz").contains("ready: subnet \(subnet), 1 peers"))
        #expect(cluster.log(2).contains("level=debug"), "-v=1 logs at debug")
        #expect(cluster.stop(2) == 0)
    }

    @Test("a refused flag stops it before anything is touched: exit 2, no device, no lease")
    func refusedFlag() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 1)
        defer { cluster.close() }
        let result = try run("ip netns exec \(cluster.ns(1)) \(agentBinary) flanneld --etcd-endpoints=http://198.18.0.254:2379 --iface=eth0 --iptables-resync=5")
        #expect(result.status == 2)
        #expect(result.stderr.contains("-iptables-resync is a flag of flanneld's that vxlan-agent does not support"), "\(result.stderr)")
        #expect(try sh("ip -n \(cluster.ns(1)) -o link show").contains("flannel.1") == false)
        #expect(try cluster.leases().isEmpty)
    }
}
