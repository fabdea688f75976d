import Foundation
import Model
import Registry
import Testing
import TestSupport

/// The dual-stack CNI configuration the agent writes, handed to the reference
/// `bridge` plugin as a container runtime hands it: the pod gets an address of
/// each family and a default route of each family via the bridge's gateways.
@Suite("the dual-stack CNI configuration through the real bridge plugin", kernelTests, .blocking)
struct DualStackCNITests {
    @Test("a pod gets both addresses, a default route per family via the gateways, and reaches both gateways")
    func pod() throws {
        try requireKernel()
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge"),
                     "containernetworking-plugins is required (make test installs it)")
        let host = try TestHost()
        let pod = "\(host.namespace)-p1"
        defer {
            _ = try? run("ip netns del \(pod) 2>/dev/null")
            host.close()
        }
        // TestHost turns IPv6 off in its namespace; dual stack needs it (cni0 is made after this).
        try host.exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0")
        let config = CNIConfig(network: IPv4Prefix("10.244.0.0/16")!, subnet: IPv4Prefix("10.244.1.0/24")!, mtu: 1450,
                               ipv6Subnet: IPv6Prefix("fd00:10:244:1::/64"))
        // The list's one plugin as a runtime passes it: with the list's name and version,
        // host-local's state in the test's directory, not the machine's /var/lib/cni.
        let list = try #require(try JSONSerialization.jsonObject(with: Data(config.text.utf8)) as? [String: Any])
        var plugin = try #require((list["plugins"] as? [[String: Any]])?.first)
        plugin["cniVersion"] = list["cniVersion"]
        plugin["name"] = list["name"]
        var ipam = try #require(plugin["ipam"] as? [String: Any])
        ipam["dataDir"] = "\(host.directory)/ipam"
        plugin["ipam"] = ipam
        let conf = try host.write("pod.conf", String(decoding: try JSONSerialization.data(withJSONObject: plugin), as: UTF8.self))
        try sh("""
        ip netns add \(pod)
        ip -n \(pod) link set lo up
        ip netns exec \(host.namespace) env CNI_COMMAND=ADD CNI_CONTAINERID=\(pod) CNI_NETNS=/var/run/netns/\(pod) CNI_IFNAME=eth0 \
          CNI_PATH=/usr/lib/cni /usr/lib/cni/bridge < \(conf) > \(host.directory)/pod.result
        """)
        let addresses = try sh("ip -n \(pod) addr show dev eth0")
        #expect(addresses.contains("inet 10.244.1.2/24"), "\(addresses)")
        #expect(addresses.contains("inet6 fd00:10:244:1::2/64"), "\(addresses)")
        #expect(try sh("ip -n \(pod) -4 route show default").contains("default via 10.244.1.1 dev eth0"))
        #expect(try sh("ip -n \(pod) -6 route show default").contains("default via fd00:10:244:1::1 dev eth0"))
        let bridge = try sh("ip -n \(host.namespace) addr show dev cni0")
        #expect(bridge.contains("inet 10.244.1.1/24") && bridge.contains("inet6 fd00:10:244:1::1/64"), "\(bridge)")
        // Both gateways answer (the IPv6 one once duplicate address detection is done).
        let deadline = Date().addingTimeInterval(20)
        var answered = (ipv4: false, ipv6: false)
        while Date() < deadline && !(answered.ipv4 && answered.ipv6) {
            if !answered.ipv4 { answered.ipv4 = (try run("ip netns exec \(pod) ping -c1 -W1 10.244.1.1")).status == 0 }
            if !answered.ipv6 { answered.ipv6 = (try run("ip netns exec \(pod) ping -6 -c1 -W1 fd00:10:244:1::1")).status == 0 }
        }
        #expect(answered.ipv4 && answered.ipv6, "\(answered)")
    }
}
