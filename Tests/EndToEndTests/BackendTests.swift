import Foundation
import Testing
import TestSupport

/// The host-gw backend and VXLAN DirectRouting on a real kernel: one host
/// namespace for `sync` (routes, skips, switching backends, repair), the
/// daemon re-deciding a peer's side when the underlay's routes change, and a
/// segment of three hosts with real pods and daemons against etcd.
@Suite("host-gw and DirectRouting on a real kernel", kernelTests, .blocking, .serialized)
struct BackendTests {
    /// An inventory for node-1 (198.18.0.1 on eth0's 198.18.0.0/24) with peers
    /// 198.18.0.2-3 on the segment and 198.19.0.4 behind a router (198.18.0.254).
    static func inventory(backend: String, extra: String = "") -> String {
        """
        {"node": "node-1", "network": {"Network": "10.244.0.0/16", "Backend": {\(backend)}},
         "nodes": [
          {"name": "node-1", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24"},
          {"name": "node-2", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24"},
          {"name": "node-3", "publicIP": "198.18.0.3", "subnet": "10.244.3.0/24"},
          {"name": "node-4", "publicIP": "198.19.0.4", "subnet": "10.244.4.0/24"}]\(extra)}
        """
    }

    static func routerHost() throws -> TestHost {
        let host = try TestHost()
        do {
            try host.exec("ip route add 198.19.0.0/16 via 198.18.0.254 dev eth0")
        } catch {
            host.close()
            throw error
        }
        return host
    }

