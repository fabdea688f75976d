import Foundation
import Model
import Synchronization
import Testing
import TestSupport

/// setns(fd, CLONE_NEWNET), looked up (Glibc exports it only under _GNU_SOURCE).
private func enterNamespace(_ path: String) -> Bool {
    typealias SetNS = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { return false }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return unsafeBitCast(symbol, to: SetNS.self)(fd, 0x4000_0000) == 0
}

/// Runs `body` on a thread of its own inside the network namespace `name`
/// (a socket made there stays there: the fake API server listens in it).
private func inNamespace<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            guard enterNamespace("/var/run/netns/\(name)") else {
                continuation.resume(throwing: CommandFailure(command: "setns \(name)", status: errno, output: String(cString: strerror(errno))))
                return
            }
            continuation.resume(with: Swift.Result { try body() })
        }
        thread.start()
    }
}

/// Three hosts of a cluster.sh cluster (dual stack with `dual`, IPv6 alone with
/// `v6only`), the fake API server listening in the underlay namespace on
/// 198.18.0.254 (IPv6-only: 2001:2::fe), a kubeconfig for it, and `vxlan-agent
/// run` on each host with the kubernetes registry.
final class KubeNamespaceCluster {
    static let counter = Mutex(0)
    static let script = "\(packageRoot)/Tests/cluster/cluster.sh"

    let prefix: String
    let directory: String
    let fake: FakeKubeAPI
    var daemons: [pid_t] = []

    init(dual: Bool, v6only: Bool = false) async throws {
        let n = Self.counter.withLock { $0 += 1; return $0 }
        prefix = "vxa-kc\(getpid() % 100_000)-\(n)"
        directory = "/run/\(prefix)"
        do {
            try sh("bash \(Self.script) up \(prefix) 3 1\(v6only ? " --v6only" : dual ? " --dual" : "")")
            let host: String
            if v6only {
                try sh("ip netns exec \(prefix)-ul sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.br0.disable_ipv6=0")
                try sh("ip -n \(prefix)-ul addr add 2001:2::fe/64 dev br0 nodad")
                host = "2001:2::fe"
            } else {
                try sh("ip -n \(prefix)-ul addr add 198.18.0.254/24 dev br0")
                host = "198.18.0.254"
            }
            // The fake's socket is made inside the underlay namespace, on a thread that entered it.
            fake = try await inNamespace("\(prefix)-ul") { try FakeKubeAPI(host: host) }
        } catch {
            _ = try? run("bash \(Self.script) down \(prefix)")
            throw error
        }
    }

    var kubeconfig: String { "\(directory)/kubeconfig" }

    /// Writes the kubeconfig and net-conf.json, and starts an agent on every host
    /// (no publicIP: the Node's InternalIP, as in a DaemonSet sharing one file).
    func startAgents(netConf: String) throws {
        try """
        apiVersion: v1
        kind: Config
        clusters:
        - name: fake
          cluster:
            server: \(fake.url)
        users:
        - name: flannel
          user:
            token: \(fake.token)
        contexts:
        - name: fake
          context: {cluster: fake, user: flannel}
        current-context: fake
        """.write(toFile: kubeconfig, atomically: true, encoding: .utf8)
        try netConf.write(toFile: "\(directory)/net-conf.json", atomically: true, encoding: .utf8)
        for host in 1...3 {
            let hostDirectory = "\(directory)/h\(host)"
            try FileManager.default.createDirectory(atPath: hostDirectory, withIntermediateDirectories: true)
            try """
            {"node": "h\(host)", "kubernetes": {"kubeconfig": "\(kubeconfig)", "netConfPath": "\(directory)/net-conf.json"},
             "subnetFile": "\(hostDirectory)/subnet.env", "cniConfFile": "", "metricsAddress": ""}
            """.write(toFile: "\(hostDirectory).json", atomically: true, encoding: .utf8)
            daemons.append(try spawn(["ip", "netns", "exec", "\(prefix)-h\(host)", agentBinary, "run", "--config", "\(hostDirectory).json",
                                      "--lock-file", "\(hostDirectory)/sync.lock", "--log-level", "debug"],
                                     stdout: "\(hostDirectory).log"))
        }
    }

