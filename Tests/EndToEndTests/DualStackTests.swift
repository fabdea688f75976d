import Foundation
import Testing
import TestSupport

/// Dual stack on a real kernel: hosts and pods with IPv4 and IPv6
/// (Tests/cluster/cluster.sh --dual, an IPv6 underlay in 2001:2::/48), the
/// agent programming flannel.1 and flannel-v6.1 side by side: `sync` from a
/// static inventory, and daemons against a real etcd with flannel's dual-stack
/// leases. Pods ping in both families.
@Suite("dual stack: flannel.1 and flannel-v6.1 side by side", kernelTests, .blocking, .serialized)
struct DualStackTests {
    static let cluster = "\(packageRoot)/Tests/cluster/cluster.sh"
    static let counter = Counter()

    final class Counter: @unchecked Sendable {
        // @unchecked: the suite is serialized.
        var value = 0
        func next() -> Int { value += 1; return value }
    }

    /// `ip -6 route show proto vxlan-agent` of a host, one line each.
    static func routes6(_ ns: String) throws -> [String] {
        try sh("ip -n \(ns) -6 route show proto vxlan-agent").split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    @Test("sync: three dual-stack hosts, pods ping in both families; IPv6 tampering repaired; cleanup takes flannel-v6.1")
    func syncThreeHosts() throws {
        try requireKernel()
        let prefix = "vxa-ds\(getpid() % 100_000)-\(Self.counter.next())"
        let directory = "/run/\(prefix)"
        defer { _ = try? run("bash \(Self.cluster) down \(prefix)") }
        try sh("bash \(Self.cluster) up \(prefix) 3 1 --dual")
        let inventory = "\(directory)/inventory.json"
        try sh("bash \(Self.cluster) inventory \(prefix) --dual > \(inventory)")
        func agent(_ host: Int, _ arguments: String) throws -> Result {
            try run("ip netns exec \(prefix)-h\(host) \(agentBinary) \(arguments) --config \(inventory) --node node-\(host) "
                    + "--lock-file \(directory)/h\(host).lock")
        }
        for host in 1...3 {
            let sync = try agent(host, "sync")
            #expect(sync.status == 0, "\(sync.stdout)\(sync.stderr)")
            #expect(sync.stdout.contains("(2 peers; IPv6: 2 peers;"), "both planes, both peers: \(sync.stdout)")
        }
        let h1 = "\(prefix)-h1"
        #expect(try Self.routes6(h1) == [
            "fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 metric 1024 onlink pref medium",
            "fd00:10:244:3::/64 nhid 1985544195 via fd00:10:244:3:: dev flannel-v6.1 metric 1024 onlink pref medium",
        ])
        let device = try sh("ip -n \(h1) -d link show flannel-v6.1")
        #expect(device.contains("mtu 1430") && device.contains("vxlan id 1 local 2001:2::1 dev eth0") && device.contains("0a:01:00:00:00:01"),
                "flannel-v6.1: MTU 1500 - 70, local = the public IPv6, the derived MAC: \(device)")
        #expect(try sh("ip netns exec \(h1) sysctl -n net.ipv6.conf.flannel-v6/1.accept_ra").trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        #expect(try sh("ip -n \(h1) neigh show dev flannel-v6.1 nud permanent").contains("fd00:10:244:2:: lladdr 0a:01:00:00:00:02"))
        #expect(try sh("bridge -n \(h1) fdb show dev flannel-v6.1").contains("0a:01:00:00:00:03 dst 2001:2::3 self permanent"))
        // The IPv4 plane is what it is without dual stack.
        #expect(try sh("ip -n \(h1) route show proto vxlan-agent").contains("10.244.2.0/24 nhid 1985478658 via 10.244.2.0 dev flannel.1 onlink"))
        // The kernel's DAD for the /128 takes a moment: ping until the deadline.
        var ping6 = try run("bash \(Self.cluster) ping \(prefix) --v6")
        let deadline = Date().addingTimeInterval(15)
        while ping6.status != 0 && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
            ping6 = try run("bash \(Self.cluster) ping \(prefix) --v6")
        }
        #expect(ping6.status == 0, "pods ping over IPv6: \(ping6.stdout)\(ping6.stderr)")
        let ping4 = try run("bash \(Self.cluster) ping \(prefix)")
        #expect(ping4.status == 0, "pods ping over IPv4: \(ping4.stdout)\(ping4.stderr)")

        // Tampering with the IPv6 plane: diff names each entry, sync puts it back.
        try sh("ip -n \(h1) -6 route del fd00:10:244:2::/64")
        try sh("ip -n \(h1) -6 neigh del fd00:10:244:3:: dev flannel-v6.1")
        try sh("bridge -n \(h1) fdb del 0a:01:00:00:00:02 dev flannel-v6.1 dst 2001:2::2")
        try sh("ip -n \(h1) -6 route add fd00:10:244:99::/64 dev flannel-v6.1 proto vxlan-agent")
        let diff = try agent(1, "diff")
        #expect(diff.status == 2, "\(diff.stdout)\(diff.stderr)")
        for line in ["+ fdb 0a:01:00:00:00:02 dev flannel-v6.1 dst 2001:2::2",
                     "+ neigh fd00:10:244:3:: lladdr 0a:01:00:00:00:03 dev flannel-v6.1",
                     "+ route fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink metric 1024",
                     "- route fd00:10:244:99::/64 dev flannel-v6.1"] {
            #expect(diff.stdout.contains(line), "\(line) in \(diff.stdout)")
        }
        let json = try agent(1, "diff --output json")
        let plan = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json.stdout)")
        let changes = try #require(plan["changes"] as? [[String: Any]])
        #expect(changes.count == 4 && changes.allSatisfy { $0["family"] as? String == "ipv6" }, "\(changes)")
        #expect(changes.contains { $0["peer"] as? String == "node-2" && $0["kind"] as? String == "fdb" }, "\(changes)")
        let repair = try agent(1, "sync")
        #expect(repair.status == 0 && repair.stdout.contains("applied: 3 added, 0 changed, 1 removed"), "\(repair.stdout)\(repair.stderr)")
        #expect(try agent(1, "sync").stdout.hasPrefix("in sync: nothing to do (2 peers; IPv6: 2 peers"))
        #expect(try run("bash \(Self.cluster) ping \(prefix) --v6").status == 0)

        // cleanup: both devices and their routes go.
        let cleanup = try agent(1, "cleanup")
        #expect(cleanup.status == 0, "\(cleanup.stdout)\(cleanup.stderr)")
        #expect(try run("ip -n \(h1) link show flannel-v6.1").status != 0)
        #expect(try run("ip -n \(h1) link show flannel.1").status != 0)
        #expect(try Self.routes6(h1).isEmpty)

        // An IPv4-only inventory after a dual-stack one: the IPv6 device of ours goes.
        #expect(try agent(1, "sync").status == 0)
        try sh("bash \(Self.cluster) inventory \(prefix) > \(directory)/ipv4.json")
        let ipv4 = try run("ip netns exec \(h1) \(agentBinary) sync --verbose --config \(directory)/ipv4.json --node node-1 --lock-file \(directory)/h1.lock")
        #expect(ipv4.status == 0 && ipv4.stdout.contains("- link flannel-v6.1"), "\(ipv4.stdout)\(ipv4.stderr)")
        #expect(try run("ip -n \(h1) link show flannel-v6.1").status != 0)
        #expect(try Self.routes6(h1).isEmpty)
    }

    @Test("run: daemons against etcd in a dual-stack cluster: dual keys, both planes, pods ping in both; a bad IPv6 half is skipped; tampering repaired")
    func daemons() throws {
        try requireKernel()
        let network = #"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#
        let cluster = try DaemonCluster(hosts: 3, network: network, dual: true)
        defer { cluster.close() }
        try cluster.startAll(1...3)
        try cluster.waitUntil("each host programs the others' IPv6 subnets") {
            try (1...3).allSatisfy { try Self.routes6(cluster.ns($0)).count == 2 }
        }
        // flanneld's dual-stack leases: the key holds both subnets, the value PublicIPv6 and BackendV6Data.
        let leases = try cluster.leases()
        #expect(leases.count == 3)
        for (key, value) in leases {
            #expect(key.contains("&fd00:10:244:") && key.hasSuffix("-64"), "\(key)")
            #expect(value.contains(#""PublicIPv6":"2001:2::"#) && value.contains(#""BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:0"#), "\(value)")
        }
        // /metrics counts the IPv6 plane's changes under their own kinds.
        let metrics = try cluster.metrics(1)
        #expect((metrics["vxlan_agent_changes_applied_total", ["kind": "route6", "action": "add"]] ?? 0) >= 2, "\(metrics)")
        #expect(metrics["vxlan_agent_changes_applied_total", ["kind": "link6", "action": "add"]] == 1, "\(metrics)")
        let env = try String(contentsOfFile: "\(cluster.hostDirectory(1))/subnet.env", encoding: .utf8)
        #expect(env.contains("FLANNEL_IPV6_NETWORK=fd00:10:244::/56") && env.contains("FLANNEL_IPV6_SUBNET=fd00:10:244:")
                && env.contains("FLANNEL_MTU=1430"), "\(env)")

        // Pods from the CNI configuration the daemons wrote (two ranges): ping in both families.
        func pod(_ host: Int) throws -> (ipv4: String, ipv6: String) {
            _ = try cluster.addPod(host)
            let result = try String(contentsOfFile: "\(cluster.hostDirectory(host))/pod.result", encoding: .utf8)
            let v4 = try #require(result.firstMatch(of: /"address": *"([0-9.]+)\//), "\(result)")
            let v6 = try #require(result.firstMatch(of: /"address": *"([0-9a-f:]+)\//), "\(result)")
            return (String(v4.1), String(v6.1))
        }
        let a = try pod(1), b = try pod(2)
        try cluster.waitUntil("pod h1 pings pod h2 over IPv6") {
            try run("ip netns exec \(cluster.ns(1))-p1 ping -c 1 -W 1 \(b.ipv6)").status == 0
        }
        #expect(try run("ip netns exec \(cluster.ns(2))-p1 ping -c 2 -W 2 \(a.ipv6)").status == 0)
        #expect(try run("ip netns exec \(cluster.ns(1))-p1 ping -c 2 -W 2 \(b.ipv4)").status == 0)

        // A lease whose IPv6 half is broken (BackendV6Data without a VtepMAC): IPv4 programmed, IPv6 skipped, named.
        let bad = "10.244.200.0-24&fd00:10:244:c8::-64"
        _ = try cluster.etcdctl("put '\(DaemonCluster.leasePrefix)/subnets/\(bad)' "
            + #"'{"PublicIP":"198.18.0.99","PublicIPv6":"2001:2::63","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:33:44:55:66:77"},"BackendV6Data":{"VNI":1}}'"#)
        try cluster.waitUntil("the IPv4 half is programmed") { try cluster.routes(1).contains("10.244.200.0/24") }
        try cluster.waitUntil("the IPv6 half is named in the log") { cluster.log(1).contains("lease's IPv6 half skipped") && cluster.log(1).contains(bad) }
        #expect(try !Self.routes6(cluster.ns(1)).contains { $0.hasPrefix("fd00:10:244:c8::/64") })

        // Tampering with the IPv6 plane: the daemon puts it back.
        let victim = try #require(try Self.routes6(cluster.ns(1)).first?.split(separator: " ").first.map(String.init))
        try sh("ip -n \(cluster.ns(1)) -6 route del \(victim)")
        try cluster.waitUntil("the deleted IPv6 route is back") { try Self.routes6(cluster.ns(1)).contains { $0.hasPrefix(victim + " ") } }
        #expect(try run("ip netns exec \(cluster.ns(2))-p1 ping -c 2 -W 2 \(a.ipv6)").status == 0)
    }

    /// Full passes a daemon logged (`--log-level debug`: one "full pass starts" line each).
    static func fullPasses(_ log: String) -> Int { log.components(separatedBy: "msg=\"full pass starts\"").count - 1 }

    @Test("run: a lease whose IPv6 half changes and a deleted IPv6 route are applied by incremental passes, without a full pass")
    func incrementalIPv6() throws {
        try requireKernel()
        let network = #"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#
        let cluster = try DaemonCluster(hosts: 2, network: network, dual: true)
        defer { cluster.close() }
        // No resync during the test: any full pass is one the incremental path asked for.
        for host in 1...2 { try cluster.start(host, extra: #", "resyncInterval": 3600"#) }
        try cluster.waitUntil("each host programs the other in both planes") {
            try (1...2).allSatisfy { try Self.routes6(cluster.ns($0)).count == 1 && cluster.routes($0).count == 1 }
        }
        // The first passes settle (the devices' creation is followed by a full pass): wait until no full pass came for 2 s.
        var settled = (count: Self.fullPasses(cluster.log(1)), at: Date())
        try cluster.waitUntil("h1's full passes settle", seconds: 30) {
            let count = Self.fullPasses(cluster.log(1))
            if count != settled.count { settled = (count, Date()) }
            return Date().timeIntervalSince(settled.at) > 2
        }
        let before = try cluster.metrics(1)
        let fullPasses = Self.fullPasses(cluster.log(1))
        #expect(fullPasses >= 1)

        // A dual-stack lease from flanneld's layout, then its IPv6 half moves to another public IPv6 (same subnets, same MACs).
        let key = "\(DaemonCluster.leasePrefix)/subnets/10.244.77.0-24&fd00:10:244:4d::-64"
        func lease(_ publicIPv6: String) -> String {
            #"{"PublicIP":"198.18.0.77","PublicIPv6":""# + publicIPv6 + #"","BackendType":"vxlan","#
                + #""BackendData":{"VNI":1,"VtepMAC":"0e:01:00:00:00:4d"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:4d"}}"#
        }
        let h1 = cluster.ns(1)
        _ = try cluster.etcdctl("put '\(key)' '\(lease("2001:2::4d"))'")
        try cluster.waitUntil("the new lease's IPv6 route and FDB entry") {
            try Self.routes6(h1).contains { $0.hasPrefix("fd00:10:244:4d::/64 ") }
                && sh("bridge -n \(h1) fdb show dev flannel-v6.1").contains("0a:01:00:00:00:4d dst 2001:2::4d self permanent")
        }
        _ = try cluster.etcdctl("put '\(key)' '\(lease("2001:2::4e"))'")
        try cluster.waitUntil("the FDB entry follows the lease's new public IPv6") {
            try sh("bridge -n \(h1) fdb show dev flannel-v6.1").contains("0a:01:00:00:00:4d dst 2001:2::4e self permanent")
        }
        #expect(try !sh("bridge -n \(h1) fdb show dev flannel-v6.1").contains("dst 2001:2::4d"))

        // Someone deletes h2's IPv6 route on h1: the daemon puts it back.
        let victim = "fd00:10:244:" + (try #require(try Self.routes6(h1).first { !$0.hasPrefix("fd00:10:244:4d::") }?
            .split(separator: ":").dropFirst(3).first.map(String.init)))
        try sh("ip -n \(h1) -6 route del \(victim)::/64")
        try cluster.waitUntil("the deleted IPv6 route is back") { try Self.routes6(h1).contains { $0.hasPrefix(victim + "::/64 ") } }

        // All of it without a full pass: the debug log says so, and /metrics counts the IPv6 kinds.
        let log = cluster.log(1)
        #expect(Self.fullPasses(log) == fullPasses, "full passes after the settle: \(log.split(separator: "\n").filter { $0.contains("full pass") }.suffix(5))")
        let after = try cluster.metrics(1)
        func grew(_ name: String, _ labels: [String: String]) -> Double { (after[name, labels] ?? 0) - (before[name, labels] ?? 0) }
        #expect(grew("vxlan_agent_changes_applied_total", ["kind": "route6", "action": "add"]) == 2, "the new lease's and the repaired: \(after)")
        #expect(grew("vxlan_agent_changes_applied_total", ["kind": "fdb6", "action": "update"]) == 1, "\(after)")
        #expect(grew("vxlan_agent_changes_applied_total", ["kind": "route", "action": "add"]) == 1, "the new lease's IPv4 route: \(after)")
        #expect(grew("vxlan_agent_reconciles_total", ["trigger": "registry"]) >= 2 && grew("vxlan_agent_reconciles_total", ["trigger": "kernel"]) >= 1,
                "\(after)")
    }
}
