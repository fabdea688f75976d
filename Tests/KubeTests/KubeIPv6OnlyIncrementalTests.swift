import Foundation
import Model
import Testing
import TestSupport

/// The daemon's incremental path in an IPv6-only cluster (`EnableIPv4: false`,
/// Nodes from the fake Kubernetes API: the etcd registry allocates no IPv6-only
/// lease yet): the IPv4 plane holds nothing and decides nothing, so a Node that
/// comes, a Node whose IPv6 address moves and a deleted IPv6 route are each
/// applied by an incremental pass, not a full one.
@Suite("vxlan-agent run, IPv6-only: per-Node passes", kernelTests, .blocking, .serialized)
struct KubeIPv6OnlyIncrementalTests {
    /// Full passes an agent logged (`--log-level debug`), but the resync timer's.
    static func fullPasses(_ log: String) -> Int {
        log.split(separator: "\n").filter { $0.contains("msg=\"full pass starts\"") && !$0.contains("trigger=resync") }.count
    }

    @Test("IPv6-only: a Node added, its public IPv6 moved, an IPv6 route deleted: no full pass")
    func noFullPass() async throws {
        try requireKernel()
        let kube = try await KubeNamespaceCluster(dual: false, v6only: true)
        do {
            try await run(kube)
        } catch {
            await kube.close()
            throw error
        }
        await kube.close()
    }

    func run(_ kube: KubeNamespaceCluster) async throws {
        let (fake, prefix, directory) = (kube.fake, kube.prefix, kube.directory)
        let h1 = "\(prefix)-h1"
        for host in 1...3 {
            var node = nodeJSON("h\(host)", podCIDR: "fd00:10:244:\(host)::/64", annotations: [:])
            node["status"] = ["addresses": [["type": "InternalIP", "address": "2001:2::\(host)"]]]
            fake.put(node)
        }
        try kube.startAgents(netConf: ipv6OnlyNetConf())
        let log = { (try? String(contentsOfFile: "\(directory)/h1.log", encoding: .utf8)) ?? "" }
        let routes6 = { try sh("ip -n \(h1) -6 route show proto vxlan-agent") }
        let fdb6 = { try sh("bridge -n \(h1) fdb show dev flannel-v6.1") }
        do {
            try await eventually("h1 programs h2 and h3", seconds: 30) {
                let routes = try routes6()
                return routes.contains("fd00:10:244:2::/64") && routes.contains("fd00:10:244:3::/64")
            }
        } catch {
            Issue.record("the agents' logs:\n\(kube.logs())")
            throw error
        }
        // The first passes settle (the device's creation is followed by a full pass): no new one for 2 s.
        var settled = (count: Self.fullPasses(log()), at: Date())
        try await eventually("h1's full passes settle", seconds: 30) {
            let count = Self.fullPasses(log())
            if count != settled.count { settled = (count, Date()) }
            return Date().timeIntervalSince(settled.at) > 2
        }
        let fullPasses = Self.fullPasses(log())
        #expect(fullPasses >= 1)

        // An IPv6-only flanneld's Node comes (a VTEP MAC of its own in backend-v6-data), then its public IPv6 moves.
        let mac = "0e:00:00:00:06:1a"
        fake.put(ipv6OnlyNode("h26", ipv6: "2001:2::1a", subnetV6: "fd00:10:244:1a::/64", replacing: ["backend-v6-data": vtepData(MACAddress(mac)!)]))
        try await eventually("h26's IPv6 route and FDB entry on h1", seconds: 30) {
            try routes6().contains("fd00:10:244:1a::/64") && fdb6().contains("\(mac) dst 2001:2::1a self permanent")
        }
        fake.put(ipv6OnlyNode("h26", ipv6: "2001:2::2a", subnetV6: "fd00:10:244:1a::/64", replacing: ["backend-v6-data": vtepData(MACAddress(mac)!)]))
        try await eventually("the FDB entry follows h26's new public IPv6", seconds: 30) {
            try fdb6().contains("\(mac) dst 2001:2::2a self permanent")
        }
        #expect(try !fdb6().contains("dst 2001:2::1a"))

        // Someone deletes h2's IPv6 route on h1: it comes back.
        try sh("ip -n \(h1) -6 route del fd00:10:244:2::/64")
        try await eventually("the deleted IPv6 route is back", seconds: 30) { try routes6().contains("fd00:10:244:2::/64") }

        // Nothing of IPv4 was programmed, and none of it took a full pass.
        #expect(try sh("ip -n \(h1) -4 route show proto vxlan-agent").isEmpty)
        let lines = log().split(separator: "\n").filter { $0.contains("full pass") }.suffix(5)
        #expect(Self.fullPasses(log()) == fullPasses, "full passes after the settle: \(lines)")
    }
}
