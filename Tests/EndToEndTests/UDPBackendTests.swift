import Foundation
import Testing
import TestSupport

/// flannel's udp backend end to end: daemons against etcd, the data path in
/// user space between real CNI pods.
@Suite("the udp backend: flannel0 and the data path in user space", kernelTests, .blocking, .serialized)
struct UDPBackendTests {
    static let network = #"{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}"#

    @Test("three daemons: flanneld's udp leases, flannel0 and its route, pods ping and move bulk TCP, counted in /metrics; a peer that leaves stops at once")
    func threeDaemons() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 3, network: Self.network)
        defer { cluster.close() }
        for host in 1...3 { try cluster.start(host) }
        try cluster.waitUntil("every daemon's data path runs") {
            (1...3).allSatisfy { cluster.log($0).contains("udp data path started") }
                && (1...3).allSatisfy { FileManager.default.fileExists(atPath: "\(cluster.hostDirectory($0))/cni.conflist") }
        }
        // flanneld's udp lease: no BackendType, no BackendData.
        let leases = try cluster.leases()
        for host in 1...3 {
            let key = "\(DaemonCluster.leasePrefix)/subnets/" + (try cluster.subnet(host)).replacingOccurrences(of: "/", with: "-")
            #expect(leases[key] == #"{"PublicIP":"198.18.0.\#(host)","PublicIPv6":null}"#, "\(leases)")
        }
        let subnet1 = try cluster.subnet(1)
        let env = try String(contentsOfFile: "\(cluster.hostDirectory(1))/subnet.env", encoding: .utf8)
        #expect(env.contains("FLANNEL_MTU=1472\n"), "underlay 1500 - 28: \(env)")
        let link = try sh("ip -n \(cluster.ns(1)) -d link show flannel0")
        #expect(link.contains("mtu 1472") && link.contains("tun type tun pi off vnet_hdr on multi_queue"), "\(link)")
        #expect(try sh("ip -n \(cluster.ns(1)) route show proto vxlan-agent").trimmingCharacters(in: .whitespacesAndNewlines)
                == "10.244.0.0/16 dev flannel0")
        #expect(try sh("ip -n \(cluster.ns(1)) addr show flannel0").contains("inet \(subnet1.replacingOccurrences(of: "/24", with: "/32"))"))

        // Pods on each host reach each other through the user-space tunnel.
        let pods = try (1...3).map(cluster.addPod)
        for (from, source) in pods.enumerated() {
            for (to, target) in pods.enumerated() where from != to {
                let ping = try run("ip netns exec \(cluster.ns(from + 1))-p1 ping -c 1 -W 2 \(target)")
                #expect(ping.status == 0, "pod \(source) on h\(from + 1) -> pod \(target) on h\(to + 1): \(ping.stdout)")
            }
        }
        // iperf3 completes (throughput is the bench's business), with its bytes counted by both data paths.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/iperf3") {
            try sh("ip netns exec \(cluster.ns(2))-p1 iperf3 -s -1 -D; sleep 0.5")
            let iperf = try run("ip netns exec \(cluster.ns(1))-p1 iperf3 -c \(pods[1]) -t 1 -J")
            #expect(iperf.status == 0, "\(iperf.stderr)")
            let sent = try cluster.metrics(1)["vxlan_agent_tunnel_bytes_total", ["direction": "tx"]] ?? 0
            let received = try cluster.metrics(2)["vxlan_agent_tunnel_bytes_total", ["direction": "rx"]] ?? 0
            #expect(sent > 1_000_000 && received > 1_000_000, "tx \(sent), rx \(received)")
        }

        // After traffic the kernel holds a NOARP neighbor of its own on flannel0: not the agent's, not a change.
        let diff = try run("ip netns exec \(cluster.ns(1)) \(agentBinary) diff --config \(cluster.configPath(1))")
        #expect(diff.status == 0 && diff.stdout.hasPrefix("in sync"), "\(diff.stdout)\(diff.stderr)")

        // A datagram from an address that holds no lease is dropped and counted, not delivered.
        try sh("ip -n \(cluster.ns(3)) addr add 198.18.0.66/24 dev eth0")
        try sh("""
        ip netns exec \(cluster.ns(3)) python3 -c '
        import socket, struct
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0, socket.inet_aton("10.244.77.5"), socket.inet_aton("\(pods[0])"))
        s = sum(struct.unpack("!10H", h)); s = (s >> 16) + (s & 0xffff); s += s >> 16
        pkt = h[:10] + struct.pack("!H", ~s & 0xffff) + h[12:] + b"x" * 8
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("198.18.0.66", 0)); u.sendto(pkt, ("198.18.0.1", 8285))'
        """)
        try cluster.waitUntil("h1 counts the stranger's datagram") {
            try cluster.metrics(1)["vxlan_agent_tunnel_drops_total", ["reason": "unknown_sender"]] == 1
        }

        // h3 leaves (its daemon stopped, its lease deleted): h1 stops sending to it and accepting from it at once.
        let subnet3 = try cluster.subnet(3)
        #expect(cluster.stop(3) == 0)
        try cluster.etcdctl("del \(DaemonCluster.leasePrefix)/subnets/\(subnet3.replacingOccurrences(of: "/", with: "-"))")
        try cluster.waitUntil("h1 no longer reaches h3's pod") {
            try run("ip netns exec \(cluster.ns(1))-p1 ping -c 1 -W 1 \(pods[2])").status != 0
        }
        #expect(try run("ip netns exec \(cluster.ns(1))-p1 ping -c 1 -W 2 \(pods[1])").status == 0, "h2 is still reached")
    }

    @Test("interop on the wire: a host running vxlan-agent's udp and one running a tunnel built as flanneld's udp proxy (one IP packet per datagram, port 8285) exchange pod traffic both ways")
    func flanneldWireFormat() throws {
        try requireKernel()
        let prefix = "vxa-udpx\(getpid() % 100_000)"
        let cluster = "\(packageRoot)/Tests/cluster/cluster.sh"
        let dir = "/run/\(prefix)"
        var daemon: pid_t?, proxy: pid_t?
        defer {
            for pid in [daemon, proxy].compactMap({ $0 }) { kill(pid, SIGTERM); _ = waitForExit(pid) }
            _ = try? run("bash \(cluster) down \(prefix)")
        }
        try sh("bash \(cluster) up \(prefix) 2 1")
        // Host 2: the flanneld-design proxy (Benchmarks/flannel_proxy.c), its flannel0 set up as flanneld sets it up.
        try sh("cc -O2 -o \(dir)/flannel_proxy \(packageRoot)/Benchmarks/flannel_proxy.c")
        proxy = try spawn(["ip", "netns", "exec", "\(prefix)-h2", "\(dir)/flannel_proxy", "flannel0", "198.18.0.2", "8285",
                           "10.244.1.0/24", "198.18.0.1"], stdout: "\(dir)/proxy.log")
        let deadline = Date().addingTimeInterval(10)
        while (try? run("ip -n \(prefix)-h2 link show flannel0"))?.status != 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        try sh("""
        ip -n \(prefix)-h2 addr add 10.244.2.0/32 dev flannel0
        ip -n \(prefix)-h2 link set flannel0 mtu 1472 up
        ip -n \(prefix)-h2 route add 10.244.0.0/16 dev flannel0
        """)
        // Host 1: vxlan-agent run, udp, from a static inventory of both hosts.
        var inventory = try sh("bash \(cluster) inventory \(prefix) --backend udp").trimmingCharacters(in: .whitespacesAndNewlines)
        inventory.removeLast()
        inventory += #", "subnetFile": "\#(dir)/h1-subnet.env", "ipMasq": false, "metricsAddress": "", "cniConfFile": ""}"#
        try inventory.write(toFile: "\(dir)/h1.json", atomically: true, encoding: .utf8)
        daemon = try spawn(["ip", "netns", "exec", "\(prefix)-h1", agentBinary, "run", "--config", "\(dir)/h1.json", "--node", "node-1",
                            "--lock-file", "\(dir)/h1.lock"], stdout: "\(dir)/h1.log")
        while !((try? String(contentsOfFile: "\(dir)/h1.log", encoding: .utf8)) ?? "").contains("udp data path started"),
              Date() < deadline.addingTimeInterval(10) {
            Thread.sleep(forTimeInterval: 0.05)
        }
        let pods = try sh("bash \(cluster) pods \(prefix)").split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        let pod1 = try #require(pods.first { $0[0] == "1" }), pod2 = try #require(pods.first { $0[0] == "2" })
        let there = try run("ip netns exec \(pod1[2]) ping -c 2 -W 2 \(pod2[3])")
        #expect(there.status == 0, "ours -> flanneld's design: \(there.stdout)")
        let back = try run("ip netns exec \(pod2[2]) ping -c 2 -W 2 \(pod1[3])")
        #expect(back.status == 0, "flanneld's design -> ours: \(back.stdout)")
        // Bulk TCP both ways: our TSO segments arrive as plain datagrams there, and its datagrams are merged here.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/iperf3") {
            for reverse in ["", "-R"] {
                try sh("ip netns exec \(pod2[2]) iperf3 -s -1 -D; sleep 0.5")
                let iperf = try run("ip netns exec \(pod1[2]) iperf3 -c \(pod2[3]) -t 1 \(reverse)")
                #expect(iperf.status == 0, "iperf3 \(reverse): \(iperf.stdout)\(iperf.stderr)")
            }
        }
    }

    @Test("flannel0 and its route are the agent's: a deleted route, a changed MTU, the device deleted outright: repaired, the data path attached again, pods ping")
    func repair() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 2, network: Self.network)
        defer { cluster.close() }
        for host in 1...2 { try cluster.start(host) }
        // The data path starts in the first full pass, just before subnet.env and the CNI configuration are written.
        try cluster.waitUntil("both data paths run and their files are written") {
            (1...2).allSatisfy { cluster.log($0).contains("udp data path started")
                && FileManager.default.fileExists(atPath: "\(cluster.hostDirectory($0))/cni.conflist") }
        }
        let pods = try (1...2).map(cluster.addPod)
        func pings() throws -> Bool { try run("ip netns exec \(cluster.ns(1))-p1 ping -c 1 -W 1 \(pods[1])").status == 0 }
        try cluster.waitUntil("pods ping") { try pings() }
        let ns = cluster.ns(1)
        try sh("ip -n \(ns) route del 10.244.0.0/16 dev flannel0")
        try cluster.waitUntil("the route is back") { try sh("ip -n \(ns) route show proto vxlan-agent").contains("10.244.0.0/16 dev flannel0") }
        try sh("ip -n \(ns) link set flannel0 mtu 1300")
        try cluster.waitUntil("the MTU is back") { try sh("ip -n \(ns) link show flannel0").contains("mtu 1472") }
        try sh("ip -n \(ns) link del flannel0")
        try cluster.waitUntil("flannel0 is made again and its queues attached") {
            let link = try sh("ip -n \(ns) -d link show flannel0 2>/dev/null || true")
            return link.contains("numqueues") && !link.contains("numqueues 0 ") && cluster.log(1).components(separatedBy: "udp data path started").count == 3
        }
        try cluster.waitUntil("pods ping again") { try pings() }
        #expect(try sh("ip -n \(ns) -d link show flannel0").contains("vnet_hdr on multi_queue"))
    }
}
