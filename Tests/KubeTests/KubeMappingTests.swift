import Daemon
import Foundation
import Model
import Reconcile
import Registry
import Testing
import TestSupport

/// Node JSON as the API server returns it, with flannel's annotations as flanneld writes them.
func nodeJSON(_ name: String, podCIDR: String? = "10.244.2.0/24", annotations: [String: String], internalIP: String? = nil) -> [String: Any] {
    var spec: [String: Any] = [:]
    if let podCIDR { spec["podCIDR"] = podCIDR; spec["podCIDRs"] = [podCIDR] }
    var node: [String: Any] = ["metadata": ["name": name, "annotations": annotations], "spec": spec]
    if let internalIP { node["status"] = ["addresses": [["type": "Hostname", "address": name], ["type": "InternalIP", "address": internalIP]]] }
    return node
}

func decodeNode(_ object: [String: Any]) throws -> KubeNode {
    var object = object
    var metadata = object["metadata"] as! [String: Any]
    metadata["resourceVersion"] = "7"
    object["metadata"] = metadata
    return try JSONDecoder().decode(KubeNode.self, from: JSONSerialization.data(withJSONObject: object))
}

func network(_ backend: String) throws -> NetworkConfig {
    try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "\#(backend)"}}"#.utf8), source: "net-conf.json")
}

let flannel = "flannel.alpha.coreos.com/"

