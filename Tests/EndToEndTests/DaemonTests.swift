import Foundation
import Synchronization
import Testing
import TestSupport

/// A cluster of host namespaces (Tests/cluster/cluster.sh) with one etcd in the
/// underlay namespace (198.18.0.254:2379 on the underlay bridge, and its own
/// loopback), and a `vxlan-agent run` per host. Everything lives under one
/// prefix and goes in `close()`.
final class DaemonCluster {
    static let counter = Mutex(0)
    static let leasePrefix = "/coreos.com/network"

    let prefix: String
    let directory: String
    let hosts: Int
    var daemons: [Int: pid_t] = [:]
    var etcd: pid_t?
    /// Dual stack: hosts and pods also on IPv6 (cluster.sh --dual), each agent given its publicIPv6 2001:2::N.
    let dual: Bool
    /// IPv6-only: hosts and pods on IPv6 alone (cluster.sh --v6only), etcd at [2001:2::fe]:2379.
    let v6only: Bool
    /// Where the hosts reach etcd.
    var etcdURL: String { v6only ? "http://[2001:2::fe]:2379" : "http://198.18.0.254:2379" }

    init(hosts: Int, network: String = #"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#, dual: Bool = false,
         v6only: Bool = false) throws {
        let n = Self.counter.withLock { value -> Int in value += 1; return value }
        prefix = "vxa-d\(getpid() % 100_000)-\(n)"
        directory = "/run/\(prefix)"
        self.hosts = hosts
        self.dual = dual || v6only
        self.v6only = v6only
        do {
            try sh("\(packageRoot)/Tests/cluster/cluster.sh up \(prefix) \(hosts) 0\(v6only ? " --v6only" : dual ? " --dual" : "")")
            if v6only {
                try sh("ip netns exec \(prefix)-ul sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.br0.disable_ipv6=0")
                try sh("ip -n \(prefix)-ul addr add 2001:2::fe/64 dev br0 nodad")
            } else {
                try sh("ip -n \(prefix)-ul addr add 198.18.0.254/24 dev br0")
            }
            try startEtcd()
            _ = try etcdctl("put \(Self.leasePrefix)/config '\(network)'")
        } catch {
            close()
            throw error
        }
    }

    func close() {
        for host in daemons.keys { stop(host) }
        stopEtcd()
        _ = try? run("\(packageRoot)/Tests/cluster/cluster.sh down \(prefix)")
    }

    func ns(_ host: Int) -> String { "\(prefix)-h\(host)" }

    // MARK: etcd

