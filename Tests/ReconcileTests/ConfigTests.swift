import Dataplane
import Foundation
import Reconcile
import Registry
import Testing

@Suite("Configuration: every error names the file and the field, and nothing is half-read")
struct ConfigTests {
    static let good = """
    {
      "node": "node-a",
      "network": {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}},
      "nodes": [
        {"name": "node-a", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24"},
        {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "0e:00:00:00:00:02"}
      ]
    }
    """

    @Test("the example of the issue parses, with flannel's defaults filled in")
    func good() throws {
        let config = try AgentConfig.parse(Data(Self.good.utf8), source: "inv.json")
        #expect(config.node == "node-a")
        #expect(config.network?.subnetMin == IPv4Address("10.244.1.0"))
        #expect(config.network?.subnetMax == IPv4Address("10.244.255.0"))
        #expect(config.network?.port == 8472)
        let (view, _) = try config.view(node: "node-a")
        #expect(view.peers.map(\.name) == ["node-b"])
        #expect(view.peers[0].mac(vni: 1) == MACAddress("0e:00:00:00:00:02"))
        #expect(view.local.mac(vni: 1) == MACAddress("0e:01:c6:12:00:01"))
    }

    @Test("flannel's net-conf.json defaults: SubnetLen, Port 0, VNI 0")
    func flannelDefaults() throws {
        let config = try NetworkConfig.parse(Data(#"{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "Port": 0, "VNI": 0}}"#.utf8),
                                             source: "net-conf.json")
        #expect(config.subnetLen == 24)
        #expect(config.port == 8472)
        #expect(config.vni == 1)
        #expect(config.deviceName == "flannel.1")
        let small = try NetworkConfig.parse(Data(#"{"Network": "10.1.0.0/25"}"#.utf8), source: "x")
        #expect(small.subnetLen == 26)
    }

    struct Bad: Sendable, CustomStringConvertible {
        var json: String
        var error: String
        var description: String { error }
    }

    static func nodes(_ extra: String) -> String {
        """
        {"node": "node-a", "network": {"Network": "10.244.0.0/16", "SubnetLen": 24},
         "nodes": [{"name": "node-a", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24"}\(extra)]}
        """
    }

    static let bad: [Bad] = [
        Bad(json: "{", error: "inv.json: invalid JSON"),
        Bad(json: "[]", error: "inv.json: expected a JSON object at the top level"),
        Bad(json: #"{"nodes": []}"#, error: "inv.json: network: is required"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16"}}"#, error: "inv.json: nodes: is required"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16"}, "nodes": []}"#, error: "inv.json: nodes: is empty"),
        Bad(json: #"{"network": {"Network": "10.244.0.1/16"}, "nodes": []}"#, error: "inv.json: network.Network: 10.244.0.1/16 has host bits set"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "SubnetLen": 8}, "nodes": []}"#,
            error: "inv.json: network.SubnetLen: 8 must be longer than the network's /16"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}, "nodes": []}"#,
            error: "inv.json: network.Backend.Type: \"udp\" is not supported"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"VNI": "one"}}, "nodes": []}"#,
            error: "inv.json: network.Backend.VNI: must be a whole number"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16"}, "nodse": []}"#, error: "inv.json: nodse: unknown key"),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2"}"#), error: "inv.json: nodes[1].subnet: is required"),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.300", "subnet": "10.244.2.0/24"}"#),
            error: "inv.json: nodes[1].publicIP: \"198.18.0.300\" is not an IPv4 address"),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.245.2.0/24"}"#),
            error: "inv.json: nodes[1].subnet: 10.245.2.0/24 is outside the network 10.244.0.0/16"),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/25"}"#),
            error: "inv.json: nodes[1].subnet: 10.244.2.0/25 is a /25; the network's SubnetLen is 24"),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.1/24"}"#),
            error: "inv.json: nodes[1].subnet: 10.244.2.1/24 has host bits set"),
        Bad(json: nodes(#", {"name": "node-a", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24"}"#),
            error: "inv.json: nodes[1].name: \"node-a\" is already used by node \"node-a\" (nodes[0])"),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.1.0/24"}"#),
            error: "inv.json: nodes[1].subnet: 10.244.1.0/24 is already used by node \"node-a\""),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.1", "subnet": "10.244.2.0/24"}"#),
            error: "inv.json: nodes[1].publicIP: 198.18.0.1 is already used by node \"node-a\""),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "0e:zz:00:00:00:02"}"#),
            error: "inv.json: nodes[1].vtepMAC: \"0e:zz:00:00:00:02\" is not a MAC address"),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "01:00:00:00:00:02"}"#),
            error: "inv.json: nodes[1].vtepMAC: 01:00:00:00:00:02 is not a unicast MAC"),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "0e:01:c6:12:00:01"}"#),
            error: "inv.json: nodes[1].vtepMAC: 0e:01:c6:12:00:01 is already used by node \"node-a\""),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "colour": "red"}"#),
            error: "inv.json: nodes[1].colour: unknown key"),
    ]

    @Test("each bad configuration is refused with the file and field named", arguments: bad)
    func refused(_ bad: Bad) {
        do {
            _ = try AgentConfig.parse(Data(bad.json.utf8), source: "inv.json")
            Issue.record("accepted: \(bad.json)")
        } catch {
            #expect(error.description.hasPrefix(bad.error), "got: \(error.description)")
        }
    }

    @Test("this node missing from the inventory is an error naming the node")
    func nodeMissing() throws {
        let config = try AgentConfig.parse(Data(Self.good.utf8), source: "inv.json")
        #expect(throws: ConfigError.self) { try config.view(node: "node-z") }
        do { _ = try config.view(node: "node-z") } catch {
            #expect(error.description.contains("\"node-z\" is not listed"))
        }
    }

    @Test("a missing file says so")
    func missingFile() {
        do { _ = try AgentConfig.load(path: "/nonexistent/inv.json"); Issue.record("loaded") } catch {
            #expect(error.description == "/nonexistent/inv.json: the configuration file does not exist")
        }
    }
}
