import Foundation
import Synchronization
import Testing
import TestSupport

/// Tests/cluster/cluster.sh's topologies, which issue 11's tests stand on: a
/// segment of hosts, and segments joined by a router, where a route lookup of
/// a host on the other segment has a gateway and one on the same segment has none.
@Suite("cluster.sh: segments and a router", kernelTests, .blocking)
struct TopologyTests {
    static let counter = Mutex(0)
    static let script = "\(packageRoot)/Tests/cluster/cluster.sh"

    /// A prefix of this test's own; `down` runs on the way out.
    static func prefix() -> String {
        let n = counter.withLock { value -> Int in value += 1; return value }
        return "vxa-topo\(getpid() % 100_000)-\(n)"
    }

    static func namespaces(_ prefix: String) throws -> [String] {
        try sh("ip netns list | awk '{print $1}'").split(separator: "\n").map(String.init)
            .filter { $0.hasPrefix(prefix + "-") }
    }

    @Test("up P 2+2: hosts 1-2 on 198.18.1.0/24, 3-4 on 198.18.2.0/24; a peer across the router has a gateway, one alongside none")
    func routed() throws {
        try requireKernel()
        let prefix = Self.prefix()
        defer { _ = try? run("\(Self.script) down \(prefix)") }
        try sh("\(Self.script) up \(prefix) 2+2 1")

        #expect(try sh("\(Self.script) hosts \(prefix)") == """
            1 \(prefix)-h1 198.18.1.1 1
            2 \(prefix)-h2 198.18.1.2 1
            3 \(prefix)-h3 198.18.2.3 2
            4 \(prefix)-h4 198.18.2.4 2

            """)
        #expect(Set(try Self.namespaces(prefix)) == Set(["ul1", "ul2", "rt", "h1", "h2", "h3", "h4", "h1-p1", "h2-p1", "h3-p1", "h4-p1"]
            .map { "\(prefix)-\($0)" }))
        #expect(try sh("ip -n \(prefix)-rt -4 -o addr show").contains("198.18.2.254/24"))

        // (from host, to address, the gateway a lookup names or nil)
        let lookups: [(Int, String, String?)] = [
            (1, "198.18.1.2", nil), (1, "198.18.2.3", "198.18.1.254"), (1, "198.18.2.4", "198.18.1.254"),
            (4, "198.18.2.3", nil), (4, "198.18.1.1", "198.18.2.254"),
        ]
        for (host, address, gateway) in lookups {
            let route = try sh("ip -n \(prefix)-h\(host) -o route get \(address)")
            if let gateway {
                #expect(route.contains("via \(gateway) dev eth0"), "host \(host) -> \(address): \(route)")
            } else {
                #expect(!route.contains(" via "), "host \(host) -> \(address): \(route)")
            }
            // The underlay really carries it (through the router where there is one).
            #expect(try run("ip netns exec \(prefix)-h\(host) ping -c 1 -W 2 \(address)").status == 0, "host \(host) -> \(address)")
        }

        // VXLAN across the router: the agent on every host, every pod reaches every pod.
        let inventory = "/run/\(prefix)/inventory.json"
        try sh("\(Self.script) inventory \(prefix) > \(inventory)")
        for host in 1...4 {
            try sh("ip netns exec \(prefix)-h\(host) \(agentBinary) sync --config \(inventory) --node node-\(host) --lock-file /run/\(prefix)/h\(host).lock")
        }
        let ping = try run("\(Self.script) ping \(prefix)")
        #expect(ping.status == 0, "\(ping.stdout)\(ping.stderr)")
        #expect(ping.stdout.contains("12 of 12 pings answered"))

        try sh("\(Self.script) down \(prefix)")
        #expect(try Self.namespaces(prefix).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/run/\(prefix)"))
    }

    @Test("up P 3: a segment of three hosts, no router, no gateway anywhere")
    func segment() throws {
        try requireKernel()
        let prefix = Self.prefix()
        defer { _ = try? run("\(Self.script) down \(prefix)") }
        try sh("\(Self.script) up \(prefix) 3 0")
        #expect(Set(try Self.namespaces(prefix)) == Set(["ul", "h1", "h2", "h3"].map { "\(prefix)-\($0)" }))
        for host in 1...3 {
            #expect(try !sh("ip -n \(prefix)-h\(host) route show").contains(" via "))
        }
        #expect(try run("ip netns exec \(prefix)-h1 ping -c 1 -W 2 198.18.0.3").status == 0)
    }

    @Test("down removes everything after an up that failed midway (a CNI ADD failing on host 3 of 2+2)")
    func downAfterFailure() throws {
        try requireKernel()
        let prefix = Self.prefix()
        defer { _ = try? run("\(Self.script) down \(prefix)") }
        let plugins = NSTemporaryDirectory() + "vxa-topo-cni-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: plugins) }
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(plugins)/host-local", withDestinationPath: "/usr/lib/cni/host-local")
        // Written by a child process, not by this one: a file this process holds
        // open for writing is inherited by whatever another test spawns meanwhile,
        // and executing it then fails with ETXTBSY ("Text file busy").
        try sh("""
            cat > \(plugins)/bridge <<'EOF'
            #!/bin/sh
            case $CNI_CONTAINERID in *-h3-p1) echo injected failure; exit 1 ;; esac
            exec /usr/lib/cni/bridge
            EOF
            chmod 755 \(plugins)/bridge
            """)

        let up = try run("CNI_PATH=\(plugins) \(Self.script) up \(prefix) 2+2 1")
        #expect(up.status != 0)
        #expect(up.stderr.contains("CNI ADD for \(prefix)-h3-p1 failed: injected failure"))
        #expect(try Self.namespaces(prefix).contains("\(prefix)-rt"), "the failure came after the router was built")
        #expect(try run("\(Self.script) up \(prefix) 2 0").status != 0, "a second up under the same prefix is refused")

        try sh("\(Self.script) down \(prefix)")
        #expect(try Self.namespaces(prefix).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/run/\(prefix)"))
        try sh("\(Self.script) down \(prefix)")  // safe to repeat
    }

    @Test("inventory: flannel's Backend for each backend, public IPs by segment", arguments: [
        ("2+1", "", #""Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}"#),
        ("2+1", "--direct-routing", #""Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": true}"#),
        ("2+1", "--backend host-gw", #""Backend": {"Type": "host-gw"}"#),
        ("3", "--backend vxlan --direct-routing", #""Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": true}"#),
    ])
    func inventory(layout: String, arguments: String, backend: String) throws {
        let text = try sh("\(Self.script) inventory \(layout) \(arguments)")
        #expect(text.contains(#"{"Network": "10.244.0.0/16", "SubnetLen": 24, \#(backend)}"#), "\(text)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let nodes = try #require(doc["nodes"] as? [[String: String]])
        let expected = layout == "3" ? ["198.18.0.1", "198.18.0.2", "198.18.0.3"] : ["198.18.1.1", "198.18.1.2", "198.18.2.3"]
        #expect(nodes.map { $0["publicIP"] } == expected)
        #expect(nodes.map { $0["subnet"] } == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"])
    }

    @Test("bad layouts and backends are refused, naming what is wrong", arguments: [
        ("inventory 2+0", "segment 2 has no hosts"),
        ("inventory 200+51", "251 hosts, at most 250"),
        ("inventory 1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1", "17 segments, at most 16"),
        ("inventory 2 --backend wireguard", "bad --backend 'wireguard'"),
        ("inventory 2 --backend host-gw --direct-routing", "--direct-routing is a VXLAN option"),
    ])
    func refused(command: String, message: String) throws {
        let result = try run("\(Self.script) \(command)")
        #expect(result.status == 2)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }
}
