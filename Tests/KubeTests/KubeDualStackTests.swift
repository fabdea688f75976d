import Daemon
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Testing

/// net-conf.json of a dual-stack flannel cluster.
func dualNetwork(_ backend: String = "vxlan") throws -> NetworkConfig {
    try NetworkConfig.parse(Data(dualNetConf(backend).utf8), source: "net-conf.json")
}

func dualNetConf(_ backend: String = "vxlan") -> String {
    #"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "\#(backend)"}}"#
}

/// A dual-stack Node as flanneld (vxlan) annotates it: both podCIDRs, both public
/// addresses, both backend data.
func dualNode(_ name: String, ip: String, ipv6: String, subnet: String, subnetV6: String, backend: String = "vxlan",
              replacing: [String: String?] = [:], podCIDRs: [String]? = nil) -> [String: Any] {
    let data = backend == "vxlan" ? #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIP: IPv4Address(ip)!))"}"# : "null"
    let data6 = backend == "vxlan" ? #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIPv6: IPv6Address(ipv6)!))"}"# : "null"
    var annotations = [flannel + "backend-type": backend == "udp" ? "" : backend, flannel + "backend-data": data,
                       flannel + "public-ip": ip, flannel + "kube-subnet-manager": "true",
                       flannel + "public-ipv6": ipv6, flannel + "backend-v6-data": data6]
    for (key, value) in replacing { annotations[flannel + key] = value }
    var node = nodeJSON(name, podCIDR: subnet, annotations: annotations)
    node["spec"] = ["podCIDR": subnet, "podCIDRs": podCIDRs ?? [subnet, subnetV6]]
    return node
}

