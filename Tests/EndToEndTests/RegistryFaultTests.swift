import Foundation
import Testing
import TestSupport

/// Drops every packet between namespace `ns` and `address`, both ways, with
/// nftables inside `ns` (never the root namespace): no RST, no ICMP, silence.
func partition(_ ns: String, from address: String? = nil) throws {
    let match = address.map { ("ip saddr \($0) ", "ip daddr \($0) ") } ?? ("iifname \"eth0\" ", "oifname \"eth0\" ")
    try sh("""
    ip netns exec \(ns) nft -f - <<'EOF'
    table inet vxa-partition {
        chain in { type filter hook input priority -10; policy accept; \(match.0)drop; }
        chain out { type filter hook output priority -10; policy accept; \(match.1)drop; }
    }
    EOF
    """)
}

/// Removes the partition of `ns`; idempotent.
func heal(_ ns: String) {
    _ = try? run("ip netns exec \(ns) nft delete table inet vxa-partition")
}

@Suite("vxlan-agent run: registry faults against a real etcd", kernelTests, .blocking, .serialized)
struct RegistryFaultTests {
    @Test("a silent partition from etcd (drops both ways; etcd gives up on the connection, its RST lost) is noticed: registry_connected 0, /healthz 503; healed, a lease written meanwhile is programmed")
    func silentPartition() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 2)
        defer { cluster.close() }
        try cluster.startAll(1...2)
        let peer = try cluster.subnet(2)
        #expect(try cluster.http(1, "/healthz").contains("200 OK"))
        #expect(try cluster.metrics(1)["vxlan_agent_registry_connected"] == 1)

        let h1 = cluster.ns(1)
        try partition(h1, from: "198.18.0.254")
        defer { heal(h1) }
        let cut = Date()
        // etcd's side gives up on h1's connections; the RSTs it sends are dropped
        // on the way in, so h1's sockets stay open and silent.
        try sh("ip netns exec \(cluster.prefix)-ul ss -K dst 198.18.0.1")
        let joined = "10.244.202.0/24"
        try cluster.etcdctl("put \(DaemonCluster.leasePrefix)/subnets/10.244.202.0-24 '\(flannelLease("198.18.0.97", mac: "22:33:44:55:66:97"))'")

        try cluster.waitUntil("h1 reports the registry down", seconds: 20) {
            try cluster.metrics(1)["vxlan_agent_registry_connected"] == 0
        }
        let detected = Date().timeIntervalSince(cut)
        try cluster.waitUntil("h1's /healthz says 503", seconds: 20) {
            let health = try cluster.http(1, "/healthz")
            return health.contains("503") && health.contains("registry unreachable")
        }
        let unhealthy = Date().timeIntervalSince(cut)
        #expect(cluster.log(1).contains("no answer on the watch"), "the log names the dead watch")
        #expect(try cluster.routes(1) == [peer], "the partition must not flush anything")
        try cluster.waitUntil("h2, not cut off, programs the new lease") { try cluster.routes(2).contains(joined) }
        #expect(try !cluster.routes(1).contains(joined))

        // The partition lasts 25 s in all.
        Thread.sleep(forTimeInterval: max(0, 25 - Date().timeIntervalSince(cut)))
        heal(h1)
        let healed = Date()
        try cluster.waitUntil("h1 programs the lease written during the partition", seconds: 40) { try cluster.routes(1).contains(joined) }
        let caughtUp = Date().timeIntervalSince(healed)
        try cluster.waitUntil("h1 reports the registry back") {
            try cluster.metrics(1)["vxlan_agent_registry_connected"] == 1 && cluster.http(1, "/healthz").contains("200 OK")
        }
        #expect(try cluster.routes(1) == [peer, joined])
        print(String(format: "silent partition: registry_connected 0 after %.1f s, /healthz 503 after %.1f s; "
                     + "after healing, the lease written meanwhile was programmed in %.1f s", detected, unhealthy, caughtUp))
    }

    @Test("a change of <prefix>/config while the daemon runs is logged with the key and what changed; the node keeps its network")
    func configChange() throws {
        try requireKernel()
        let cluster = try DaemonCluster(hosts: 2)
        defer { cluster.close() }
        try cluster.startAll(1...2)
        let peer = try cluster.subnet(2)
        let key = "\(DaemonCluster.leasePrefix)/config"

        try cluster.etcdctl(#"put \#(key) '{"Network": "10.245.0.0/16", "Backend": {"Type": "vxlan", "VNI": 2}}'"#)
        try cluster.waitUntil("the change is logged") { cluster.log(1).contains("the network configuration changed in etcd") }
        let line = try #require(cluster.log(1).split(separator: "\n").first { $0.contains("the network configuration changed in etcd") })
        #expect(line.contains("key=\(key)"), "\(line)")
        #expect(line.contains("Network 10.244.0.0/16 -> 10.245.0.0/16"), "\(line)")
        #expect(line.contains("Backend.VNI 1 -> 2"), "\(line)")
        #expect(line.contains("restart to apply"), "\(line)")
        #expect(line.contains("level=warning"), "\(line)")

        // Running as before: same device, same peers, still repairing, healthy.
        try sh("ip -n \(cluster.ns(1)) route del \(peer)")
        try cluster.waitUntil("still repairing under the network it started with") { try cluster.routes(1) == [peer] }
        #expect(try sh("ip -n \(cluster.ns(1)) link show flannel.1").contains("flannel.1"))
        #expect(try run("ip -n \(cluster.ns(1)) link show flannel.2").status != 0)
        #expect(try cluster.http(1, "/healthz").contains("200 OK"))

        // Deleted, then not valid: each said once, with the key.
        try cluster.etcdctl("del \(key)")
        try cluster.waitUntil("the deletion is logged") { cluster.log(1).contains("the network configuration was deleted from etcd") }
        try cluster.etcdctl(#"put \#(key) '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": "x"}}'"#)
        try cluster.waitUntil("the invalid value is logged") {
            cluster.log(1).contains("the network configuration in etcd changed and is not valid")
        }
        let invalid = try #require(cluster.log(1).split(separator: "\n").first { $0.contains("is not valid") })
        #expect(invalid.contains("key=\(key)") && invalid.contains("VNI"), "\(invalid)")
        #expect(cluster.log(1).components(separatedBy: "the network configuration changed in etcd").count == 2,
                "one change, one line")
    }
}