    func startEtcd() throws {
        guard let etcdBinary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first(where: FileManager.default.isExecutableFile) else {
            throw CommandFailure(command: "etcd", status: 127, output: "etcd is not installed (apt-get install etcd-server etcd-client)")
        }
        let dataDir = "\(directory)/etcd"
        etcd = try spawn(["ip", "netns", "exec", "\(prefix)-ul", etcdBinary, "--name", "test", "--data-dir", dataDir,
                          "--listen-client-urls", "\(etcdURL),http://127.0.0.1:2379",
                          "--advertise-client-urls", etcdURL,
                          "--listen-peer-urls", "http://127.0.0.1:2380",
                          "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                          "--initial-cluster", "test=http://127.0.0.1:2380"],
                         stdout: "\(directory)/etcd.log")
        try waitUntil("etcd answers", seconds: 30) { (try? etcdctl("endpoint health")) != nil }
    }

    func stopEtcd() {
        guard let pid = etcd else { return }
        kill(pid, SIGTERM)
        _ = waitForExit(pid)
        etcd = nil
    }

    /// etcdctl in the underlay namespace, against the test etcd.
    @discardableResult
    func etcdctl(_ arguments: String) throws -> String {
        try sh("ip netns exec \(prefix)-ul etcdctl --endpoints http://127.0.0.1:2379 --command-timeout 5s \(arguments)")
    }

    /// Every lease: subnet key -> the raw JSON value, as etcdctl reads it.
    func leases() throws -> [String: String] {
        let lines = try etcdctl("get --prefix \(Self.leasePrefix)/subnets/").split(separator: "\n").map(String.init)
        var result: [String: String] = [:]
        var index = 0
        while index + 1 < lines.count {
            result[lines[index]] = lines[index + 1]
            index += 2
        }
        return result
    }

    // MARK: daemons

    func configPath(_ host: Int) -> String { "\(directory)/h\(host).json" }
    func hostDirectory(_ host: Int) -> String { "\(directory)/h\(host)" }
    func logPath(_ host: Int) -> String { "\(directory)/h\(host).log" }

    func writeConfig(_ host: Int, extra: String = "") throws {
        try FileManager.default.createDirectory(atPath: hostDirectory(host), withIntermediateDirectories: true)
        let config = """
            {"node": "h\(host)",\(v6only ? "" : " \"publicIP\": \"198.18.0.\(host)\",")\(dual ? " \"publicIPv6\": \"2001:2::\(String(host, radix: 16))\"," : "")
             "etcd": {"endpoints": ["\(etcdURL)"]},
             "subnetFile": "\(hostDirectory(host))/subnet.env", "cniConfFile": "\(hostDirectory(host))/cni.conflist",
             "metricsAddress": "127.0.0.1:9472"\(extra)}
            """
        try config.write(toFile: configPath(host), atomically: true, encoding: .utf8)
    }

    func start(_ host: Int, extra: String = "") throws {
        try writeConfig(host, extra: extra)
        daemons[host] = try spawn(["ip", "netns", "exec", ns(host), agentBinary, "run", "--config", configPath(host),
                                   "--lock-file", "\(hostDirectory(host))/sync.lock", "--log-level", "debug"],
                                  stdout: logPath(host))
    }

    /// Starts the daemons of `hosts` and waits until each programs the others.
    func startAll(_ hosts: ClosedRange<Int>) throws {
        for host in hosts { try start(host) }
        try waitUntil("h\(hosts.lowerBound)-h\(hosts.upperBound) program each other") {
            // subnet.env is written in the same pass, just after the routes.
            try hosts.allSatisfy { try routes($0).count == hosts.count - 1 && FileManager.default.fileExists(atPath: "\(hostDirectory($0))/subnet.env") }
        }
    }

    /// SIGTERM, then waits; returns the exit status.
    @discardableResult
    func stop(_ host: Int) -> Int32? {
        guard let pid = daemons.removeValue(forKey: host) else { return nil }
        kill(pid, SIGTERM)
        return waitForExit(pid)
    }

    func log(_ host: Int) -> String { (try? String(contentsOfFile: logPath(host), encoding: .utf8)) ?? "" }

    // MARK: the kernel of a host

    func routes(_ host: Int) throws -> Set<String> {
        Set(try sh("ip -n \(ns(host)) route show proto vxlan-agent").split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
    }

    func neighbors(_ host: Int) throws -> String { try sh("ip -n \(ns(host)) neigh show dev flannel.1 nud permanent") }
    func fdb(_ host: Int) throws -> String { try sh("bridge -n \(ns(host)) fdb show dev flannel.1") }

    /// This host's subnet, from the subnet.env its daemon wrote.
    func subnet(_ host: Int) throws -> String {
        let env = try String(contentsOfFile: "\(hostDirectory(host))/subnet.env", encoding: .utf8)
        let line = try #require(env.split(separator: "\n").first { $0.hasPrefix("FLANNEL_SUBNET=") })
        let address = line.dropFirst("FLANNEL_SUBNET=".count).split(separator: "/")[0].split(separator: ".")
        return "\(address[0]).\(address[1]).\(address[2]).0/24"
    }

    /// GET on the daemon's status server, over bash's /dev/tcp (no curl needed).
    func http(_ host: Int, _ path: String) throws -> String {
        try sh("""
        ip netns exec \(ns(host)) bash -c 'exec 3<>/dev/tcp/127.0.0.1/9472; printf "GET \(path) HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3'
        """)
    }

    /// /metrics of the daemon on `host`, as a scraper reads it.
    func metrics(_ host: Int) throws -> Exposition { try Exposition(httpBody(http(host, "/metrics"))) }

    /// Waits until `probe` holds, polling; a failure names what was awaited and shows the logs.
    func waitUntil(_ what: String, seconds: Double = 20, _ probe: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? probe()) == true { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let logs = daemons.keys.sorted().map { "--- h\($0) ---\n\(log($0).suffix(3000))" }.joined(separator: "\n")
        throw CommandFailure(command: "wait until \(what)", status: 1, output: "not reached within \(Int(seconds)) s\n\(logs)")
    }

    /// Puts a pod (network namespace) on `host` through the CNI configuration
    /// its daemon wrote, calling /usr/lib/cni/bridge as a runtime does; returns its IP
    /// (IPv6-only: its IPv6 address).
    func addPod(_ host: Int) throws -> String {
        let pod = "\(ns(host))-p1"
        let list = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(hostDirectory(host))/cni.conflist"))) as! [String: Any]
        var plugin = (list["plugins"] as! [[String: Any]])[0]
        plugin["cniVersion"] = list["cniVersion"]
        plugin["name"] = list["name"]
        var ipam = plugin["ipam"] as! [String: Any]
        ipam["dataDir"] = "\(hostDirectory(host))/ipam"   // not the machine's /var/lib/cni
        plugin["ipam"] = ipam
        let conf = String(decoding: try JSONSerialization.data(withJSONObject: plugin), as: UTF8.self)
        try conf.write(toFile: "\(hostDirectory(host))/pod.conf", atomically: true, encoding: .utf8)
        try sh("""
        ip netns add \(pod)
        ip -n \(pod) link set lo up
        ip netns exec \(ns(host)) env CNI_COMMAND=ADD CNI_CONTAINERID=\(pod) CNI_NETNS=/var/run/netns/\(pod) CNI_IFNAME=eth0 \
          CNI_PATH=/usr/lib/cni /usr/lib/cni/bridge < \(hostDirectory(host))/pod.conf > \(hostDirectory(host))/pod.result
        """)
        let result = try String(contentsOfFile: "\(hostDirectory(host))/pod.result", encoding: .utf8)
        // IPv6-only: the pod's IPv6 address.
        let match = try #require(v6only ? result.firstMatch(of: /"address": *"([0-9a-f:]+)\//) : result.firstMatch(of: /"address": *"([0-9.]+)\//),
                                 "CNI result: \(result)")
        return String(match.1)
    }
}

/// The exact JSON flanneld writes for a vxlan lease.
func flannelLease(_ ip: String, mac: String, vni: Int = 1) -> String {
    #"{"PublicIP":"\#(ip)","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":\#(vni),"VtepMAC":"\#(mac)"}}"#
}

/// The MAC vxlan-agent derives for 198.18.0.N and VNI 1.
func derivedMAC(_ host: Int) -> String { String(format: "0e:01:c6:12:00:%02x", host) }

@Suite("vxlan-agent run: daemons against a real etcd", kernelTests, .blocking, .serialized)
struct DaemonTests {
    @Test("three daemons: distinct leases in flannel's format, pods ping across hosts, a node joins and leaves, a flanneld lease is programmed")
    func threeDaemons() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 4)
        defer { cluster.close() }
        try cluster.startAll(1...3)