@Suite struct KubeMappingTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var label: String
        var backend: String
        var annotations: [String: String]
        var podCIDR: String? = "10.244.2.0/24"
        /// The peer expected, or the reason it is skipped (a substring), or nil: not flannel's Node.
        var expected: Expected?
        enum Expected: Sendable { case peer(publicIP: String, subnet: String, mac: String?); case skipped(String) }
        var testDescription: String { label }
    }

    static let vxlan = [flannel + "backend-type": "vxlan", flannel + "backend-data": #"{"VNI":1,"VtepMAC":"8e:4b:aa:01:02:03"}"#,
                        flannel + "public-ip": "198.18.0.2", flannel + "kube-subnet-manager": "true"]
    static let cases: [Case] = [
        Case(label: "vxlan as flanneld writes it", backend: "vxlan", annotations: vxlan,
             expected: .peer(publicIP: "198.18.0.2", subnet: "10.244.2.0/24", mac: "8e:4b:aa:01:02:03")),
        Case(label: "vxlan of an older flanneld (no VNI)", backend: "vxlan",
             annotations: vxlan.merging([flannel + "backend-data": #"{"VtepMAC":"8e:4b:aa:01:02:03"}"#]) { $1 },
             expected: .peer(publicIP: "198.18.0.2", subnet: "10.244.2.0/24", mac: "8e:4b:aa:01:02:03")),
        Case(label: "host-gw: backend-data null", backend: "host-gw",
             annotations: [flannel + "backend-type": "host-gw", flannel + "backend-data": "null",
                           flannel + "public-ip": "198.18.0.3", flannel + "kube-subnet-manager": "true"],
             podCIDR: "10.244.3.0/24", expected: .peer(publicIP: "198.18.0.3", subnet: "10.244.3.0/24", mac: nil)),
        Case(label: "udp: no backend type, backend-data null", backend: "udp",
             annotations: [flannel + "backend-type": "", flannel + "backend-data": "null",
                           flannel + "public-ip": "198.18.0.4", flannel + "kube-subnet-manager": "true"],
             podCIDR: "10.244.4.0/24", expected: .peer(publicIP: "198.18.0.4", subnet: "10.244.4.0/24", mac: nil)),
        Case(label: "not flannel's: no kube-subnet-manager", backend: "vxlan",
             annotations: vxlan.filter { $0.key != flannel + "kube-subnet-manager" }, expected: nil),
        Case(label: "no podCIDR yet", backend: "vxlan", annotations: vxlan, podCIDR: nil, expected: .skipped("no podCIDR")),
        Case(label: "a host-gw node seen by vxlan", backend: "vxlan",
             annotations: vxlan.merging([flannel + "backend-type": "host-gw", flannel + "backend-data": "null"]) { $1 },
             expected: .skipped("only vxlan leases")),
        Case(label: "VNI of another network", backend: "vxlan",
             annotations: vxlan.merging([flannel + "backend-data": #"{"VNI":7,"VtepMAC":"8e:4b:aa:01:02:03"}"#]) { $1 },
             expected: .skipped("VNI 7")),
        Case(label: "backend-data that smuggles a field", backend: "vxlan",
             annotations: vxlan.merging([flannel + "backend-data": #"{"VtepMAC":"8e:4b:aa:01:02:03"},"PublicIP":"1.2.3.4""#]) { $1 },
             expected: .skipped("not JSON")),
        Case(label: "public-ip missing", backend: "vxlan", annotations: vxlan.filter { $0.key != flannel + "public-ip" },
             expected: .skipped("public-ip is missing")),
        Case(label: "public-ip not IPv4", backend: "vxlan", annotations: vxlan.merging([flannel + "public-ip": "fd00::1"]) { $1 },
             expected: .skipped("public-ip: \"fd00::1\" is not an IPv4 address")),
    ]

    @Test(arguments: cases)
    func peerFromNode(_ c: Case) throws {
        let node = try decodeNode(nodeJSON("n", podCIDR: c.podCIDR, annotations: c.annotations))
        let result = KubeNodes.peer(node, annotations: try KubeAnnotations(), network: try network(c.backend))
        switch (c.expected, result) {
        case (nil, nil): break
        case (.peer(let ip, let subnet, let mac)?, .success(let record)?):
            #expect("\(record.publicIP)" == ip)
            #expect("\(record.subnet)" == subnet)
            #expect(record.vtepMAC.map { "\($0)" } == mac)
            #expect(record.origin == "node/n")
            #expect(record.name == "n")
        case (.skipped(let reason)?, .failure(let skipped)?):
            #expect(skipped.reason.contains(reason), "\(skipped.reason)")
            #expect(skipped.key == "node/n")
        default:
            Issue.record("expected \(String(describing: c.expected)), got \(String(describing: result))")
        }
    }

    /// What this node writes on its own Node, byte for byte as flanneld does.
    @Test(arguments: [
        ("vxlan", #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIP: IPv4Address("198.18.0.1")!))"}"#, "vxlan"),
        ("host-gw", "null", "host-gw"),
        ("udp", "null", ""),
    ])
    func ownAnnotations(backend: String, data: String, type: String) throws {
        let written = KubeNodes.ownAnnotations(network: try network(backend), publicIP: IPv4Address("198.18.0.1")!,
                                               annotations: try KubeAnnotations())
        #expect(written == [flannel + "backend-type": type, flannel + "backend-data": data,
                            flannel + "public-ip": "198.18.0.1", flannel + "kube-subnet-manager": "true"])
        // A Node that says all this already is not patched again.
        let node = try decodeNode(nodeJSON("n", annotations: written))
        #expect(KubeNodes.annotationPatch(node, wanted: written) == nil)
        let bare = try decodeNode(nodeJSON("n", annotations: [:]))
        let patch = try #require(KubeNodes.annotationPatch(bare, wanted: written))
        let decoded = try JSONSerialization.jsonObject(with: Data(patch)) as? [String: [String: [String: String]]]
        #expect(decoded?["metadata"]?["annotations"] == written)
    }

    /// flannel's `newAnnotations` rules for --kube-annotation-prefix.
    @Test(arguments: [
        ("flannel.alpha.coreos.com", "flannel.alpha.coreos.com/"),
        ("example.com/flannel", "example.com/flannel-"),
        ("example.com/flannel-", "example.com/flannel-"),
        ("example.com/", "example.com/"),
        ("noperiod", nil),
        ("a.b/c/d", nil),
        ("Example.com", nil),
    ] as [(String, String?)])
    func annotationPrefix(prefix: String, base: String?) {
        #expect(KubernetesSettings.annotationBase(prefix) == base)
    }

    @Test func podCIDRsChooseTheIPv4Entry() throws {
        var node = try decodeNode(nodeJSON("n", podCIDR: nil, annotations: [:]))
        node.podCIDRs = ["fd00:10:244::/64", "10.244.9.0/24"]
        #expect(try KubeNodes.podSubnet(node).get() == IPv4Prefix("10.244.9.0/24"))
        node.podCIDRs = ["fd00:10:244::/64"]
        #expect(throws: SkippedLease.self) { try KubeNodes.podSubnet(node).get() }
    }

    @Test func ownPublicIP() throws {
        let annotations = try KubeAnnotations()
        let node = try decodeNode(nodeJSON("n", annotations: [:], internalIP: "198.18.0.9"))
        #expect(KubeNodes.publicIP(of: node, configured: nil, annotations: annotations) == IPv4Address("198.18.0.9"))
        #expect(KubeNodes.publicIP(of: node, configured: IPv4Address("198.18.0.1"), annotations: annotations) == IPv4Address("198.18.0.1"))
        let overwritten = try decodeNode(nodeJSON("n", annotations: [flannel + "public-ip-overwrite": "198.18.0.5"], internalIP: "198.18.0.9"))
        #expect(KubeNodes.publicIP(of: overwritten, configured: IPv4Address("198.18.0.1"), annotations: annotations) == IPv4Address("198.18.0.5"))
        // node-public-ip is flanneld's --public-ip from the Node: over the configured one, under the overwrite.
        var stored = try decodeNode(nodeJSON("n", annotations: [flannel + "node-public-ip": "198.18.0.7"], internalIP: "198.18.0.9"))
        #expect(KubeNodes.publicIP(of: stored, configured: IPv4Address("198.18.0.1"), annotations: annotations) == IPv4Address("198.18.0.7"))
        stored.annotations[flannel + "public-ip-overwrite"] = "198.18.0.5"
        #expect(KubeNodes.publicIP(of: stored, configured: IPv4Address("198.18.0.1"), annotations: annotations) == IPv4Address("198.18.0.5"))
        stored.annotations = [flannel + "node-public-ipv6": "2001:2::7"]
        #expect(KubeNodes.publicIPv6(of: stored, configured: IPv6Address("2001:2::1"), annotations: annotations) == IPv6Address("2001:2::7"))
        #expect(KubeNodes.publicIP(of: stored, configured: nil, annotations: annotations) == IPv4Address("198.18.0.9"))
    }

    @Test func configSection() throws {
        let config = try AgentConfig.parse(Data(#"""
            {"node": "n1", "kubernetes": {"apiURL": "https://10.96.0.1:443", "annotationPrefix": "example.com/flannel",
             "netConfPath": "/etc/kube-flannel/net-conf.json", "setNodeNetworkUnavailable": false}}
            """#.utf8), source: "agent.json")
        #expect(config.kubernetes == KubernetesSettings(apiURL: "https://10.96.0.1:443", annotationPrefix: "example.com/flannel",
                                                        setNodeNetworkUnavailable: false))
        #expect(config.network == nil && config.etcd == nil && config.nodes.isEmpty)
        let defaults = try AgentConfig.parse(Data(#"{"kubernetes": {}}"#.utf8), source: "agent.json")
        #expect(defaults.kubernetes == KubernetesSettings())
        for (text, field) in [(#"{"kubernetes": {"annotationPrefix": "x"}}"#, "annotationPrefix"),
                              (#"{"kubernetes": {}, "etcd": {}}"#, "kubernetes"),
                              (#"{"kubernetes": {"netConfPath": "relative"}}"#, "netConfPath"),
                              (#"{"kubernetes": {"bogus": 1}}"#, "bogus"),
                              (#"{"kubernetes": {}, "network": {"Network": "10.244.0.0/16"}}"#, "network")] {
            let error = #expect(throws: ConfigError.self) { try AgentConfig.parse(Data(text.utf8), source: "agent.json") }
            #expect(error?.field.contains(field) == true, "\(String(describing: error))")
        }
    }

    /// The configuration deploy/kube-daemonset.yaml mounts is one the agent reads.
    @Test func theDaemonSetsConfigurationParses() throws {
        let yaml = try String(contentsOfFile: packageRoot + "/deploy/kube-daemonset.yaml", encoding: .utf8)
        var block: [String] = [], inside = false
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasSuffix("config.json: |") { inside = true; continue }
            if inside {
                guard line.hasPrefix("    ") else { break }
                block.append(String(line.dropFirst(4)))
            }
        }
        let config = try AgentConfig.parse(Data(block.joined(separator: "\n").utf8), source: "kube-daemonset.yaml config.json")
        #expect(config.kubernetes == KubernetesSettings())
        #expect(config.publicIP == nil)
    }
}