    /// `ip route show proto vxlan-agent`, one line per route, as iproute2 prints it.
    static func routes(_ host: TestHost) throws -> [String] {
        try host.exec("ip route show proto vxlan-agent").stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    @Test("host-gw sync: a route per peer via its public IP on eth0, no flannel.1, a peer behind a router skipped naming it; then in sync")
    func hostGWSync() throws {
        try requireKernel()
        let host = try Self.routerHost()
        defer { host.close() }
        let config = try host.write("inv.json", Self.inventory(backend: #""Type": "host-gw""#))
        let dry = try host.agent("diff --config \(config)")
        #expect(dry.status == 2, "changes pending: \(dry.stdout)\(dry.stderr)")
        #expect(dry.stdout.contains("+ route 10.244.2.0/24 nhid 1985478658 via 198.18.0.2 dev eth0"), "\(dry.stdout)")
        // The JSON plan: each change with its peer; no device (host-gw keeps none).
        let json = try host.agent("diff --output json --config \(config)")
        let plan = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json.stdout)")
        #expect(plan["device"] == nil)
        let changes = try #require(plan["changes"] as? [[String: Any]])
        #expect(changes.contains { $0["object"] as? String == "route 10.244.3.0/24 nhid 1985478659 via 198.18.0.3 dev eth0"
                                   && $0["peer"] as? String == "node-3" && $0["action"] as? String == "add" }, "\(changes)")
        #expect((plan["skippedPeers"] as? [[String: Any]])?.first?["name"] as? String == "node-4")
        // Exit status 3: applied, with a peer skipped (the warning on standard error says why).
        let first = try host.agent("sync --config \(config)")
        #expect(first.status == 3, "\(first.stdout)\(first.stderr)")
        #expect(first.stderr.contains("peer node-4 (nodes[3]): publicIP 198.19.0.4 is not on this host's segment: it is reached via the gateway "
                                      + "198.18.0.254 (route 198.19.0.0/16)"), "\(first.stderr)")
        #expect(try Self.routes(host) == [
            "10.244.2.0/24 nhid 1985478658 via 198.18.0.2 dev eth0",
            "10.244.3.0/24 nhid 1985478659 via 198.18.0.3 dev eth0",
        ])
        #expect(try host.exec("ip link show flannel.1").status != 0, "host-gw keeps no device")
        let second = try host.agent("sync --config \(config)")
        #expect(second.stdout.hasPrefix("in sync: nothing to do (2 peers, 1 skipped, 0 kernel writes)"), "\(second.stdout)")

        // The classic layout: the route itself names the gateway, as flanneld writes it.
        let classic = try host.write("classic.json", Self.inventory(backend: #""Type": "host-gw""#, extra: #", "routeLayout": "classic""#))
        let relayout = try host.agent("sync --config \(classic)")
        #expect(relayout.status == 3, "\(relayout.stdout)\(relayout.stderr)")
        #expect(try Self.routes(host) == ["10.244.2.0/24 via 198.18.0.2 dev eth0", "10.244.3.0/24 via 198.18.0.3 dev eth0"])
        #expect(try host.exec("ip nexthop show proto vxlan-agent").stdout.isEmpty)

        // Tampering: a route pointed elsewhere is repaired; a foreign route beside ours is never touched.
        try host.exec("ip route replace 10.244.2.0/24 via 198.18.0.77 dev eth0 proto vxlan-agent")
        try host.exec("ip route add 10.99.0.0/24 via 198.18.0.9 dev eth0")
        let repair = try host.agent("sync --verbose --config \(classic)")
        #expect(repair.stdout.contains("~ route 10.244.2.0/24 via 198.18.0.2 dev eth0 (was: route 10.244.2.0/24 via 198.18.0.77 dev eth0)"),
                "\(repair.stdout)")
        #expect(try Self.routes(host).first == "10.244.2.0/24 via 198.18.0.2 dev eth0")
        #expect(try host.exec("ip route show 10.99.0.0/24").stdout.contains("via 198.18.0.9 dev eth0"))

        // cleanup removes the routes and leaves the foreign one.
        let cleanup = try host.agent("cleanup --config \(classic)")
        #expect(cleanup.status == 0, "\(cleanup.stdout)\(cleanup.stderr)")
        #expect(try Self.routes(host).isEmpty)
        #expect(try host.exec("ip route show 10.99.0.0/24").stdout.contains("via 198.18.0.9"))
    }

    @Test("a node switches backends: vxlan -> host-gw removes flannel.1 and moves the routes to eth0; back again in one sync each")
    func switchBackends() throws {
        try requireKernel()
        let host = try Self.routerHost()
        defer { host.close() }
        let vxlan = try host.write("vxlan.json", Self.inventory(backend: #""Type": "vxlan""#))
        let hostGW = try host.write("hostgw.json", Self.inventory(backend: #""Type": "host-gw""#))
        #expect(try host.agent("sync --config \(vxlan)").status == 0)
        #expect(try Self.routes(host).count == 3, "vxlan reaches node-4 across the router")
        let before = try host.kernelState()

        let switched = try host.agent("sync --verbose --config \(hostGW)")
        #expect(switched.status == 3, "node-4 is skipped: \(switched.stdout)\(switched.stderr)")
        #expect(switched.stdout.contains("- link flannel.1"), "\(switched.stdout)")
        #expect(try host.exec("ip link show flannel.1").status != 0, "flannel.1 is left after the switch")
        #expect(try Self.routes(host).allSatisfy { $0.hasSuffix("dev eth0") })
        #expect(try host.agent("sync --config \(hostGW)").stdout.hasPrefix("in sync"))

        let back = try host.agent("sync --config \(vxlan)")
        #expect(back.status == 0, "\(back.stdout)\(back.stderr)")
        #expect(try host.agent("sync --config \(vxlan)").stdout.hasPrefix("in sync"))
        // The same kernel as before the round trip (the device was created again: its index is not compared).
        let difference = try host.kernelStateDifference(settlingTo: before)
        #expect(difference == nil, "\(difference ?? "")")
    }

    @Test("DirectRouting: direct to the segment, VXLAN across the router; the daemon moves a peer when the underlay's routes change")
    func directRouting() throws {
        try requireKernel()
        let host = try Self.routerHost()
        defer { host.close() }
        var text = Self.inventory(backend: #""Type": "vxlan", "DirectRouting": true"#)
        text.removeLast()
        text += #", "subnetFile": "\#(host.directory)/subnet.env", "ipMasq": false, "metricsAddress": "", "cniConfFile": ""}"#
        let config = try host.write("dr.json", text)
        let sync = try host.agent("sync --config \(config)")
        #expect(sync.status == 0, "\(sync.stdout)\(sync.stderr)")
        #expect(try Self.routes(host) == [
            "10.244.2.0/24 nhid 1985478658 via 198.18.0.2 dev eth0",
            "10.244.3.0/24 nhid 1985478659 via 198.18.0.3 dev eth0",
            "10.244.4.0/24 nhid 1985478660 via 10.244.4.0 dev flannel.1 onlink",
        ])
        #expect(try host.exec("bridge fdb show dev flannel.1").stdout.contains("dst 198.19.0.4 self permanent"))
        #expect(try !host.exec("bridge fdb show dev flannel.1").stdout.contains("dst 198.18.0.2"))

        // The daemon: node-4 becomes reachable on the segment (a connected route
        // to it appears), so it goes direct and its FDB entry and neighbor leave;
        // the route goes away again, and node-4 is back over VXLAN.
        let log = "\(host.directory)/daemon.log"
        let pid = try spawn(["ip", "netns", "exec", host.namespace, agentBinary, "run", "--config", config,
                             "--lock-file", "\(host.directory)/sync.lock", "--log-level", "debug"], stdout: log)
        defer { kill(pid, SIGTERM); _ = waitForExit(pid) }
        func waitUntil(_ what: String, _ probe: () throws -> Bool) throws {
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline {
                if (try? probe()) == true { return }
                Thread.sleep(forTimeInterval: 0.05)
            }
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw CommandFailure(command: "wait until \(what)", status: 1, output: String(output.suffix(4000)))
        }
        try waitUntil("the daemon's first pass") { try String(contentsOfFile: log, encoding: .utf8).contains("full pass") }
        try host.exec("ip route add 198.19.0.4/32 dev eth0")
        try waitUntil("node-4 goes direct") {
            try Self.routes(host).contains("10.244.4.0/24 nhid 1985478660 via 198.19.0.4 dev eth0")
                && !(try host.exec("bridge fdb show dev flannel.1").stdout.contains("198.19.0.4"))
                && !(try host.exec("ip neigh show dev flannel.1").stdout.contains("10.244.4.0"))
        }
        try host.exec("ip route del 198.19.0.4/32 dev eth0")
        try waitUntil("node-4 is back over VXLAN") {
            try Self.routes(host).contains("10.244.4.0/24 nhid 1985478660 via 10.244.4.0 dev flannel.1 onlink")
                && (try host.exec("bridge fdb show dev flannel.1").stdout.contains("dst 198.19.0.4 self permanent"))
        }
        let env = try String(contentsOfFile: "\(host.directory)/subnet.env", encoding: .utf8)
        #expect(env.contains("FLANNEL_MTU=1450"))
    }

    @Test("a segment of three hosts on host-gw: daemons against etcd write flanneld's host-gw leases, pods ping with no encapsulation")
    func hostGWDaemons() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 3, network: #"{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}"#)
        defer { cluster.close() }
        try cluster.startAll(1...3)
        let leases = try cluster.leases()
        for host in 1...3 {
            let key = "\(DaemonCluster.leasePrefix)/subnets/" + (try cluster.subnet(host)).replacingOccurrences(of: "/", with: "-")
            #expect(leases[key] == #"{"PublicIP":"198.18.0.\#(host)","PublicIPv6":null,"BackendType":"host-gw"}"#, "\(leases)")
        }
        let env = try String(contentsOfFile: "\(cluster.hostDirectory(1))/subnet.env", encoding: .utf8)
        #expect(env.contains("FLANNEL_MTU=1500\n"), "host-gw gives pods the underlay's MTU: \(env)")
        for host in 1...3 {
            #expect(try sh("ip -n \(cluster.ns(host)) link show flannel.1 2>/dev/null || true").isEmpty)
            let lines = try sh("ip -n \(cluster.ns(host)) route show proto vxlan-agent").split(separator: "\n")
            #expect(lines.count == 2 && lines.allSatisfy { $0.contains("via 198.18.0.") && $0.hasSuffix("dev eth0 ") || $0.hasSuffix("dev eth0") },
                    "\(lines)")
        }
        let pods = try (1...3).map(cluster.addPod)
        for (from, source) in pods.enumerated() {
            for (to, target) in pods.enumerated() where from != to {
                let ping = try run("ip netns exec \(cluster.ns(from + 1))-p1 ping -c 1 -W 2 \(target)")
                #expect(ping.status == 0, "pod \(source) on h\(from + 1) -> pod \(target) on h\(to + 1): \(ping.stdout)")
            }
        }
        // A lease exactly as flanneld's host-gw writes it is programmed; a vxlan lease is not (flanneld ignores it too).
        try cluster.etcdctl(#"put \#(DaemonCluster.leasePrefix)/subnets/10.244.200.0-24 '{"PublicIP":"198.18.0.99","PublicIPv6":null,"BackendType":"host-gw"}'"#)
        try cluster.etcdctl("put \(DaemonCluster.leasePrefix)/subnets/10.244.201.0-24 '\(flannelLease("198.18.0.98", mac: "22:33:44:55:66:77"))'")
        try cluster.waitUntil("the flanneld host-gw lease is programmed") {
            try (1...3).allSatisfy { try cluster.routes($0).contains("10.244.200.0/24") }
        }
        #expect(try sh("ip -n \(cluster.ns(2)) route show 10.244.200.0/24").contains("via 198.18.0.99 dev eth0 proto vxlan-agent"))
        #expect(try !cluster.routes(2).contains("10.244.201.0/24"))
        #expect(cluster.log(2).contains("only host-gw leases can be reached by host-gw routes"))
        // Repair: a deleted route comes back.
        let subnet3 = try cluster.subnet(3)
        try sh("ip -n \(cluster.ns(1)) route del \(subnet3)")
        try cluster.waitUntil("h1 repairs its route to h3") { try cluster.routes(1).contains(subnet3) }
    }

    @Test("a routed topology (two segments, one router): DirectRouting goes direct within a segment and over VXLAN across; host-gw skips the far segment naming the router; pods ping")
    func routedTopology() throws {
        try requireKernel()
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge"),
                     "containernetworking-plugins is required (make test installs it)")
        let prefix = "vxa-rt\(getpid() % 100_000)"
        let cluster = "\(packageRoot)/Tests/cluster/cluster.sh"
        defer { _ = try? run("bash \(cluster) down \(prefix)") }
        try sh("bash \(cluster) up \(prefix) 2+2 1")
        let dir = "/run/\(prefix)"
        try sh("bash \(cluster) inventory \(prefix) --direct-routing > \(dir)/dr.json")
        try sh("bash \(cluster) inventory \(prefix) --backend host-gw > \(dir)/hostgw.json")
        func sync(_ host: Int, _ config: String) throws -> Result {
            try run("ip netns exec \(prefix)-h\(host) \(agentBinary) sync --config \(dir)/\(config) --node node-\(host) "
                    + "--lock-file \(dir)/h\(host).lock")
        }
        func routes(_ host: Int) throws -> [String] {
            try sh("ip -n \(prefix)-h\(host) route show proto vxlan-agent").split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        for host in 1...4 {
            let result = try sync(host, "dr.json")
            #expect(result.status == 0, "h\(host): \(result.stdout)\(result.stderr)")
        }
        #expect(try routes(1) == [
            "10.244.2.0/24 nhid 1985478658 via 198.18.1.2 dev eth0",
            "10.244.3.0/24 nhid 1985478659 via 10.244.3.0 dev flannel.1 onlink",
            "10.244.4.0/24 nhid 1985478660 via 10.244.4.0 dev flannel.1 onlink",
        ])
        #expect(try routes(4) == [
            "10.244.1.0/24 nhid 1985478657 via 10.244.1.0 dev flannel.1 onlink",
            "10.244.2.0/24 nhid 1985478658 via 10.244.2.0 dev flannel.1 onlink",
            "10.244.3.0/24 nhid 1985478659 via 198.18.2.3 dev eth0",
        ])
        let fdb = try sh("bridge -n \(prefix)-h1 fdb show dev flannel.1")
        #expect(fdb.contains("dst 198.18.2.3") && fdb.contains("dst 198.18.2.4") && !fdb.contains("dst 198.18.1.2"), "\(fdb)")
        let ping = try run("bash \(cluster) ping \(prefix)")
        #expect(ping.status == 0, "\(ping.stdout)\(ping.stderr)")

        // host-gw across the router: the far segment is skipped naming the router, the near one is routed.
        let hostGW = try sync(1, "hostgw.json")
        #expect(hostGW.status == 3, "\(hostGW.stdout)\(hostGW.stderr)")
        #expect(hostGW.stderr.contains("peer node-3 (nodes[2]): publicIP 198.18.2.3 is not on this host's segment: it is reached via "
                                       + "the gateway 198.18.1.254 (route 0.0.0.0/0)"), "\(hostGW.stderr)")
        #expect(try routes(1) == ["10.244.2.0/24 nhid 1985478658 via 198.18.1.2 dev eth0"])
        #expect(try sh("ip -n \(prefix)-h1 link show flannel.1 2>/dev/null || true").isEmpty)
    }
}