        // The raw JSON in etcd, as etcdctl reads it: flanneld's format, distinct subnets.
        let leases = try cluster.leases()
        #expect(leases.count == 3)
        for host in 1...3 {
            let key = "\(DaemonCluster.leasePrefix)/subnets/" + (try cluster.subnet(host)).replacingOccurrences(of: "/", with: "-")
            #expect(leases[key] == flannelLease("198.18.0.\(host)", mac: derivedMAC(host)), "\(leases)")
        }
        #expect(Set(try (1...3).map(cluster.subnet)).count == 3)
        // Each key is attached to an etcd lease of 24 h.
        let withLease = try cluster.etcdctl("get --prefix \(DaemonCluster.leasePrefix)/subnets/ -w json")
        let kvs = try #require((try JSONSerialization.jsonObject(with: Data(withLease.utf8)) as? [String: Any])?["kvs"] as? [[String: Any]])
        for kv in kvs {
            let lease = try #require(kv["lease"] as? Int)
            let ttl = try cluster.etcdctl("lease timetolive \(String(lease, radix: 16))")
            let seconds = try #require(Int(ttl.firstMatch(of: /remaining\(([0-9]+)s\)/)?.1 ?? ""), "\(ttl)")
            #expect(seconds > 86_000 && seconds <= 86_400, "\(ttl)")
        }