@Suite struct KubeDualStackTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var label: String
        var backend = "vxlan"
        var dual = true
        /// Annotations (without the prefix) replaced (nil: removed) on flanneld's dual-stack Node.
        var replacing: [String: String?] = [:]
        var podCIDRs: [String]? = nil
        /// The IPv6 half expected ("subnet publicIP mac"), or the reason it is skipped
        /// (a substring), or nothing at all (an IPv4 network, udp).
        var expected: Expected
        enum Expected: Sendable { case half(String); case skipped(String); case none }
        var testDescription: String { label }
    }

    static let mac6 = MACAddress.vtep(vni: 1, publicIPv6: IPv6Address("2001:2::2")!)
    static let cases: [Case] = [
        Case(label: "vxlan as a dual-stack flanneld writes it", expected: .half("fd00:10:244:2::/64 2001:2::2 \(mac6)")),
        Case(label: "the IPv6 VTEP MAC announced is the one used",
             replacing: ["backend-v6-data": #"{"VNI":1,"VtepMAC":"8e:4b:aa:01:02:03"}"#],
             expected: .half("fd00:10:244:2::/64 2001:2::2 8e:4b:aa:01:02:03")),
        Case(label: "host-gw: backend-v6-data null", backend: "host-gw", expected: .half("fd00:10:244:2::/64 2001:2::2 none")),
        Case(label: "udp carries IPv4 only", backend: "udp", expected: .none),
        Case(label: "an IPv4-only network ignores the IPv6 half", dual: false, expected: .none),
        Case(label: "a Node with the IPv4 podCIDR only", podCIDRs: ["10.244.2.0/24"], expected: .skipped("no IPv6 podCIDR")),
        Case(label: "an IPv6 podCIDR outside IPv6Network", podCIDRs: ["10.244.2.0/24", "fd00:99::/64"],
             expected: .skipped("fd00:99::/64 is not a /64 inside the IPv6 network fd00:10:244::/56")),
        Case(label: "an IPv6 podCIDR that does not parse", podCIDRs: ["10.244.2.0/24", "fd00::zz/64"],
             expected: .skipped("\"fd00::zz/64\" is not an IPv6 prefix")),
        Case(label: "public-ipv6 missing", replacing: ["public-ipv6": nil], expected: .skipped(flannel + "public-ipv6 is missing")),
        Case(label: "public-ipv6 not IPv6", replacing: ["public-ipv6": "198.18.0.2"],
             expected: .skipped(flannel + "public-ipv6: \"198.18.0.2\" is not an IPv6 address")),
        Case(label: "public-ipv6 link-local", replacing: ["public-ipv6": "fe80::2"],
             expected: .skipped(flannel + "public-ipv6: fe80::2 is not a global unicast address")),
        Case(label: "public-ipv6 inside the IPv6 pod network", replacing: ["public-ipv6": "fd00:10:244:7::1"],
             expected: .skipped("inside the IPv6 pod network")),
        Case(label: "backend-v6-data missing", replacing: ["backend-v6-data": nil],
             expected: .skipped(flannel + "backend-v6-data: is missing")),
        Case(label: "backend-v6-data not JSON", replacing: ["backend-v6-data": #"{"VtepMAC":"0a:01:00:00:00:02"},"PublicIP":"1.2.3.4""#],
             expected: .skipped(flannel + "backend-v6-data is not JSON")),
        Case(label: "backend-v6-data of another VNI", replacing: ["backend-v6-data": #"{"VNI":7,"VtepMAC":"0a:01:00:00:00:02"}"#],
             expected: .skipped(flannel + "backend-v6-data: VNI: 7, but the network uses VNI 1")),
        Case(label: "backend-v6-data with a bad MAC", replacing: ["backend-v6-data": #"{"VNI":1,"VtepMAC":"nope"}"#],
             expected: .skipped("\"nope\" is not a MAC address")),
    ]

    /// A dual-stack Node's IPv6 half; a broken or missing one keeps the IPv4 peer and says why.
    @Test(arguments: cases)
    func ipv6HalfFromNode(_ c: Case) throws {
        let node = try decodeNode(dualNode("n", ip: "198.18.0.2", ipv6: "2001:2::2", subnet: "10.244.2.0/24", subnetV6: "fd00:10:244:2::/64",
                                           backend: c.backend, replacing: c.replacing, podCIDRs: c.podCIDRs))
        let network = c.dual ? try dualNetwork(c.backend) : try network(c.backend)
        let peer = try #require(KubeNodes.checkedPeer(node, annotations: try KubeAnnotations(), network: network)).get()
        // IPv4 is programmed whatever the IPv6 half says.
        #expect("\(peer.record.publicIP) \(peer.record.subnet)" == "198.18.0.2 10.244.2.0/24")
        #expect(peer.record.origin == "node/n")
        switch c.expected {
        case .half(let text):
            let half = try #require(peer.record.ipv6)
            #expect("\(half.subnet) \(half.publicIP) \(half.vtepMAC.map { "\($0)" } ?? "none")" == text)
            #expect(peer.ipv6Skipped == nil)
        case .skipped(let reason):
            #expect(peer.record.ipv6 == nil)
            let skipped = try #require(peer.ipv6Skipped)
            #expect(skipped.reason.contains(reason), "\(skipped.reason)")
            #expect(skipped.key == "node/n")
            #expect(skipped.description.hasSuffix("its IPv6 half is skipped (IPv4 is programmed)"))
        case .none:
            #expect(peer.record.ipv6 == nil && peer.ipv6Skipped == nil)
        }
        // `peer` is the same record.
        #expect(try KubeNodes.peer(node, annotations: try KubeAnnotations(), network: network)?.get() == peer.record)
    }

    /// A Node whose IPv4 half is broken is skipped whole, in a dual network too.
    @Test func aBrokenIPv4HalfSkipsTheNode() throws {
        let node = try decodeNode(dualNode("n", ip: "198.18.0.2", ipv6: "2001:2::2", subnet: "10.244.2.0/24", subnetV6: "fd00:10:244:2::/64",
                                           replacing: ["public-ip": nil]))
        let result = try #require(KubeNodes.checkedPeer(node, annotations: try KubeAnnotations(), network: try dualNetwork()))
        #expect(throws: SkippedLease.self) { try result.get() }
    }

    /// What this node writes on its own Node in dual stack, byte for byte as
    /// flanneld's AcquireLease does: public-ipv6 and backend-v6-data beside IPv4's.
    @Test(arguments: [
        ("vxlan", true, #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIPv6: IPv6Address("2001:2::1")!))"}"#),
        ("host-gw", true, "null"),
        ("udp", true, nil),
        ("vxlan", false, nil),
    ] as [(String, Bool, String?)])
    func ownAnnotations(backend: String, dual: Bool, data6: String?) throws {
        let annotations = try KubeAnnotations()
        let network = dual ? try dualNetwork(backend) : try network(backend)
        let written = KubeNodes.ownAnnotations(network: network, publicIP: IPv4Address("198.18.0.1")!, publicIPv6: IPv6Address("2001:2::1"),
                                               annotations: annotations)
        var expected = KubeNodes.ownAnnotations(network: network, publicIP: IPv4Address("198.18.0.1")!, annotations: annotations)
        #expect(expected[flannel + "public-ip"] == "198.18.0.1")
        if let data6 {
            expected[flannel + "public-ipv6"] = "2001:2::1"
            expected[flannel + "backend-v6-data"] = data6
        }
        #expect(written == expected)
        // The IPv6 ones are patched like the others, and only when they differ.
        let node = try decodeNode(nodeJSON("n", annotations: written))
        #expect(KubeNodes.annotationPatch(node, wanted: written) == nil)
        if data6 != nil {
            var stale = written
            stale[flannel + "public-ipv6"] = "2001:2::9"
            let patch = try #require(KubeNodes.annotationPatch(try decodeNode(nodeJSON("n", annotations: stale)), wanted: written))
            let decoded = try JSONSerialization.jsonObject(with: Data(patch)) as? [String: [String: [String: String]]]
            #expect(decoded == ["metadata": ["annotations": [flannel + "public-ipv6": "2001:2::1"]]], "only what differs")
        }
    }

    /// This node's public IPv6: the overwrite annotation, else the configured one,
    /// else the Node's IPv6 InternalIP (not a link-local one).
    @Test func ownPublicIPv6() throws {
        let annotations = try KubeAnnotations()
        var node = try decodeNode(nodeJSON("n", annotations: [:], internalIP: "198.18.0.9"))
        node.internalIPs = ["198.18.0.9", "fe80::9", "2001:2::9"]
        #expect(KubeNodes.publicIPv6(of: node, configured: nil, annotations: annotations) == IPv6Address("2001:2::9"))
        #expect(KubeNodes.publicIPv6(of: node, configured: IPv6Address("2001:2::1"), annotations: annotations) == IPv6Address("2001:2::1"))
        node.annotations[flannel + "public-ipv6-overwrite"] = "2001:2::5"
        #expect(KubeNodes.publicIPv6(of: node, configured: IPv6Address("2001:2::1"), annotations: annotations) == IPv6Address("2001:2::5"))
        node.annotations = [:]
        node.internalIPs = ["198.18.0.9", "fe80::9"]
        #expect(KubeNodes.publicIPv6(of: node, configured: nil, annotations: annotations) == nil)
    }

    /// This node's record in dual stack, or why it cannot be built yet.
    @Test(arguments: [
        ("dual", ["10.244.1.0/24", "fd00:10:244:1::/64"], "2001:2::1", "fd00:10:244:1::/64 2001:2::1"),
        ("IPv6 podCIDR first, host bits", ["fd00:10:244:1::5/64", "10.244.1.0/24"], "2001:2::1", "fd00:10:244:1::/64 2001:2::1"),
        ("IPv4 podCIDR only", ["10.244.1.0/24"], "2001:2::1", "IPv6 pod cidr not assigned: no IPv6 podCIDR"),
        ("IPv6 podCIDR outside the network", ["10.244.1.0/24", "fd00:99::/64"], "2001:2::1",
         "subnet fd00:10:244::/56 specified in the flannel net config doesn't contain fd00:99::/64 IPv6 PodCIDR of the \"n1\" node"),
        ("no public IPv6", ["10.244.1.0/24", "fd00:10:244:1::/64"], nil, "no public IPv6 address"),
    ] as [(String, [String], String?, String)])
    func localRecord(label: String, podCIDRs: [String], configured: String?, expected: String) throws {
        var node = try decodeNode(nodeJSON("n1", podCIDR: nil, annotations: [:], internalIP: "198.18.0.1"))
        node.podCIDRs = podCIDRs
        let result = KubeNodes.local(node, name: "n1", network: try dualNetwork(), configuredIP: nil,
                                     configuredIPv6: configured.flatMap { IPv6Address($0) }, annotations: try KubeAnnotations())
        switch result {
        case .success(let record):
            #expect(record.subnet == IPv4Prefix("10.244.1.0/24"))
            let half = try #require(record.ipv6)
            #expect("\(half.subnet) \(half.publicIP)" == expected, "\(label)")
            #expect(half.vtepMAC == .vtep(vni: 1, publicIPv6: half.publicIP))
        case .failure(let error):
            #expect("\(error)".contains(expected), "\(label): \(error)")
        }
    }

    /// `sync`'s one-shot read: peers with their IPv6 halves, and a warning per half left out.
    @Test func viewForSync() throws {
        let nodes = try [
            dualNode("n1", ip: "198.18.0.1", ipv6: "2001:2::1", subnet: "10.244.1.0/24", subnetV6: "fd00:10:244:1::/64"),
            dualNode("n2", ip: "198.18.0.2", ipv6: "2001:2::2", subnet: "10.244.2.0/24", subnetV6: "fd00:10:244:2::/64"),
            dualNode("n3", ip: "198.18.0.3", ipv6: "2001:2::3", subnet: "10.244.3.0/24", subnetV6: "fd00:10:244:3::/64",
                     replacing: ["public-ipv6": nil]),
        ].map(decodeNode)
        let result = try KubeNodes.view(nodes: nodes, node: "n1", network: try dualNetwork(), configuredIP: IPv4Address("198.18.0.1"),
                                        configuredIPv6: IPv6Address("2001:2::1"), annotations: try KubeAnnotations()).get()
        #expect(result.view.local.ipv6?.subnet == IPv6Prefix("fd00:10:244:1::/64"))
        #expect(result.view.peers.map { "\($0.subnet) \($0.ipv6.map { "\($0.subnet)" } ?? "-")" }
                == ["10.244.2.0/24 fd00:10:244:2::/64", "10.244.3.0/24 -"])
        #expect(result.skipped.isEmpty)
        #expect(result.warnings.count == 1 && result.warnings[0].contains("node/n3") && result.warnings[0].contains("public-ipv6 is missing"),
                "\(result.warnings)")
    }
}

/// A dual-stack cluster through the fake API server: the daemon's source.
@Suite(.serialized) struct KubeDualStackSourceTests {
    func dualConfig(_ fixture: KubeFixture, publicIPv6: String?) throws -> AgentConfig {
        try dualNetConf().write(toFile: fixture.directory + "/net-conf.json", atomically: true, encoding: .utf8)
        let ipv6 = publicIPv6.map { #""publicIPv6": "\#($0)","# } ?? ""
        return try AgentConfig.parse(Data("""
            {"node": "n1", "publicIP": "198.18.0.1", \(ipv6) "kubernetes": {"kubeconfig": "\(fixture.directory)/kubeconfig",
             "netConfPath": "\(fixture.directory)/net-conf.json"}}
            """.utf8), source: "agent.json")
    }

    @Test func aDualStackClusterFromNodes() async throws {
        let fixture = try await KubeFixture()
        do {
            var own = nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:])
            own["spec"] = ["podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]]
            fixture.api.put(own)
            fixture.api.put(dualNode("n2", ip: "198.18.0.2", ipv6: "2001:2::2", subnet: "10.244.2.0/24", subnetV6: "fd00:10:244:2::/64"))
            // An IPv4-only flanneld's Node in the dual cluster: an IPv4 peer.
            fixture.api.put(annotated("n3", ip: "198.18.0.3", subnet: "10.244.3.0/24"))
            fixture.start(try fixture.source(try dualConfig(fixture, publicIPv6: "2001:2::1")))
            try await eventually("the first state") { fixture.local != nil && fixture.peers.count == 2 }
            #expect(fixture.local?.ipv6 == NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:1::/64")!, publicIP: IPv6Address("2001:2::1")!,
                                                               vtepMAC: .vtep(vni: 1, publicIPv6: IPv6Address("2001:2::1")!)))
            let ipv6Of = { (name: String) in fixture.view.withLock { $0.peers["node/" + name]?.ipv6 } }
            #expect(ipv6Of("n2") == NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:2::/64")!, publicIP: IPv6Address("2001:2::2")!,
                                                        vtepMAC: .vtep(vni: 1, publicIPv6: IPv6Address("2001:2::2")!)))
            #expect(ipv6Of("n3") == nil)

            // This node's annotations, as a dual-stack flanneld writes them.
            try await eventually("this node annotated") { fixture.api.node("n1").map(annotationsOf)?[flannel + "public-ipv6"] != nil }
            let written = annotationsOf(try #require(fixture.api.node("n1")))
            #expect(written[flannel + "public-ipv6"] == "2001:2::1")
            #expect(written[flannel + "backend-v6-data"]
                    == #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIPv6: IPv6Address("2001:2::1")!))"}"#)
            #expect(written[flannel + "public-ip"] == "198.18.0.1")

            // The IPv4-only node turns dual stack: its IPv6 half arrives as a change.
            fixture.api.put(dualNode("n3", ip: "198.18.0.3", ipv6: "2001:2::3", subnet: "10.244.3.0/24", subnetV6: "fd00:10:244:3::/64"))
            try await eventually("n3's IPv6 half") { ipv6Of("n3")?.publicIP == IPv6Address("2001:2::3") }
            // Its IPv6 half breaks: the IPv4 peer stays, without it.
            fixture.api.put(dualNode("n3", ip: "198.18.0.3", ipv6: "2001:2::3", subnet: "10.244.3.0/24", subnetV6: "fd00:10:244:3::/64",
                                     replacing: ["backend-v6-data": #"{"VNI":7,"VtepMAC":"0a:01:00:00:00:03"}"#]))
            try await eventually("n3's IPv6 half gone") { ipv6Of("n3") == nil }
            #expect(fixture.peers["node/n3"] == "198.18.0.3 10.244.3.0/24")
            #expect(fixture.states == 1, "changes came as deltas")
        } catch {}
        await fixture.close()
    }

    /// This node without an IPv6 podCIDR in a dual-stack cluster waits for it
    /// (nothing reported, nothing written); the IPv6 InternalIP is its address.
    @Test func thisNodeWaitsForItsIPv6PodCIDR() async throws {
        let fixture = try await KubeFixture()
        do {
            var own = nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:])
            own["status"] = ["addresses": [["type": "InternalIP", "address": "198.18.0.1"], ["type": "InternalIP", "address": "2001:2::1"]]]
            fixture.api.put(own)
            fixture.api.put(dualNode("n2", ip: "198.18.0.2", ipv6: "2001:2::2", subnet: "10.244.2.0/24", subnetV6: "fd00:10:244:2::/64"))
            fixture.start(try fixture.source(try dualConfig(fixture, publicIPv6: nil)))
            try await eventually("the watch opened") { fixture.api.requests.contains { $0.contains("watch=1") } }
            #expect(fixture.local == nil)
            #expect(fixture.api.node("n1").map(annotationsOf)?.isEmpty == true, "nothing written before the IPv6 podCIDR")
            var node = try #require(fixture.api.node("n1"))
            node["spec"] = ["podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]]
            fixture.api.put(node)
            try await eventually("the state once both podCIDRs are there") { fixture.local != nil }
            #expect(fixture.local?.ipv6?.subnet == IPv6Prefix("fd00:10:244:1::/64"))
            #expect(fixture.local?.ipv6?.publicIP == IPv6Address("2001:2::1"), "the Node's IPv6 InternalIP")
            #expect(fixture.view.withLock { $0.peers["node/n2"]?.ipv6?.subnet } == IPv6Prefix("fd00:10:244:2::/64"))
            try await eventually("public-ipv6 written") { fixture.api.node("n1").map(annotationsOf)?[flannel + "public-ipv6"] == "2001:2::1" }
        } catch {}
        await fixture.close()
    }

    @Test func readForSyncInDualStack() async throws {
        let fixture = try await KubeFixture()
        do {
            var own = nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:])
            own["spec"] = ["podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]]
            fixture.api.put(own)
            fixture.api.put(dualNode("n2", ip: "198.18.0.2", ipv6: "2001:2::2", subnet: "10.244.2.0/24", subnetV6: "fd00:10:244:2::/64"))
            fixture.api.put(annotated("n3", ip: "198.18.0.3", subnet: "10.244.3.0/24"))
            let (view, warnings) = try await fixture.source(try dualConfig(fixture, publicIPv6: "2001:2::1")).read()
            #expect(view.network.ipv6 != nil, "the network stays dual stack")
            #expect(view.local.ipv6?.subnet == IPv6Prefix("fd00:10:244:1::/64"))
            #expect(view.peers.map { $0.ipv6?.publicIP } == [IPv6Address("2001:2::2"), nil])
            #expect(warnings.count == 1 && warnings[0].contains("node/n3") && warnings[0].contains("no IPv6 podCIDR"), "\(warnings)")
            #expect(!fixture.api.requests.contains { $0.hasPrefix("PATCH") }, "sync writes nothing")
        } catch {}
        await fixture.close()
    }
}
