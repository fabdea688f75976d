import Foundation
import Model
import Reconcile
import Registry
import Testing

/// `sync` reads the kernel for this node while the inventory's other nodes are
/// validated: the configuration is read in two steps (`AgentConfig.stage`, then
/// `validated()`), and the kernel is read for a provisional view that the whole
/// configuration must confirm.
@Suite("Configuration read in two steps: the same result, the same errors, a guess the real view confirms")
struct StagedConfigTests {
    static func inventory(_ nodes: [String], top: String = "") -> String {
        """
        {"node": "node-a", \(top)
         "network": {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 7, "Port": 8472}},
         "nodes": [\(nodes.joined(separator: ",\n"))]}
        """
    }

    static let a = #"{"name": "node-a", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24"}"#
    static let b = #"{"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "0e:00:00:00:00:02"}"#

    static let goodFiles: [(String, String)] = [
        ("plain", inventory([a, b])),
        ("this node last", inventory([b, a])),
        ("this node with its own MAC and interface",
         inventory([b, #"{"name": "node-a", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24", "vtepMAC": "0e:00:00:00:00:0a", "interface": "eth7"}"#])),
        ("an interface for every node", inventory([a, b], top: #""interface": "eth3","#)),
        ("null members read as absent", inventory([#"{"name": "node-a", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24", "vtepMAC": null}"#, b])),
    ]

    @Test("stage + validated = parse, and the provisional view is the real one without its peers", arguments: goodFiles)
    func provisionalIsConfirmed(_ name: String, _ text: String) throws {
        let data = Data(text.utf8)
        let whole = try AgentConfig.parse(data, source: "inv.json")
        let staged = try AgentConfig.stage(data, source: "inv.json")
        #expect(try staged.validated() == whole)
        #expect(staged.partial.nodes.isEmpty)
        let (view, interface) = try whole.view(node: "node-a")
        let guess = try #require(staged.provisionalView(node: "node-a"))
        #expect(guess.view.local == view.local)
        #expect(guess.view.network == view.network)
        #expect(guess.view.peers.isEmpty)
        #expect(guess.interface == interface)
    }

    @Test("no guess for a node the file does not list, a local entry that does not read plainly, or etcd")
    func noGuess() throws {
        let staged = try AgentConfig.stage(Data(Self.inventory([Self.a, Self.b]).utf8), source: "inv.json")
        #expect(staged.provisionalView(node: "node-z") == nil)
        let odd = Self.inventory([#"{"name": "node-a", "publicIP": "198.18.0.x", "subnet": "10.244.1.0/24"}"#, Self.b])
        #expect(try AgentConfig.stage(Data(odd.utf8), source: "inv.json").provisionalView(node: "node-a") == nil)
        let unknownKey = Self.inventory([#"{"name": "node-a", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24", "mtu": 1400}"#, Self.b])
        #expect(try AgentConfig.stage(Data(unknownKey.utf8), source: "inv.json").provisionalView(node: "node-a") == nil)
        let etcd = #"{"node": "node-a", "publicIP": "198.18.0.1", "etcd": {"endpoints": ["http://127.0.0.1:2379"]}}"#
        let staged2 = try AgentConfig.stage(Data(etcd.utf8), source: "etcd.json")
        #expect(staged2.provisionalView(node: "node-a") == nil)
        #expect(try staged2.validated() == AgentConfig.parse(Data(etcd.utf8), source: "etcd.json"))
    }

    /// A guess can be read from an entry the whole file refutes; `validated()`
    /// still fails with `parse`'s error, which `sync` reports before anything it read.
    static let refuted: [(String, String)] = [
        ("a peer outside the network", inventory([a, #"{"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.245.2.0/24"}"#])),
        ("this node's name twice", inventory([a, #"{"name": "node-a", "publicIP": "198.18.0.3", "subnet": "10.244.3.0/24"}"#])),
        ("this node's subnet with host bits", inventory([#"{"name": "node-a", "publicIP": "198.18.0.1", "subnet": "10.244.1.9/24"}"#, b])),
        ("this node's MAC multicast", inventory([#"{"name": "node-a", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24", "vtepMAC": "01:00:00:00:00:01"}"#, b])),
    ]

    @Test("a refuted guess: validated() throws parse's error", arguments: refuted)
    func refutedGuess(_ name: String, _ text: String) throws {
        let data = Data(text.utf8)
        let staged = try AgentConfig.stage(data, source: "inv.json")
        #expect(staged.provisionalView(node: "node-a") != nil)
        var expected: ConfigError?
        do { _ = try AgentConfig.parse(data, source: "inv.json") } catch { expected = error }
        let error = try #require(expected)
        #expect(throws: error) { try staged.validated() }
    }

    @Test("errors before the nodes come from stage, as parse gives them")
    func stageErrors() throws {
        for text in [#"{"network": 1, "nodes": []}"#, #"{"nodes": [{"name": "a"}]}"#, #"{"routeLayout": "x", "nodes": []}"#] {
            var expected: ConfigError?
            do { _ = try AgentConfig.parse(Data(text.utf8), source: "c.json") } catch { expected = error }
            let error = try #require(expected)
            #expect(throws: error) { try AgentConfig.stage(Data(text.utf8), source: "c.json") }
        }
    }
}
