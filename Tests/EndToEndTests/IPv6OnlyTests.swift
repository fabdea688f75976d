import Foundation
import Testing
import TestSupport

/// IPv6-only clusters (`EnableIPv4: false`) on a real kernel: hosts whose
/// underlay has no IPv4 address at all and pods with IPv6 alone
/// (Tests/cluster/cluster.sh --v6only). The agent keeps `flannel-v6.<VNI>` and
/// nothing of IPv4: `sync` from a static inventory, and daemons against a real
/// etcd reached over IPv6, with flannel's IPv6-only lease keys
/// (`0.0.0.0-0&fd00:10:244:X::-64`).
@Suite("IPv6-only: flannel-v6.1 alone, no IPv4 anywhere", kernelTests, .blocking, .serialized)
struct IPv6OnlyTests {
    static let cluster = "\(packageRoot)/Tests/cluster/cluster.sh"
    static let counter = Counter()

    final class Counter: @unchecked Sendable {
        // @unchecked: the suite is serialized.
        var value = 0
        func next() -> Int { value += 1; return value }
    }

    static let network = #"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#

    /// Pings (the IPv6 matrix) until it passes or 15 s went by: the kernel's
    /// DAD for a fresh /128 takes a moment.
    static func pingV6(_ prefix: String) throws -> Result {
        var ping = try run("bash \(cluster) ping \(prefix) --v6")
        let deadline = Date().addingTimeInterval(15)
        while ping.status != 0 && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
            ping = try run("bash \(cluster) ping \(prefix) --v6")
        }
        return ping
    }

    @Test("sync (vxlan): three IPv6-only hosts, pods ping; no IPv4 of ours; a leftover flannel.1 removed; tampering repaired; cleanup")
    func syncVXLAN() throws {
        try requireKernel()
        let prefix = "vxa-v6o\(getpid() % 100_000)-\(Self.counter.next())"
        let directory = "/run/\(prefix)"
        defer { _ = try? run("bash \(Self.cluster) down \(prefix)") }
        try sh("bash \(Self.cluster) up \(prefix) 3 1 --v6only")
        let inventory = "\(directory)/inventory.json"
        try sh("bash \(Self.cluster) inventory \(prefix) --v6only > \(inventory)")
        func agent(_ host: Int, _ arguments: String) throws -> Result {
            try run("ip netns exec \(prefix)-h\(host) \(agentBinary) \(arguments) --config \(inventory) --node node-\(host) "
                    + "--lock-file \(directory)/h\(host).lock")
        }
        let h1 = "\(prefix)-h1"
        // A node that ran IPv4 before: its flannel.1 is not wanted any more.
        try sh("ip -n \(h1) link add flannel.1 type vxlan id 1 dstport 8472 nolearning")
        for host in 1...3 {
            let sync = try agent(host, "sync --verbose")
            #expect(sync.status == 0, "\(sync.stdout)\(sync.stderr)")
            #expect(sync.stdout.contains("(2 peers, IPv6 only"), "the IPv6 plane's peers: \(sync.stdout)")
        }
        #expect(try run("ip -n \(h1) link show flannel.1").status != 0, "the leftover flannel.1 is removed")
        #expect(try DualStackTests.routes6(h1) == [
            "fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 metric 1024 onlink pref medium",
            "fd00:10:244:3::/64 nhid 1985544195 via fd00:10:244:3:: dev flannel-v6.1 metric 1024 onlink pref medium",
        ])
        #expect(try sh("ip -n \(h1) -4 route show proto vxlan-agent").isEmpty, "no IPv4 route of ours")
        #expect(try sh("ip -n \(h1) -4 addr show").contains("inet 127.0.0.1") && !(try sh("ip -n \(h1) -4 addr show dev eth0")).contains("inet "),
                "the underlay has no IPv4 address")
        let device = try sh("ip -n \(h1) -d link show flannel-v6.1")
        #expect(device.contains("mtu 1430") && device.contains("vxlan id 1 local 2001:2::1 dev eth0"), "\(device)")
        let ping = try Self.pingV6(prefix)
        #expect(ping.status == 0, "pods ping over IPv6: \(ping.stdout)\(ping.stderr)")

        // Tampering: diff names it, sync puts it back.
        try sh("ip -n \(h1) -6 route del fd00:10:244:2::/64")
        try sh("bridge -n \(h1) fdb del 0a:01:00:00:00:03 dev flannel-v6.1 dst 2001:2::3")
        let diff = try agent(1, "diff")
        #expect(diff.status == 2, "\(diff.stdout)\(diff.stderr)")
        #expect(diff.stdout.contains("+ route fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink metric 1024"),
                "\(diff.stdout)")
        #expect(diff.stdout.contains("+ fdb 0a:01:00:00:00:03 dev flannel-v6.1 dst 2001:2::3"), "\(diff.stdout)")
        let repair = try agent(1, "sync")
        #expect(repair.status == 0 && repair.stdout.contains("applied: 2 added, 0 changed, 0 removed"), "\(repair.stdout)\(repair.stderr)")
        #expect(try agent(1, "sync").stdout.hasPrefix("in sync: nothing to do (2 peers, IPv6 only"))

        let cleanup = try agent(1, "cleanup")
        #expect(cleanup.status == 0, "\(cleanup.stdout)\(cleanup.stderr)")
        #expect(try run("ip -n \(h1) link show flannel-v6.1").status != 0)
        #expect(try DualStackTests.routes6(h1).isEmpty)
    }

    @Test("sync (host-gw): IPv6-only hosts on one segment route each other's pods directly")
    func syncHostGW() throws {
        try requireKernel()
        let prefix = "vxa-v6o\(getpid() % 100_000)-\(Self.counter.next())"
        let directory = "/run/\(prefix)"
        defer { _ = try? run("bash \(Self.cluster) down \(prefix)") }
        try sh("bash \(Self.cluster) up \(prefix) 2 1 --v6only")
        let inventory = "\(directory)/inventory.json"
        try sh("bash \(Self.cluster) inventory \(prefix) --v6only --backend host-gw > \(inventory)")
        for host in 1...2 {
            let sync = try run("ip netns exec \(prefix)-h\(host) \(agentBinary) sync --config \(inventory) --node node-\(host) "
                               + "--lock-file \(directory)/h\(host).lock")
            #expect(sync.status == 0 && sync.stdout.contains("(1 peer, IPv6 only"), "\(sync.stdout)\(sync.stderr)")
        }
        #expect(try DualStackTests.routes6("\(prefix)-h1") == ["fd00:10:244:2::/64 nhid 1985544194 via 2001:2::2 dev eth0 metric 1024 pref medium"])
        #expect(try run("ip -n \(prefix)-h1 link show flannel-v6.1").status != 0, "host-gw keeps no device")
        let ping = try Self.pingV6(prefix)
        #expect(ping.status == 0, "pods ping over IPv6: \(ping.stdout)\(ping.stderr)")
    }

    @Test("run: daemons against etcd over IPv6: flannel's IPv6-only keys, subnet.env and one CNI range, pods ping, restart reuses, tampering repaired")
    func daemons() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 3, network: Self.network, v6only: true)
        defer { cluster.close() }
        for host in 1...3 { try cluster.start(host) }
        try cluster.waitUntil("each host programs the others' IPv6 subnets", seconds: 30) {
            try (1...3).allSatisfy { try DualStackTests.routes6(cluster.ns($0)).count == 2 }
        }
        // flanneld's IPv6-only leases: MakeSubnetKey with the empty IPv4 subnet.
        let leases = try cluster.leases()
        #expect(leases.count == 3, "\(leases)")
        for (key, value) in leases {
            #expect(key.hasPrefix("\(DaemonCluster.leasePrefix)/subnets/0.0.0.0-0&fd00:10:244:") && key.hasSuffix("::-64"), "\(key)")
            #expect(value.hasPrefix(#"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::"#)
                    && value.contains(#""BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:0"#)
                    && !value.contains("\"BackendData\""), "\(value)")
        }
        #expect(Set(leases.keys).count == 3)
        // /metrics counts the IPv6 plane's peers (there is no other plane).
        try cluster.waitUntil("the peers gauge says 2") { try cluster.metrics(1)["vxlan_agent_peers"] == 2 }

        // subnet.env: flanneld's IPv6-only lines; the CNI configuration: one range, IPv6.
        try cluster.waitUntil("subnet.env written") { FileManager.default.fileExists(atPath: "\(cluster.hostDirectory(1))/subnet.env") }
        let env = try String(contentsOfFile: "\(cluster.hostDirectory(1))/subnet.env", encoding: .utf8)
        let subnet = try #require(env.firstMatch(of: /FLANNEL_IPV6_SUBNET=fd00:10:244:([0-9a-f]+)::1\/64/), "\(env)")
        #expect(env == "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:\(subnet.1)::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n")
        let cni = try String(contentsOfFile: "\(cluster.hostDirectory(1))/cni.conflist", encoding: .utf8)
        #expect(cni.contains("fd00:10:244:\(subnet.1)::/64") && !cni.contains("10.244.0.0"), "\(cni)")

        let pods = try (1...3).map(cluster.addPod)
        for (from, _) in pods.enumerated() {
            for (to, target) in pods.enumerated() where from != to {
                try cluster.waitUntil("pod on h\(from + 1) pings \(target) on h\(to + 1)") {
                    try run("ip netns exec \(cluster.ns(from + 1))-p1 ping -c 1 -W 1 \(target)").status == 0
                }
            }
        }
        #expect(try sh("ip -n \(cluster.ns(1)) -4 route show proto vxlan-agent").isEmpty)
        #expect(try run("ip -n \(cluster.ns(1)) link show flannel.1").status != 0)

        // Tampering with the IPv6 plane: the daemon puts it back.
        let victim = try #require(try DualStackTests.routes6(cluster.ns(1)).first?.split(separator: " ").first.map(String.init))
        try sh("ip -n \(cluster.ns(1)) -6 route del \(victim)")
        try cluster.waitUntil("the deleted IPv6 route is back") { try DualStackTests.routes6(cluster.ns(1)).contains { $0.hasPrefix(victim + " ") } }

        // A restart finds its own lease by its public IPv6 and keeps it.
        let before = try cluster.leases()
        #expect(cluster.stop(2) == 0)
        try cluster.start(2)
        try cluster.waitUntil("h2 programs its peers again") { try DualStackTests.routes6(cluster.ns(2)).count == 2 }
        #expect(Set(try cluster.leases().keys) == Set(before.keys), "the same three keys after the restart")
    }
}