        // subnet.env and the CNI configuration; pods on them reach each other.
        let subnet1 = try cluster.subnet(1)
        let env = try String(contentsOfFile: "\(cluster.hostDirectory(1))/subnet.env", encoding: .utf8)
        #expect(env == "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=\(subnet1.replacingOccurrences(of: ".0/24", with: ".1/24"))\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
        let pods = try (1...3).map(cluster.addPod)
        for (from, source) in pods.enumerated() {
            for (to, target) in pods.enumerated() where from != to {
                let ping = try run("ip netns exec \(cluster.ns(from + 1))-p1 ping -c 1 -W 2 \(target)")
                #expect(ping.status == 0, "pod \(source) on h\(from + 1) -> pod \(target) on h\(to + 1): \(ping.stdout)")
            }
        }

        // /healthz and /metrics.
        #expect(try cluster.http(1, "/healthz").contains("200 OK"))
        let metrics = try cluster.metrics(1)
        #expect(metrics["vxlan_agent_peers"] == 2, "\(metrics)")
        #expect(metrics["vxlan_agent_registry_connected"] == 1, "\(metrics)")
        #expect(metrics["vxlan_agent_changes_applied_total", ["kind": "route", "action": "add"]] == 2, "\(metrics)")

        // A fourth node joins: the others program it.
        try cluster.start(4)
        // h4's own pass may end after the others have programmed its lease: wait for its subnet.env too.
        try cluster.waitUntil("h1-h3 program h4") {
            try (1...3).allSatisfy { try cluster.routes($0).count == 3 } && FileManager.default.fileExists(atPath: "\(cluster.hostDirectory(4))/subnet.env")
        }
        let subnet4 = try cluster.subnet(4)
        #expect(try cluster.routes(1).contains(subnet4))

        // SIGTERM leaves h4's forwarding state; its lease deleted: its entries leave the others.
        #expect(cluster.stop(4) == 0)
        #expect(try cluster.routes(4).count == 3, "a stopped daemon keeps its forwarding state")
        try cluster.etcdctl("del \(DaemonCluster.leasePrefix)/subnets/\(subnet4.replacingOccurrences(of: "/", with: "-"))")
        try cluster.waitUntil("h1-h3 drop h4") { try (1...3).allSatisfy { try !cluster.routes($0).contains(subnet4) } }
        #expect(try !cluster.fdb(1).contains(derivedMAC(4)))
        #expect(try !cluster.neighbors(1).contains(subnet4.replacingOccurrences(of: "/24", with: " ")))

