@testable import Daemon
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Testing

/// net-conf.json of an IPv6-only flannel cluster (`EnableIPv4: false`).
func ipv6OnlyNetConf(_ backend: String = "vxlan", vni: Int = 1) -> String {
    let type = backend == "vxlan" ? #""Type": "vxlan", "VNI": \#(vni)"# : #""Type": "\#(backend)""#
    return #"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {\#(type)}}"#
}

func ipv6OnlyNetwork(_ backend: String = "vxlan", vni: Int = 1) throws -> NetworkConfig {
    try NetworkConfig.parse(Data(ipv6OnlyNetConf(backend, vni: vni).utf8), source: "net-conf.json")
}

/// The backend-v6-data flanneld's vxlan writes for a VTEP (`json.Marshal` of its `vxlanLeaseAttrs`).
func vtepData(_ mac: MACAddress, vni: Int = 1) -> String { #"{"VNI":\#(vni),"VtepMAC":"\#(mac)"}"# }

/// A Node as an IPv6-only flanneld annotates it (AcquireLease with PublicIP 0.0.0.0
/// and BackendData null): one IPv6 podCIDR; vxlan writes backend-type, public-ipv6,
/// backend-v6-data and kube-subnet-manager; host-gw also backend-data `null` and
/// public-ip `0.0.0.0`, and backend-v6-data `null`.
func ipv6OnlyNode(_ name: String, ipv6: String, subnetV6: String?, backend: String = "vxlan",
                  replacing: [String: String?] = [:], podCIDRs: [String]? = nil) -> [String: Any] {
    var annotations = [flannel + "backend-type": backend, flannel + "kube-subnet-manager": "true", flannel + "public-ipv6": ipv6]
    if backend == "vxlan" {
        annotations[flannel + "backend-v6-data"] = vtepData(.vtep(vni: 1, publicIPv6: IPv6Address(ipv6)!))
    } else {
        annotations[flannel + "backend-v6-data"] = "null"
        annotations[flannel + "backend-data"] = "null"
        annotations[flannel + "public-ip"] = "0.0.0.0"
    }
    for (key, value) in replacing { annotations[flannel + key] = value }
    var node = nodeJSON(name, podCIDR: nil, annotations: annotations)
    if let podCIDRs {
        node["spec"] = ["podCIDR": podCIDRs.first ?? "", "podCIDRs": podCIDRs]
    } else if let subnetV6 {
        node["spec"] = ["podCIDR": subnetV6, "podCIDRs": [subnetV6]]
    }
    return node
}

/// IPv6-only clusters (`EnableIPv4: false`) from Node objects: what flanneld's
/// `nodeToLease` reads then (the IPv6 podCIDR, public-ipv6, backend-type,
/// backend-v6-data; nothing of IPv4), what its `AcquireLease` writes.
@Suite struct KubeIPv6OnlyTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var label: String
        var backend = "vxlan"
        /// Annotations (without the prefix) replaced (nil: removed) on an IPv6-only flanneld's Node.
        var replacing: [String: String?] = [:]
        /// `spec.podCIDRs` (spec.podCIDR: the first); nil: `["fd00:10:244:2::/64"]`.
        var podCIDRs: [String]? = nil
        /// Only `spec.podCIDR` (no podCIDRs), as an older API server's Node.
        var podCIDROnly: String? = nil
        /// "subnet publicIP mac" of the peer's IPv6 half, or the reason it is skipped (a substring), or not a peer.
        var expected: Expected
        enum Expected: Sendable { case peer(String); case skipped(String); case notFlannel }
        var testDescription: String { label }
    }

    static let mac2 = MACAddress.vtep(vni: 1, publicIPv6: IPv6Address("2001:2::2")!)
    static let cases: [Case] = [
        Case(label: "vxlan as an IPv6-only flanneld writes it", expected: .peer("fd00:10:244:2::/64 2001:2::2 \(mac2)")),
        Case(label: "the VTEP MAC announced in backend-v6-data is the one used",
             replacing: ["backend-v6-data": #"{"VNI":1,"VtepMAC":"8e:4b:aa:01:02:03"}"#],
             expected: .peer("fd00:10:244:2::/64 2001:2::2 8e:4b:aa:01:02:03")),
        Case(label: "backend-v6-data without a VNI", replacing: ["backend-v6-data": #"{"VtepMAC":"8e:4b:aa:01:02:03"}"#],
             expected: .peer("fd00:10:244:2::/64 2001:2::2 8e:4b:aa:01:02:03")),
        Case(label: "host-gw as an IPv6-only flanneld writes it (backend-data null, public-ip 0.0.0.0)", backend: "host-gw",
             expected: .peer("fd00:10:244:2::/64 2001:2::2 none")),
        Case(label: "spec.podCIDR alone", podCIDROnly: "fd00:10:244:2::/64", expected: .peer("fd00:10:244:2::/64 2001:2::2 \(mac2)")),
        Case(label: "host bits of the podCIDR dropped", podCIDRs: ["fd00:10:244:2::7/64"], expected: .peer("fd00:10:244:2::/64 2001:2::2 \(mac2)")),
        Case(label: "a dual-stack Node: only its IPv6 half is read", podCIDRs: ["10.244.2.0/24", "fd00:10:244:2::/64"],
             expected: .peer("fd00:10:244:2::/64 2001:2::2 \(mac2)")),
        Case(label: "IPv4 annotations are not read, however broken",
             replacing: ["public-ip": "not an address", "backend-data": "{not json"],
             expected: .peer("fd00:10:244:2::/64 2001:2::2 \(mac2)")),
        Case(label: "not flannel's Node", replacing: ["kube-subnet-manager": nil], expected: .notFlannel),
        Case(label: "no podCIDR yet", podCIDRs: [], expected: .skipped("no podCIDR assigned yet (spec.podCIDR)")),
        Case(label: "an IPv4 podCIDR only", podCIDRs: ["10.244.2.0/24"],
             expected: .skipped("no IPv6 podCIDR (spec.podCIDRs: [10.244.2.0/24]): an IPv4 Node in an IPv6-only network")),
        Case(label: "three podCIDRs", podCIDRs: ["10.244.2.0/24", "fd00:10:244:2::/64", "fd00:10:244:3::/64"],
             expected: .skipped("spec.podCIDRs has 3 entries")),
        Case(label: "a podCIDR that does not parse", podCIDRs: ["fd00::zz/64"], expected: .skipped("\"fd00::zz/64\" is not an IPv6 prefix")),
        Case(label: "a podCIDR outside IPv6Network", podCIDRs: ["fd00:99::/64"],
             expected: .skipped("spec.podCIDRs' IPv6 entry fd00:99::/64 is not a /64 inside the IPv6 network fd00:10:244::/56")),
        Case(label: "a podCIDR of another length (spec.podCIDR)", podCIDROnly: "fd00:10:244:2::/80",
             expected: .skipped("spec.podCIDR fd00:10:244:2::/80 is not a /64 inside the IPv6 network fd00:10:244::/56")),
        Case(label: "backend-type missing", replacing: ["backend-type": nil], expected: .skipped(flannel + "backend-type is missing")),
        Case(label: "a host-gw Node in a vxlan network", replacing: ["backend-type": "host-gw"],
             expected: .skipped(flannel + "backend-type: \"host-gw\": only vxlan Nodes can be reached by vxlan")),
        Case(label: "public-ipv6 missing", replacing: ["public-ipv6": nil], expected: .skipped(flannel + "public-ipv6 is missing")),
        Case(label: "public-ipv6 IPv4", replacing: ["public-ipv6": "198.18.0.2"],
             expected: .skipped(flannel + "public-ipv6: \"198.18.0.2\" is not an IPv6 address")),
        Case(label: "public-ipv6 link-local", replacing: ["public-ipv6": "fe80::2"],
             expected: .skipped(flannel + "public-ipv6: fe80::2 is not a global unicast address")),
        Case(label: "public-ipv6 unspecified", backend: "host-gw", replacing: ["public-ipv6": "::"],
             expected: .skipped(flannel + "public-ipv6: :: is not a global unicast address")),
        Case(label: "public-ipv6 inside the IPv6 pod network", replacing: ["public-ipv6": "fd00:10:244:7::1"],
             expected: .skipped(flannel + "public-ipv6: fd00:10:244:7::1 is inside the IPv6 pod network fd00:10:244::/56")),
        Case(label: "backend-v6-data missing", replacing: ["backend-v6-data": nil], expected: .skipped(flannel + "backend-v6-data is missing")),
        Case(label: "backend-v6-data null (a host-gw Node's)", replacing: ["backend-v6-data": "null"],
             expected: .skipped(flannel + "backend-v6-data is missing")),
        Case(label: "backend-v6-data not JSON", replacing: ["backend-v6-data": #"{"VtepMAC":"0a:01:00:00:00:02"},"x":1"#],
             expected: .skipped(flannel + "backend-v6-data is not a JSON object")),
        Case(label: "backend-v6-data of another VNI", replacing: ["backend-v6-data": #"{"VNI":7,"VtepMAC":"0a:01:00:00:00:02"}"#],
             expected: .skipped(flannel + "backend-v6-data: VNI: 7, but the network uses VNI 1")),
        Case(label: "backend-v6-data with a bad MAC", replacing: ["backend-v6-data": #"{"VNI":1,"VtepMAC":"nope"}"#],
             expected: .skipped(flannel + "backend-v6-data: VtepMAC: \"nope\" is not a MAC address")),
        Case(label: "backend-v6-data without VtepMAC", replacing: ["backend-v6-data": #"{"VNI":1}"#],
             expected: .skipped(flannel + "backend-v6-data: VtepMAC is required")),
        Case(label: "backend-v6-data with a VNI that is no number", replacing: ["backend-v6-data": #"{"VNI":"1","VtepMAC":"0a:01:00:00:00:02"}"#],
             expected: .skipped(flannel + "backend-v6-data: VNI: must be a whole number")),
    ]

    /// Another node's Node in an IPv6-only network: an IPv6-only record
    /// (`NodeRecord.ipv6Only`: flannel's empty IPv4 values), or skipped whole
    /// with the reason naming the Node and the field.
    @Test(arguments: cases)
    func peerFromNode(_ c: Case) throws {
        var object = ipv6OnlyNode("n", ipv6: "2001:2::2", subnetV6: "fd00:10:244:2::/64", backend: c.backend, replacing: c.replacing,
                                  podCIDRs: c.podCIDRs)
        if let only = c.podCIDROnly { object["spec"] = ["podCIDR": only] }
        let node = try decodeNode(object)
        let network = try ipv6OnlyNetwork(c.backend)
        let result = KubeNodes.checkedPeer(node, annotations: try KubeAnnotations(), network: network)
        switch c.expected {
        case .notFlannel:
            #expect(result == nil)
        case .peer(let text):
            let peer = try #require(result).get()
            #expect(peer.ipv6Skipped == nil)
            let half = try #require(peer.record.ipv6)
            #expect("\(half.subnet) \(half.publicIP) \(half.vtepMAC.map { "\($0)" } ?? "none")" == text)
            #expect(peer.record == NodeRecord.ipv6Only(name: "n", ipv6: half, origin: "node/n"), "flannel's empty IPv4 values, nothing else")
            #expect(try KubeNodes.peer(node, annotations: try KubeAnnotations(), network: network)?.get() == peer.record)
        case .skipped(let reason):
            guard case .failure(let skipped)? = result else {
                Issue.record("expected skipped (\(reason)), got \(String(describing: result))")
                return
            }
            #expect(skipped.key == "node/n")
            #expect(skipped.reason.contains(reason), "\(skipped.reason)")
            #expect(skipped.description.hasPrefix("lease node/n: ") && skipped.description.hasSuffix("; skipped"), "\(skipped.description)")
        }
    }

    /// What this node writes on its own Node IPv6-only, byte for byte as
    /// flanneld's AcquireLease does with PublicIP 0.0.0.0 and BackendData null:
    /// vxlan skips public-ip and backend-data (`BackendType == "vxlan" && bd ==
    /// "null"`), host-gw writes them (`BackendType != "vxlan"`).
    @Test(arguments: [
        ("vxlan", 1, [flannel + "backend-type": "vxlan", flannel + "kube-subnet-manager": "true", flannel + "public-ipv6": "2001:2::1",
                      flannel + "backend-v6-data": #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIPv6: IPv6Address("2001:2::1")!))"}"#]),
        ("vxlan", 4096, [flannel + "backend-type": "vxlan", flannel + "kube-subnet-manager": "true", flannel + "public-ipv6": "2001:2::1",
                         flannel + "backend-v6-data":
                            #"{"VNI":4096,"VtepMAC":"\#(MACAddress.vtep(vni: 4096, publicIPv6: IPv6Address("2001:2::1")!))"}"#]),
        ("host-gw", 1, [flannel + "backend-type": "host-gw", flannel + "kube-subnet-manager": "true", flannel + "public-ipv6": "2001:2::1",
                        flannel + "backend-v6-data": "null", flannel + "backend-data": "null", flannel + "public-ip": "0.0.0.0"]),
    ] as [(String, Int, [String: String])])
    func ownAnnotations(backend: String, vni: Int, expected: [String: String]) throws {
        let annotations = try KubeAnnotations()
        let network = try ipv6OnlyNetwork(backend, vni: vni)
        // The IPv4 address given is not read: an IPv6-only lease's PublicIP is 0.0.0.0.
        let written = KubeNodes.ownAnnotations(network: network, publicIP: IPv4Address("198.18.0.1")!, publicIPv6: IPv6Address("2001:2::1"),
                                               annotations: annotations)
        #expect(written == expected)
        // A fresh Node gets exactly these in one patch.
        let patch = try #require(KubeNodes.annotationPatch(try decodeNode(nodeJSON("n1", annotations: [:])), wanted: written))
        let decoded = try JSONSerialization.jsonObject(with: Data(patch)) as? [String: [String: [String: String]]]
        #expect(decoded == ["metadata": ["annotations": expected]])
        // Written already: no patch. IPv4 annotations of a dual-stack past stay as they
        // are (flanneld's IPv6-only vxlan rewrites neither public-ip nor backend-data).
        var past = written
        past[flannel + "public-ip"] = past[flannel + "public-ip"] ?? "198.18.0.1"
        past[flannel + "backend-data"] = past[flannel + "backend-data"] ?? vtepData(.vtep(vni: 1, publicIP: IPv4Address("198.18.0.1")!))
        #expect(KubeNodes.annotationPatch(try decodeNode(nodeJSON("n1", annotations: written)), wanted: written) == nil)
        if backend == "vxlan" {
            #expect(KubeNodes.annotationPatch(try decodeNode(nodeJSON("n1", annotations: past)), wanted: written) == nil)
        }
        // A changed address: only what differs is patched.
        var stale = written
        stale[flannel + "public-ipv6"] = "2001:2::9"
        let change = try #require(KubeNodes.annotationPatch(try decodeNode(nodeJSON("n1", annotations: stale)), wanted: written))
        #expect(try JSONSerialization.jsonObject(with: Data(change)) as? [String: [String: [String: String]]]
                == ["metadata": ["annotations": [flannel + "public-ipv6": "2001:2::1"]]])
    }

    /// This node's record IPv6-only, or why it cannot be built yet; no IPv4
    /// podCIDR or address is needed (the Node has an IPv6 InternalIP only).
    @Test(arguments: [
        ("an IPv6 podCIDR", "vxlan", ["fd00:10:244:1::/64"], nil as String?, "fd00:10:244:1::/64 2001:2::1 derived"),
        ("host-gw", "host-gw", ["fd00:10:244:1::/64"], nil, "fd00:10:244:1::/64 2001:2::1 none"),
        ("a dual-stack Node's IPv6 podCIDR", "vxlan", ["10.244.1.0/24", "fd00:10:244:1::5/64"], nil, "fd00:10:244:1::/64 2001:2::1 derived"),
        ("the configured public IPv6", "vxlan", ["fd00:10:244:1::/64"], "2001:2::7", "fd00:10:244:1::/64 2001:2::7 derived"),
        ("no podCIDR", "vxlan", [], nil, "node \"n1\" pod cidr not assigned: no podCIDR assigned yet"),
        ("an IPv4 podCIDR only", "vxlan", ["10.244.1.0/24"], nil,
         "node \"n1\" IPv6 pod cidr not assigned: no IPv6 podCIDR (spec.podCIDRs: [10.244.1.0/24]): an IPv4 Node in an IPv6-only network"),
        ("outside the network", "vxlan", ["fd00:99::/64"], nil,
         "subnet fd00:10:244::/56 specified in the flannel net config doesn't contain fd00:99::/64 IPv6 PodCIDR of the \"n1\" node"),
    ] as [(String, String, [String], String?, String)])
    func localRecord(label: String, backend: String, podCIDRs: [String], configured: String?, expected: String) throws {
        var node = try decodeNode(nodeJSON("n1", podCIDR: nil, annotations: [:], internalIP: "2001:2::1"))
        node.podCIDRs = podCIDRs
        let result = KubeNodes.local(node, name: "n1", network: try ipv6OnlyNetwork(backend), configuredIP: nil,
                                     configuredIPv6: configured.flatMap { IPv6Address($0) }, annotations: try KubeAnnotations())
        switch result {
        case .success(let record):
            let half = try #require(record.ipv6)
            let mac = half.vtepMAC == nil ? "none" : half.vtepMAC == .vtep(vni: 1, publicIPv6: half.publicIP) ? "derived" : "\(half.vtepMAC!)"
            #expect("\(half.subnet) \(half.publicIP) \(mac)" == expected, "\(label)")
            #expect(record == NodeRecord.ipv6Only(name: "n1", ipv6: half, origin: "node/n1"), "\(label): flannel's empty IPv4 values")
        case .failure(let error):
            #expect("\(error)".contains(expected), "\(label): \(error)")
        }
    }

    /// No public IPv6 address: the reason says what to set; an IPv4 InternalIP does not help.
    @Test func noPublicIPv6() throws {
        var node = try decodeNode(nodeJSON("n1", podCIDR: nil, annotations: [:], internalIP: "198.18.0.1"))
        node.podCIDRs = ["fd00:10:244:1::/64"]
        node.internalIPs += ["fe80::1"]
        let result = KubeNodes.local(node, name: "n1", network: try ipv6OnlyNetwork(), configuredIP: IPv4Address("198.18.0.1"),
                                     annotations: try KubeAnnotations())
        #expect(throws: DaemonError.self) { try result.get() }
        if case .failure(let error) = result {
            #expect("\(error)".contains("node \"n1\": no public IPv6 address, and the network is IPv6-only (EnableIPv4: false): set publicIPv6"),
                    "\(error)")
        }
        // The public-ipv6-overwrite annotation is one.
        node.annotations[flannel + "public-ipv6-overwrite"] = "2001:2::5"
        #expect(try KubeNodes.local(node, name: "n1", network: try ipv6OnlyNetwork(), configuredIP: nil, annotations: try KubeAnnotations())
                .get().ipv6?.publicIP == IPv6Address("2001:2::5"))
    }

    /// `sync`'s one-shot read: the view of IPv6-only records, a warning per Node skipped.
    @Test func viewForSync() throws {
        var own = nodeJSON("n1", podCIDR: "fd00:10:244:1::/64", annotations: [:], internalIP: "2001:2::1")
        own["spec"] = ["podCIDR": "fd00:10:244:1::/64", "podCIDRs": ["fd00:10:244:1::/64"]]
        let nodes = try [
            own,
            ipv6OnlyNode("n2", ipv6: "2001:2::2", subnetV6: "fd00:10:244:2::/64"),
            ipv6OnlyNode("n3", ipv6: "2001:2::3", subnetV6: "fd00:10:244:3::/64", replacing: ["public-ipv6": nil]),
            nodeJSON("n4", podCIDR: "fd00:10:244:4::/64", annotations: [:]),
        ].map(decodeNode)
        let result = try KubeNodes.view(nodes: nodes, node: "n1", network: try ipv6OnlyNetwork(), configuredIP: nil,
                                        annotations: try KubeAnnotations()).get()
        #expect(!result.view.network.enableIPv4)
        #expect(result.view.local == NodeRecord.ipv6Only(name: "n1", ipv6: NodeRecord.IPv6Half(
            subnet: IPv6Prefix("fd00:10:244:1::/64")!, publicIP: IPv6Address("2001:2::1")!, vtepMAC: .vtep(vni: 1, publicIPv6: IPv6Address("2001:2::1")!)),
            origin: "node/n1"))
        #expect(result.view.peers.map { "\($0.name) \($0.publicIP) \($0.subnet) \($0.ipv6.map { "\($0.subnet) \($0.publicIP)" } ?? "-")" }
                == ["n2 0.0.0.0 0.0.0.0/0 fd00:10:244:2::/64 2001:2::2"])
        #expect(result.skippedIPv6.isEmpty)
        #expect(result.warnings == ["lease node/n3: \(flannel)public-ipv6 is missing: an IPv6-only node publishes its IPv6 underlay address there; skipped"])
    }
}

/// An IPv6-only cluster through the fake API server: the daemon's source and `read`.
@Suite(.serialized) struct KubeIPv6OnlySourceTests {
    /// The agent's file as a DaemonSet shares it: no publicIP, no publicIPv6.
    func config(_ fixture: KubeFixture, backend: String) throws -> AgentConfig {
        try ipv6OnlyNetConf(backend).write(toFile: fixture.directory + "/net-conf.json", atomically: true, encoding: .utf8)
        return try fixture.config(publicIP: nil)
    }

    /// This node's own Node: an IPv6 podCIDR (none with nil) and an IPv6 InternalIP only.
    func ownNode(podCIDR: String?) -> [String: Any] {
        var own = nodeJSON("n1", podCIDR: nil, annotations: [:])
        if let podCIDR { own["spec"] = ["podCIDR": podCIDR, "podCIDRs": [podCIDR]] }
        own["status"] = ["addresses": [["type": "Hostname", "address": "n1"], ["type": "InternalIP", "address": "2001:2::1"]]]
        return own
    }

    @Test(arguments: ["vxlan", "host-gw"])
    func anIPv6OnlyClusterFromNodes(backend: String) async throws {
        let fixture = try await KubeFixture()
        do {
            try await anIPv6OnlyClusterFromNodes(fixture, backend: backend)
        } catch {
            await fixture.close()
            throw error
        }
        await fixture.close()
    }

    func anIPv6OnlyClusterFromNodes(_ fixture: KubeFixture, backend: String) async throws {
        fixture.api.put(ownNode(podCIDR: nil))
        fixture.api.put(ipv6OnlyNode("n2", ipv6: "2001:2::2", subnetV6: "fd00:10:244:2::/64", backend: backend))
        // A Node whose public-ipv6 is missing: skipped until it has one.
        fixture.api.put(ipv6OnlyNode("n3", ipv6: "2001:2::3", subnetV6: "fd00:10:244:3::/64", backend: backend, replacing: ["public-ipv6": nil]))
        fixture.start(try fixture.source(try config(fixture, backend: backend)))
        // Without its podCIDR this node waits: nothing reported, nothing written.
        try await eventually("the watch opened") { fixture.api.requests.contains { $0.contains("watch=1") } }
        #expect(fixture.local == nil)
        #expect(fixture.api.node("n1").map(annotationsOf)?.isEmpty == true, "nothing written before the podCIDR")
        fixture.api.put(ownNode(podCIDR: "fd00:10:244:1::/64"))
        try await eventually("the first state") { fixture.local != nil }
        let mac = { (address: String) -> MACAddress? in backend == "vxlan" ? .vtep(vni: 1, publicIPv6: IPv6Address(address)!) : nil }
        let half = { (subnet: String, address: String) in
            NodeRecord.IPv6Half(subnet: IPv6Prefix(subnet)!, publicIP: IPv6Address(address)!, vtepMAC: mac(address))
        }
        #expect(fixture.local == NodeRecord.ipv6Only(name: "n1", ipv6: half("fd00:10:244:1::/64", "2001:2::1"), origin: "node/n1"),
                "the Node's IPv6 InternalIP as its address")
        let peer = { (name: String) in fixture.view.withLock { $0.peers["node/" + name] } }
        #expect(fixture.view.withLock { Array($0.peers.keys) } == ["node/n2"])
        #expect(peer("n2") == NodeRecord.ipv6Only(name: "n2", ipv6: half("fd00:10:244:2::/64", "2001:2::2"), origin: "node/n2"))

        // This node's annotations, exactly as an IPv6-only flanneld writes them, and NetworkUnavailable False.
        try await eventually("this node annotated") { fixture.api.node("n1").map(annotationsOf)?[flannel + "kube-subnet-manager"] == "true" }
        #expect(annotationsOf(try #require(fixture.api.node("n1")))
                == KubeNodes.ownAnnotations(network: try ipv6OnlyNetwork(backend), publicIP: IPv4Address(0), publicIPv6: IPv6Address("2001:2::1"),
                                            annotations: try KubeAnnotations()))
        #expect(annotationsOf(try #require(fixture.api.node("n1")))[flannel + "public-ip"] == (backend == "vxlan" ? nil : "0.0.0.0"))
        try await eventually("NetworkUnavailable False") {
            conditionsOf(fixture.api.node("n1")).contains { $0["type"] as? String == "NetworkUnavailable" && $0["status"] as? String == "False" }
        }

        // n3 gets its public-ipv6: a peer, as a delta. n2 changes its address, then leaves.
        fixture.api.put(ipv6OnlyNode("n3", ipv6: "2001:2::3", subnetV6: "fd00:10:244:3::/64", backend: backend))
        try await eventually("n3 arrives") { peer("n3") != nil }
        #expect(peer("n3") == NodeRecord.ipv6Only(name: "n3", ipv6: half("fd00:10:244:3::/64", "2001:2::3"), origin: "node/n3"))
        fixture.api.put(ipv6OnlyNode("n2", ipv6: "2001:2::22", subnetV6: "fd00:10:244:2::/64", backend: backend))
        try await eventually("n2's new address") { peer("n2")?.ipv6?.publicIP == IPv6Address("2001:2::22") }
        // A broken IPv6 half is all such a Node has: it leaves.
        fixture.api.put(ipv6OnlyNode("n2", ipv6: "fe80::2", subnetV6: "fd00:10:244:2::/64", backend: backend))
        try await eventually("n2 skipped") { peer("n2") == nil }
        fixture.api.put(ipv6OnlyNode("n2", ipv6: "2001:2::2", subnetV6: "fd00:10:244:2::/64", backend: backend))
        try await eventually("n2 back") { peer("n2") != nil }
        fixture.api.delete("n2")
        try await eventually("n2 deleted") { peer("n2") == nil }
        #expect(fixture.states == 1, "changes came as deltas")
    }

    /// `read` (sync, diff): one list, no patch, the IPv6-only view, a warning per Node skipped.
    @Test func readForSync() async throws {
        let fixture = try await KubeFixture()
        do {
            fixture.api.put(ownNode(podCIDR: "fd00:10:244:1::/64"))
            fixture.api.put(ipv6OnlyNode("n2", ipv6: "2001:2::2", subnetV6: "fd00:10:244:2::/64"))
            fixture.api.put(ipv6OnlyNode("n3", ipv6: "2001:2::3", subnetV6: "fd00:10:244:3::/64",
                                         replacing: ["backend-v6-data": #"{"VNI":7,"VtepMAC":"0a:01:00:00:00:03"}"#]))
            fixture.api.put(annotated("n4", ip: "198.18.0.4", subnet: "10.244.4.0/24"))   // an IPv4 flanneld's Node
            let (view, warnings) = try await fixture.source(try config(fixture, backend: "vxlan")).read()
            #expect(!view.network.enableIPv4 && view.network.ipv6?.network == IPv6Prefix("fd00:10:244::/56"))
            #expect(view.local.publicIP == IPv4Address(0) && view.local.subnet == NodeRecord.noIPv4Subnet)
            #expect(view.local.ipv6?.subnet == IPv6Prefix("fd00:10:244:1::/64") && view.local.ipv6?.publicIP == IPv6Address("2001:2::1"))
            #expect(view.peers.map(\.name) == ["n2"])
            #expect(warnings == [
                "lease node/n3: \(flannel)backend-v6-data: VNI: 7, but the network uses VNI 1; skipped",
                "lease node/n4: no IPv6 podCIDR (spec.podCIDRs: [10.244.4.0/24]): an IPv4 Node in an IPv6-only network (EnableIPv4: false); skipped",
            ])
            #expect(!fixture.api.requests.contains { $0.hasPrefix("PATCH") }, "sync writes nothing")
            // Without its IPv6 podCIDR this node is an error for `read`, with the reason.
            fixture.api.put(ownNode(podCIDR: "10.244.1.0/24"))
            await #expect { try await fixture.source(try config(fixture, backend: "vxlan")).read() } throws: {
                "\($0)".contains("node \"n1\" IPv6 pod cidr not assigned: no IPv6 podCIDR")
            }
        } catch {
            await fixture.close()
            throw error
        }
        await fixture.close()
    }
}