    func logs() -> String {
        (1...3).map { "h\($0):\n" + ((try? String(contentsOfFile: "\(directory)/h\($0).log", encoding: .utf8)) ?? "") }.joined(separator: "\n")
    }

    /// `cluster.sh ping` (`--v6` with `family`), retried until the agents have programmed their peers.
    func ping(_ family: String = "") async throws -> Result {
        var ping = try run("bash \(Self.script) ping \(prefix)\(family)")
        let deadline = Date().addingTimeInterval(30)
        while ping.status != 0 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(500))
            ping = try run("bash \(Self.script) ping \(prefix)\(family)")
        }
        return ping
    }

    /// For each k, runs `put(k)` and times it to the route for `subnet(k)` in h1's
    /// kernel, by the kernel's own timestamp (`ip -ts monitor route`); milliseconds, sorted.
    func routeLatencies(_ ks: Range<Int>, ipv6: Bool = false, put: (Int) -> Void, subnet: (Int) -> String) async throws -> [Double] {
        let monitorLog = "\(directory)/h1-monitor\(ipv6 ? "6" : "").log"
        let monitor = try spawn(["ip", "-n", "\(prefix)-h1"] + (ipv6 ? ["-6"] : []) + ["-ts", "monitor", "route"], stdout: monitorLog)
        defer { kill(monitor, SIGTERM); _ = waitForExit(monitor) }
        // The monitor must have subscribed before the first put, or a route added
        // meanwhile is never in its log (a CI run under load waited out 30 s so):
        // a sentinel route in a spare table of h1 must appear in the log first.
        let sentinel = ipv6 ? "2001:2:ffff::fe/128" : "198.19.255.254/32"
        try await eventually("the route monitor in h1 sees a sentinel route", seconds: 30) {
            _ = try run("ip -n \(prefix)-h1 route add blackhole \(sentinel) table 252")
            let seen = ((try? String(contentsOfFile: monitorLog, encoding: .utf8)) ?? "").contains(String(sentinel.prefix { $0 != "/" }))
            _ = try run("ip -n \(prefix)-h1 route del blackhole \(sentinel) table 252")
            return seen
        }
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"
        formatter.timeZone = .current
        var latencies: [Double] = []
        for k in ks {
            let prefix = subnet(k)
            let started = Date()
            put(k)
            var line: Substring?
            do {
                try await eventually("\(prefix) reaches h1", seconds: 30) {
                    line = (try? String(contentsOfFile: monitorLog, encoding: .utf8))?.split(separator: "\n")
                        .first { $0.contains(" \(prefix) ") || $0.contains("]\(prefix) ") || $0.contains("] \(prefix)") }
                    return line != nil
                }
            } catch {
                let routes = (try? sh("ip -n \(self.prefix)-h1 \(ipv6 ? "-6 " : "")route show")) ?? ""
                Issue.record("h1's routes:\n\(routes)\n\(logs())")
                throw error
            }
            if let line, line.hasPrefix("["), let end = line.firstIndex(of: "]"),
               let stamp = formatter.date(from: String(line[line.index(after: line.startIndex)..<end])) {
                latencies.append(stamp.timeIntervalSince(started) * 1000)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return latencies.sorted()
    }

    func close() async {
        for pid in daemons { kill(pid, SIGTERM); _ = waitForExit(pid) }
        daemons = []
        await fake.shutdown()
        _ = try? run("bash \(Self.script) down \(prefix)")
    }
}

/// Three hosts of a cluster.sh cluster, each running `vxlan-agent run` with the
/// kubernetes registry against the fake API server, which listens in the
/// underlay namespace on 198.18.0.254: the agents annotate their Nodes, read
/// each other's, and the pods ping across every backend.
@Suite("vxlan-agent run against the fake Kubernetes API, in a cluster of namespaces", kernelTests, .blocking, .serialized)
struct KubeClusterTests {
    @Test(arguments: ["vxlan", "host-gw", "udp"])
    func podsPing(backend: String) async throws {
        try requireKernel()
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge"), "containernetworking-plugins is required")
        let kube = try await KubeNamespaceCluster(dual: false)
        for host in 1...3 {
            kube.fake.put(nodeJSON("h\(host)", podCIDR: "10.244.\(host).0/24", annotations: [:], internalIP: "198.18.0.\(host)"))
        }
        let backendJSON = backend == "udp" ? #"{"Type": "udp", "Port": 8285}"# : backend == "vxlan" ? #"{"Type": "vxlan", "VNI": 1, "Port": 8472}"# : #"{"Type": "host-gw"}"#
        do {
            try kube.startAgents(netConf: #"{"Network": "10.244.0.0/16", "Backend": \#(backendJSON)}"#)
            try await podsPing(kube, backend: backend)
        } catch {
            await kube.close()
            throw error
        }
        await kube.close()
    }

    func podsPing(_ kube: KubeNamespaceCluster, backend: String) async throws {
        let (fake, prefix, directory, cluster) = (kube.fake, kube.prefix, kube.directory, KubeNamespaceCluster.script)
        let logs = kube.logs
        // Each agent annotated its own Node as flanneld does.
        try await eventually("every Node annotated", seconds: 30) {
            (1...3).allSatisfy { fake.node("h\($0)").map(annotationsOf)?[flannel + "kube-subnet-manager"] == "true" }
        }
        for host in 1...3 {
            let annotations = annotationsOf(fake.node("h\(host)")!)
            #expect(annotations[flannel + "public-ip"] == "198.18.0.\(host)")
            #expect(annotations[flannel + "backend-type"] == (backend == "udp" ? "" : backend))
        }
        try await eventually("NetworkUnavailable False on every Node", seconds: 30) {
            (1...3).allSatisfy { host in
                conditionsOf(fake.node("h\(host)")).contains { $0["type"] as? String == "NetworkUnavailable" && $0["status"] as? String == "False" }
            }
        }
        // Pods ping (retried until the agents have programmed their peers).
        let ping = try await kube.ping()
        #expect(ping.status == 0, "\(ping.stdout)\(ping.stderr)\n\(logs())")
        // `diff` reads the Nodes once (no watch, no patch) and finds h1 in sync with them.
        let patches = fake.requests.filter { $0.hasPrefix("PATCH") }.count
        let diff = try run("ip netns exec \(prefix)-h1 \(agentBinary) diff --config \(directory)/h1.json --lock-file \(directory)/h1/diff.lock")
        #expect(diff.status == 0 && diff.stdout.hasPrefix("in sync"), "\(diff.stdout)\(diff.stderr)")
        #expect(fake.requests.filter { $0.hasPrefix("PATCH") }.count == patches)
        if backend != "udp" {
            // Nodes added one at a time: each reaches h1's routes. The time from the fake's
            // update to the route in `ip -ts monitor route` is printed, not asserted. (udp has
            // one route for the network: its peers live in the data path.)
            let latencies = try await kube.routeLatencies(10..<30,
                                                          put: { k in fake.put(annotated("h\(k)", ip: "198.18.0.\(k)", subnet: "10.244.\(k).0/24", backend: backend)) },
                                                          subnet: { "10.244.\($0).0/24" })
            #expect(latencies.count == 20)
            if !latencies.isEmpty {
                print("kube \(backend): a Node added to its route in a peer's kernel (ip -ts monitor): "
                      + String(format: "p50 %.1f ms, max %.1f ms over %d", latencies[latencies.count / 2], latencies.last!, latencies.count))
            }
        }
        // A Node deleted: h1 stops reaching its pod (its agent still runs), h2's is still reached.
        let pods = try sh("bash \(cluster) pods \(prefix)").split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        let pod3 = try #require(pods.first { $0.first == "3" }?.last), pod2 = try #require(pods.first { $0.first == "2" }?.last)
        fake.delete("h3")
        try await eventually("h1 no longer reaches h3's pod", seconds: 30) {
            try run("ip netns exec \(prefix)-h1-p1 ping -c 1 -W 1 \(pod3)").status != 0
        }
        #expect(try run("ip netns exec \(prefix)-h1-p1 ping -c 1 -W 2 \(pod2)").status == 0, "h2 is still reached")
        if backend != "udp" { #expect(!(try sh("ip -n \(prefix)-h1 route show proto vxlan-agent").contains("10.244.3.0/24"))) }
    }

    /// Dual stack from Node objects: three dual-stack hosts (`cluster.sh up --dual`),
    /// Nodes with both podCIDRs and both InternalIPs (no publicIP or publicIPv6 in
    /// the file), EnableIPv6 in net-conf.json: each agent publishes public-ipv6 and
    /// backend-v6-data, and pods ping each other over IPv4 and over IPv6.
    @Test(arguments: ["vxlan", "host-gw"])
    func podsPingInDualStack(backend: String) async throws {
        try requireKernel()
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge"), "containernetworking-plugins is required")
        let kube = try await KubeNamespaceCluster(dual: true)
        do {
            try await podsPingInDualStack(kube, backend: backend)
        } catch {
            await kube.close()
            throw error
        }
        await kube.close()
    }

    func podsPingInDualStack(_ kube: KubeNamespaceCluster, backend: String) async throws {
        let (fake, prefix, directory) = (kube.fake, kube.prefix, kube.directory)
        let logs = kube.logs
        for host in 1...3 {
            var node = nodeJSON("h\(host)", podCIDR: "10.244.\(host).0/24", annotations: [:])
            node["spec"] = ["podCIDR": "10.244.\(host).0/24", "podCIDRs": ["10.244.\(host).0/24", "fd00:10:244:\(host)::/64"]]
            node["status"] = ["addresses": [["type": "InternalIP", "address": "198.18.0.\(host)"],
                                            ["type": "InternalIP", "address": "2001:2::\(host)"]]]
            fake.put(node)
        }
        let backendJSON = backend == "vxlan" ? #"{"Type": "vxlan", "VNI": 1, "Port": 8472}"# : #"{"Type": "host-gw"}"#
        try kube.startAgents(netConf: #"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": \#(backendJSON)}"#)
        do {
            try await eventually("every Node annotated for both families", seconds: 30) {
                (1...3).allSatisfy { fake.node("h\($0)").map(annotationsOf)?[flannel + "public-ipv6"] != nil }
            }
        } catch {
            Issue.record("the agents' logs:\n\(logs())")
            throw error
        }
        for host in 1...3 {
            let annotations = annotationsOf(fake.node("h\(host)")!)
            #expect(annotations[flannel + "public-ip"] == "198.18.0.\(host)")
            #expect(annotations[flannel + "public-ipv6"] == "2001:2::\(host)", "the Node's IPv6 InternalIP")
            #expect(annotations[flannel + "backend-v6-data"] == (backend == "vxlan"
                ? #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIPv6: IPv6Address("2001:2::\(host)")!))"}"# : "null"))
        }
        // Pods ping in both families (retried until the agents have programmed their peers).
        for family in ["", " --v6"] {
            let ping = try await kube.ping(family)
            #expect(ping.status == 0, "ping\(family): \(ping.stdout)\(ping.stderr)\n\(logs())")
        }
        let subnetEnv = try String(contentsOfFile: "\(directory)/h1/subnet.env", encoding: .utf8)
        #expect(subnetEnv.contains("FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n"), "\(subnetEnv)")
        // `diff` reads the Nodes once and finds h1 in sync in both families.
        let diff = try run("ip netns exec \(prefix)-h1 \(agentBinary) diff --config \(directory)/h1.json --lock-file \(directory)/h1/diff.lock")
        #expect(diff.status == 0 && diff.stdout.hasPrefix("in sync"), "\(diff.stdout)\(diff.stderr)")
        func flanneldNode(_ k: Int, v6Data: String) -> [String: Any] {
            let x = String(k, radix: 16), byte = String(format: "%02x", k)
            var node = nodeJSON("h\(k)", podCIDR: "10.244.\(k).0/24", annotations: [
                flannel + "backend-type": backend, flannel + "kube-subnet-manager": "true",
                flannel + "backend-data": backend == "vxlan" ? #"{"VNI":1,"VtepMAC":"0e:00:00:00:00:\#(byte)"}"# : "null",
                flannel + "public-ip": "198.18.0.\(k)", flannel + "backend-v6-data": v6Data, flannel + "public-ipv6": "2001:2::\(x)"])
            node["spec"] = ["podCIDR": "10.244.\(k).0/24", "podCIDRs": ["10.244.\(k).0/24", "fd00:10:244:\(x)::/64"]]
            return node
        }
        let routes6 = { try sh("ip -n \(prefix)-h1 -6 route show proto vxlan-agent") }
        // Nodes of dual-stack flanneld nodes added one at a time (no agent of ours behind
        // them: the agents rewrite their own Nodes' annotations): each reaches h1's IPv6
        // routes. The time from the fake's update to the route in `ip -6 -ts monitor
        // route` is printed, not asserted.
        let latencies = try await kube.routeLatencies(10..<20, ipv6: true, put: { k in
            fake.put(flanneldNode(k, v6Data: backend == "vxlan" ? #"{"VNI":1,"VtepMAC":"0e:00:00:00:06:\#(String(format: "%02x", k))"}"# : "null"))
        }, subnet: { "fd00:10:244:\(String($0, radix: 16))::/64" })
        #expect(latencies.count == 10)
        if !latencies.isEmpty {
            print("kube dual stack \(backend): a Node added to its IPv6 route in a peer's kernel (ip -6 -ts monitor): "
                  + String(format: "p50 %.1f ms, max %.1f ms over %d", latencies[latencies.count / 2], latencies.last!, latencies.count))
        }
        if backend == "vxlan" {
            #expect(try sh("ip -n \(prefix)-h1 -6 neigh show dev flannel-v6.1").contains("fd00:10:244:a:: lladdr 0e:00:00:00:06:0a"),
                    "the IPv6 VTEP MAC from backend-v6-data")
            // h10's IPv6 half breaks (another VNI in backend-v6-data): h1 keeps its IPv4 route only.
            fake.put(flanneldNode(10, v6Data: #"{"VNI":7,"VtepMAC":"0e:00:00:00:06:0a"}"#))
            do {
                try await eventually("h1 drops h10's IPv6 route", seconds: 30) { !(try routes6().contains("fd00:10:244:a::/64")) }
            } catch {
                Issue.record("h1's IPv6 routes:\n\((try? routes6()) ?? "")\n\(logs())")
                throw error
            }
            #expect(try sh("ip -n \(prefix)-h1 route show proto vxlan-agent").contains("10.244.10.0/24"), "IPv4 stays")
            #expect(logs().contains("node's IPv6 half skipped"), "the reason is logged")
        }
    }
    /// An IPv6-only Kubernetes cluster (`cluster.sh up --v6only`: no IPv4 on the
    /// hosts or the pods), Nodes with one IPv6 podCIDR and an IPv6 InternalIP,
    /// `EnableIPv4: false` in net-conf.json: each agent writes its annotations as an
    /// IPv6-only flanneld does, the pods ping over IPv6, nothing of IPv4 is
    /// programmed; Nodes of IPv6-only flanneld nodes reach h1's routes, one whose
    /// backend-v6-data breaks is dropped whole, a Node deleted is no longer reached.
    @Test(arguments: ["vxlan", "host-gw"])
    func podsPingInIPv6Only(backend: String) async throws {
        try requireKernel()
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge"), "containernetworking-plugins is required")
        let kube = try await KubeNamespaceCluster(dual: false, v6only: true)
        do {
            try await podsPingInIPv6Only(kube, backend: backend)
        } catch {
            await kube.close()
            throw error
        }
        await kube.close()
    }

    func podsPingInIPv6Only(_ kube: KubeNamespaceCluster, backend: String) async throws {
        let (fake, prefix, directory, cluster) = (kube.fake, kube.prefix, kube.directory, KubeNamespaceCluster.script)
        let logs = kube.logs
        for host in 1...3 {
            var node = nodeJSON("h\(host)", podCIDR: "fd00:10:244:\(host)::/64", annotations: [:])
            node["status"] = ["addresses": [["type": "InternalIP", "address": "2001:2::\(host)"]]]
            fake.put(node)
        }
        let backendJSON = backend == "vxlan" ? #"{"Type": "vxlan", "VNI": 1, "Port": 8472}"# : #"{"Type": "host-gw"}"#
        try kube.startAgents(netConf: #"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": \#(backendJSON)}"#)
        do {
            try await eventually("every Node annotated", seconds: 30) {
                (1...3).allSatisfy { fake.node("h\($0)").map(annotationsOf)?[flannel + "public-ipv6"] != nil }
            }
        } catch {
            Issue.record("the agents' logs:\n\(logs())")
            throw error
        }
        // The annotations an IPv6-only flanneld writes, and nothing else.
        for host in 1...3 {
            var expected = [flannel + "backend-type": backend, flannel + "kube-subnet-manager": "true", flannel + "public-ipv6": "2001:2::\(host)",
                            flannel + "backend-v6-data": backend == "vxlan"
                                ? #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIPv6: IPv6Address("2001:2::\(host)")!))"}"# : "null"]
            if backend == "host-gw" {
                expected[flannel + "backend-data"] = "null"
                expected[flannel + "public-ip"] = "0.0.0.0"
            }
            #expect(annotationsOf(fake.node("h\(host)")!) == expected, "h\(host)")
        }
        try await eventually("NetworkUnavailable False on every Node", seconds: 30) {
            (1...3).allSatisfy { host in
                conditionsOf(fake.node("h\(host)")).contains { $0["type"] as? String == "NetworkUnavailable" && $0["status"] as? String == "False" }
            }
        }
        // Pods ping over IPv6 (retried until the agents have programmed their peers).
        let ping = try await kube.ping(" --v6")
        #expect(ping.status == 0, "ping --v6: \(ping.stdout)\(ping.stderr)\n\(logs())")
        // Nothing of IPv4: no flannel.1, no IPv4 route of ours; the IPv6 plane's.
        let links = try sh("ip -n \(prefix)-h1 -o link show")
        #expect(!links.contains(" flannel.1:") && !links.contains(" flannel.1@"), "\(links)")
        #expect(try sh("ip -n \(prefix)-h1 -4 route show proto vxlan-agent").isEmpty)
        let routes6 = { try sh("ip -n \(prefix)-h1 -6 route show proto vxlan-agent") }
        #expect(try routes6().contains("fd00:10:244:2::/64") && routes6().contains("fd00:10:244:3::/64"), "\((try? routes6()) ?? "")")
        // subnet.env as flanneld writes it IPv6-only: no FLANNEL_NETWORK or FLANNEL_SUBNET.
        let subnetEnv = try String(contentsOfFile: "\(directory)/h1/subnet.env", encoding: .utf8)
        #expect(subnetEnv.hasPrefix("FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n"), "\(subnetEnv)")
        #expect(!subnetEnv.contains("FLANNEL_NETWORK=") && !subnetEnv.contains("FLANNEL_SUBNET="), "\(subnetEnv)")
        // `diff` reads the Nodes once (no patch) and finds h1 in sync.
        let patches = fake.requests.filter { $0.hasPrefix("PATCH") }.count
        let diff = try run("ip netns exec \(prefix)-h1 \(agentBinary) diff --config \(directory)/h1.json --lock-file \(directory)/h1/diff.lock")
        #expect(diff.status == 0 && diff.stdout.hasPrefix("in sync"), "\(diff.stdout)\(diff.stderr)")
        #expect(fake.requests.filter { $0.hasPrefix("PATCH") }.count == patches)

        // Nodes of IPv6-only flanneld nodes added one at a time (no agent behind them):
        // each reaches h1's IPv6 routes. The time from the fake's update to the route in
        // `ip -6 -ts monitor route` is printed, not asserted.
        func flanneldNode(_ k: Int, v6Data: String) -> [String: Any] {
            let x = String(k, radix: 16)
            var annotations = [flannel + "backend-type": backend, flannel + "kube-subnet-manager": "true",
                               flannel + "public-ipv6": "2001:2::\(x)", flannel + "backend-v6-data": v6Data]
            if backend == "host-gw" {
                annotations[flannel + "backend-data"] = "null"
                annotations[flannel + "public-ip"] = "0.0.0.0"
            }
            return nodeJSON("h\(k)", podCIDR: "fd00:10:244:\(x)::/64", annotations: annotations)
        }
        let v6Data = { (k: Int) in backend == "vxlan" ? #"{"VNI":1,"VtepMAC":"0e:00:00:00:06:\#(String(format: "%02x", k))"}"# : "null" }
        let latencies = try await kube.routeLatencies(10..<20, ipv6: true, put: { k in fake.put(flanneldNode(k, v6Data: v6Data(k))) },
                                                      subnet: { "fd00:10:244:\(String($0, radix: 16))::/64" })
        #expect(latencies.count == 10)
        if !latencies.isEmpty {
            print("kube IPv6-only \(backend): a Node added to its IPv6 route in a peer's kernel (ip -6 -ts monitor): "
                  + String(format: "p50 %.1f ms, max %.1f ms over %d", latencies[latencies.count / 2], latencies.last!, latencies.count))
        }
        if backend == "vxlan" {
            #expect(try sh("ip -n \(prefix)-h1 -6 neigh show dev flannel-v6.1").contains("fd00:10:244:a:: lladdr 0e:00:00:00:06:0a"),
                    "the VTEP MAC from backend-v6-data")
        }
        // h10's backend-v6-data (vxlan) or public-ipv6 (host-gw) breaks: the IPv6 half is all
        // it has, so h1 drops it, and the reason is logged.
        fake.put(backend == "vxlan" ? flanneldNode(10, v6Data: #"{"VNI":7,"VtepMAC":"0e:00:00:00:06:0a"}"#)
                 : { var node = flanneldNode(10, v6Data: "null")
                     var metadata = node["metadata"] as! [String: Any]
                     var annotations = metadata["annotations"] as! [String: String]
                     annotations[flannel + "public-ipv6"] = "fe80::a"
                     metadata["annotations"] = annotations
                     node["metadata"] = metadata
                     return node }())
        do {
            try await eventually("h1 drops h10's route", seconds: 30) { !(try routes6().contains("fd00:10:244:a::/64")) }
        } catch {
            Issue.record("h1's IPv6 routes:\n\((try? routes6()) ?? "")\n\(logs())")
            throw error
        }
        #expect(logs().contains("node skipped") && logs().contains("h10"), "the reason is logged")

        // A Node deleted: h1 stops reaching its pod (its agent still runs), h2's is still reached.
        let pods = try sh("bash \(cluster) pods \(prefix)").split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        let pod3 = try #require(pods.first { $0.first == "3" }?.last), pod2 = try #require(pods.first { $0.first == "2" }?.last)
        #expect(pod3.contains(":") && pod2.contains(":"), "the pods' IPv6 addresses: \(pods)")
        fake.delete("h3")
        try await eventually("h1 no longer reaches h3's pod", seconds: 30) {
            try run("ip netns exec \(prefix)-h1-p1 ping -c 1 -W 1 \(pod3)").status != 0
        }
        #expect(try run("ip netns exec \(prefix)-h1-p1 ping -c 1 -W 2 \(pod2)").status == 0, "h2 is still reached")
        #expect(!(try routes6().contains("fd00:10:244:3::/64")))
    }
}