        // A lease written by hand exactly as flanneld writes it.
        try cluster.etcdctl("put \(DaemonCluster.leasePrefix)/subnets/10.244.200.0-24 '\(flannelLease("198.18.0.99", mac: "22:33:44:55:66:77"))'")
        try cluster.waitUntil("the flanneld lease is programmed") { try (1...3).allSatisfy { try cluster.routes($0).contains("10.244.200.0/24") } }
        #expect(try cluster.neighbors(2).contains("10.244.200.0 lladdr 22:33:44:55:66:77 PERMANENT"))
        #expect(try cluster.fdb(2).contains("22:33:44:55:66:77 dst 198.18.0.99 self permanent"))
    }

    @Test("kernel tampering is repaired; a malformed lease is skipped; a deleted own lease is taken again")
    func repairAndLeases() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 2)
        defer { cluster.close() }
        try cluster.startAll(1...2)
        let peer = try cluster.subnet(2)
        let gateway = peer.replacingOccurrences(of: "/24", with: "")
        let h1 = cluster.ns(1)

        let tampering: [(String, String, () throws -> Bool)] = [
            ("route deleted", "ip -n \(h1) route del \(peer)", { try cluster.routes(1).contains(peer) }),
            ("neighbors flushed", "ip -n \(h1) neigh flush dev flannel.1 nud permanent", { try cluster.neighbors(1).contains("\(gateway) lladdr") }),
            ("fdb entry deleted", "bridge -n \(h1) fdb del \(derivedMAC(2)) dev flannel.1 self", { try cluster.fdb(1).contains(derivedMAC(2)) }),
            ("device set down", "ip -n \(h1) link set flannel.1 down", { try cluster.routes(1).contains(peer) && sh("ip -n \(h1) link show flannel.1").contains(",UP") }),
            ("device deleted", "ip -n \(h1) link del flannel.1", { try cluster.routes(1).contains(peer) && cluster.fdb(1).contains(derivedMAC(2)) }),
        ]
        for (what, command, repaired) in tampering {
            try sh(command)
            try cluster.waitUntil("\(what): repaired", seconds: 10, repaired)
        }
        #expect(cluster.log(1).contains("trigger=kernel"))

        // A malformed lease: logged with its key, skipped; the daemon stays healthy.
        try cluster.etcdctl(#"put /coreos.com/network/subnets/10.244.77.0-24 '{"PublicIP": "198.18.0.77", "BackendData": '"#)
        try cluster.etcdctl(#"put /coreos.com/network/subnets/10.244.78.0-24 '{"PublicIP": "not-an-ip", "BackendType": "vxlan", "BackendData": {"VtepMAC": "22:33:44:55:66:78"}}'"#)
        try cluster.waitUntil("the malformed leases are logged") {
            cluster.log(1).contains("key=/coreos.com/network/subnets/10.244.77.0-24") && cluster.log(1).contains("not-an-ip")
        }
        #expect(cluster.log(1).contains("lease skipped"))
        #expect(try cluster.routes(1) == [peer])
        #expect(try cluster.http(1, "/healthz").contains("200 OK"))
        #expect(try cluster.metrics(1)["vxlan_agent_leases_invalid"] == 2)

        // h1's own lease deleted while it runs: it takes one again (its previous subnet, from subnet.env).
        let own = try cluster.subnet(1)
        let key = "/coreos.com/network/subnets/\(own.replacingOccurrences(of: "/", with: "-"))"
        try cluster.etcdctl("del \(key)")
        try cluster.waitUntil("h1 takes its lease again") { try cluster.log(1).contains("taking a lease again") && cluster.leases()[key] != nil }
        #expect(try cluster.leases()[key] == flannelLease("198.18.0.1", mac: derivedMAC(1)))
        try cluster.waitUntil("h2 programs h1 again") { try cluster.routes(2).contains(own) }
    }

    @Test("etcd stopped: the forwarding state stays and repairs go on; etcd back: changes made meanwhile arrive")
    func etcdOutage() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 2)
        defer { cluster.close() }
        try cluster.startAll(1...2)
        let peer = try cluster.subnet(2)

        cluster.stopEtcd()
        try cluster.waitUntil("h1 notices") { cluster.log(1).contains("registry unreachable; keeping the forwarding state") }
        Thread.sleep(forTimeInterval: 1)
        #expect(try cluster.routes(1) == [peer], "the registry going away must not flush anything")
        try sh("ip -n \(cluster.ns(1)) route del \(peer)")
        try cluster.waitUntil("repaired without etcd", seconds: 10) { try cluster.routes(1).contains(peer) }
        #expect(try cluster.metrics(1)["vxlan_agent_registry_connected"] == 0)

        try cluster.startEtcd()
        // A node that joined while h1 and h2 were cut off (written before they reconnect).
        try cluster.etcdctl("put /coreos.com/network/subnets/10.244.201.0-24 '\(flannelLease("198.18.0.98", mac: "22:33:44:55:66:98"))'")
        try cluster.waitUntil("the new lease arrives") { try (1...2).allSatisfy { try cluster.routes($0).contains("10.244.201.0/24") } }
        #expect(try cluster.routes(1).contains(peer))
        try cluster.waitUntil("reconnected") { try cluster.metrics(1)["vxlan_agent_registry_connected"] == 1 }
    }

    @Test("ipMasq: pod to outside is masqueraded, pod to pod is not; cleanup removes device, table and files")
    func masqueradeAndCleanup() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 3)
        defer { cluster.close() }
        try cluster.startAll(1...2)
        let pod1 = try cluster.addPod(1), pod2 = try cluster.addPod(2)
        // Host 3 runs no agent: it has no route to the pod network, so only a
        // masqueraded ping (source 198.18.0.1) can be answered.
        let outside = try run("ip netns exec \(cluster.ns(1))-p1 ping -c 1 -W 2 198.18.0.3")
        #expect(outside.status == 0, "pod -> outside: \(outside.stdout)")
        let table = try sh("ip netns exec \(cluster.ns(1)) nft list table ip vxlan-agent")
        #expect(table.contains("masquerade fully-random"))
        // Pod to pod keeps its source: h2's pod sees h1's pod address.
        try sh("ip netns exec \(cluster.ns(2))-p1 timeout 10 tcpdump -n -c 1 -i eth0 icmp and src \(pod1) > \(cluster.directory)/seen.txt 2>&1 & sleep 1")
        #expect(try run("ip netns exec \(cluster.ns(1))-p1 ping -c 3 -W 2 \(pod2)").status == 0)
        try cluster.waitUntil("tcpdump saw the pod's own source address", seconds: 10) {
            (try? String(contentsOfFile: "\(cluster.directory)/seen.txt", encoding: .utf8))?.contains("\(pod1) > \(pod2)") == true
        }

        // SIGHUP reloads the file: ipMasq off removes the table; a bad file keeps the running configuration.
        try cluster.writeConfig(1, extra: #", "ipMasq": false"#)
        kill(try #require(cluster.daemons[1]), SIGHUP)
        try cluster.waitUntil("the table is gone after SIGHUP") {
            try run("ip netns exec \(cluster.ns(1)) nft list table ip vxlan-agent").status != 0
        }
        try "{".write(toFile: cluster.configPath(1), atomically: true, encoding: .utf8)
        kill(try #require(cluster.daemons[1]), SIGHUP)
        try cluster.waitUntil("the bad file is reported") { cluster.log(1).contains("reload failed; keeping the running configuration") }
        try sh("ip -n \(cluster.ns(1)) route del \(try cluster.subnet(2))")
        try cluster.waitUntil("still repairing after a bad reload") { try cluster.routes(1).count == 1 }
        try cluster.writeConfig(1)

        // cleanup after the daemon stopped: nothing of the agent's is left. (ipMasq
        // was turned off above: put a table back, so cleanup's nft has one to remove.)
        #expect(cluster.stop(1) == 0)
        try sh("ip netns exec \(cluster.ns(1)) nft add table ip vxlan-agent")
        let cleanup = try run("ip netns exec \(cluster.ns(1)) \(agentBinary) cleanup --config \(cluster.configPath(1)) --lock-file \(cluster.hostDirectory(1))/sync.lock")
        #expect(cleanup.status == 0, "\(cleanup.stderr)")
        #expect(cleanup.stdout.contains("removed nft table vxlan-agent"), "\(cleanup.stdout)")
        #expect(try run("ip -n \(cluster.ns(1)) link show flannel.1").status != 0)
        #expect(try run("ip netns exec \(cluster.ns(1)) nft list table ip vxlan-agent").status != 0)
        #expect(try cluster.routes(1).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(cluster.hostDirectory(1))/subnet.env"))
        #expect(!FileManager.default.fileExists(atPath: "\(cluster.hostDirectory(1))/cni.conflist"))
    }
}
