import Foundation
import Testing
import TestSupport

/// The hostile-inventory family of the standing suite (issue 9): bad files, bad
/// JSON, bad network configurations, bad nodes, bad flags, each run as `sync` and
/// as `diff` against one host that a good inventory programmed once. Every case
/// must exit as expected, name the file or field at fault, and leave the kernel
/// byte for byte as it was.
@Suite("hostile inventories: refused with the field named, the kernel untouched", kernelTests, .blocking)
struct HostileInventoryTests {
    enum Family: String, CaseIterable, Sendable {
        case json = "JSON syntax", types = "wrong types", network = "network config", nodes, files, cli = "CLI flags", peers = "skipped peers"
    }

    /// What the case runs against.
    enum Input: Sendable {
        /// A file with this text.
        case text(String)
        /// A file with these bytes.
        case bytes([UInt8])
        /// A shell script that makes `$F` (the path passed to --config) what it should be.
        case script(String)
    }

    struct Case: Sendable, CustomStringConvertible {
        var family: Family
        var name: String
        var input: Input
        /// Exit status of both `sync` and `diff`: 1 bad configuration, 3 peers skipped, 64 bad usage.
        var status: Int32 = 1
        /// What the error output must contain (the file, the field, the reason).
        var message: String
        /// Extra arguments.
        var arguments: String = ""
        /// A command the agent runs under (e.g. without CAP_DAC_OVERRIDE).
        var wrapper: String = ""
        /// Set while the agent does not yet do what the case expects (the kernel must
        /// still be left as it was); a fix makes the case fail until this is removed.
        var knownIssue: String? = nil
        var description: String { "\(family.rawValue): \(name)" }
    }

    // MARK: the good inventory and its variants

    static let goodNetwork = #"{"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}"#
    static let goodNodes = [
        #"{"name": "node-1", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24"}"#,
        #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24"}"#,
        #"{"name": "node-3", "publicIP": "198.19.0.3", "subnet": "10.244.3.0/24", "vtepMAC": "0e:00:00:00:00:03"}"#,
        #"{"name": "node-4", "publicIP": "198.19.0.4", "subnet": "10.244.4.0/24"}"#,
    ]

    static func doc(network: String = goodNetwork, nodes: [String] = goodNodes, top: String = #""node": "node-1", "#) -> String {
        "{\(top)\"network\": \(network),\n \"nodes\": [\n  \(nodes.joined(separator: ",\n  "))\n]}\n"
    }

    static let good = doc()

    /// The good inventory with `network` replaced.
    static func net(_ network: String) -> Input { .text(doc(network: network)) }
    /// The good inventory with Backend's inside replaced.
    static func backend(_ inner: String) -> Input {
        .text(doc(network: #"{"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"# + inner + "}}"))
    }
    /// The good inventory with one more node.
    static func extra(_ node: String) -> Input { .text(doc(nodes: goodNodes + [node])) }
    /// The good inventory with node `index` replaced.
    static func node(_ index: Int, _ text: String) -> Input {
        var nodes = goodNodes
        nodes[index] = text
        return .text(doc(nodes: nodes))
    }
    /// The good inventory with more top-level members.
    static func top(_ members: String) -> Input { .text(doc(top: #""node": "node-1", "# + members + ", ")) }
    /// The good inventory with `old` replaced by `new` once.
    static func edit(_ old: String, _ new: String) -> Input {
        precondition(good.contains(old), old)
        return .text(good.replacingOccurrences(of: old, with: new))
    }

    // MARK: the cases

    static let json: [Case] = {
        let bytes = Array(good.utf8)
        func c(_ name: String, _ input: Input, _ message: String) -> Case { Case(family: .json, name: name, input: input, message: message) }
        return [
            c("truncated in the middle", .bytes(Array(bytes.prefix(bytes.count / 2))), "inv.json: invalid JSON at line 4, column 21 (in nodes[1]): the document ends where a key was expected (truncated?)"),
            c("truncated: the last brace missing", .text(String(good.dropLast(2))), "an object opened at line 1, column 1 is not closed"),
            c("trailing garbage", .text(good + "x"), "inv.json: invalid JSON at line 8, column 1: unexpected \"x\" after the end of the document"),
            c("two documents", .text(good + good), "inv.json: invalid JSON at line 8, column 1: unexpected \"{\" after the end"),
            c("a UTF-8 byte order mark", .bytes([0xef, 0xbb, 0xbf] + bytes), "inv.json: invalid JSON at line 1, column 1: starts with a UTF-8 byte order mark"),
            c("a raw NUL inside a string", edit("node-4\"", "node-4\u{0}\""), "(in nodes[3].name): a raw control character \\u0000 inside a string"),
            c("a raw NUL between tokens", edit("\"nodes\"", "\u{0}\"nodes\""), "inv.json: invalid JSON at line 2, column 2: expected a key in double quotes, found \"\\u0000\""),
            c("a raw ESC inside a string", edit("node-2\"", "node-2\u{1b}[2J\""), "a raw control character \\u001b inside a string"),
            c("nesting 100,000 deep", .text(#"{"node": "# + String(repeating: "[", count: 100_000)), "nested deeper than 64 levels"),
            c("nesting 70 deep inside nodes", .text(doc(nodes: [String(repeating: "[", count: 70) + String(repeating: "]", count: 70)])),
              "(in nodes[0]"),
            c("single quotes", edit(#""node": "node-1""#, #"'node': "node-1""#), "expected a key in double quotes, found \"'\""),
            c("a trailing comma", edit("\"10.244.4.0/24\"}", "\"10.244.4.0/24\"},"), "(in nodes[4]): expected a value, found \"]\""),
            c("a comment", edit("\"nodes\": [", "\"nodes\": [ // the cluster\n"), "(in nodes[0]): expected a value, found \"/\""),
            c("invalid UTF-8 in a string", .bytes(Array(doc(nodes: goodNodes + [#"{"name": "node-Z", "publicIP": "198.19.0.9", "subnet": "10.244.9.0/24"}"#]).utf8).map { $0 == UInt8(ascii: "Z") ? 0xff : $0 }),
              "(in nodes[4].name): a string that is not valid UTF-8"),
            c("a top-level array", .text("[" + good + "]"), "inv.json: expected a JSON object at the top level, found an array"),
            c("a top-level null", .text("null"), "inv.json: expected a JSON object at the top level, found null"),
            c("white space only", .text("  \n\t\n"), "inv.json: invalid JSON: the document is empty (only white space)"),
            c("NaN", backend(#""Type": "vxlan", "VNI": NaN"#), "(in network.Backend.VNI): expected a value, found \"N\""),
            c("a bad escape", edit("node-2\"", "node-\\x32\""), "\\x is not a JSON escape"),
            c("a leading zero", backend(#""Type": "vxlan", "VNI": 01"#), "a number must not start with 0"),
            c("a huge exponent", backend(#""Type": "vxlan", "VNI": 1e20"#), "inv.json: network.Backend.VNI: 1e20 is out of range 0...16777215"),
            c("an infinite number", backend(#""Type": "vxlan", "VNI": 1e999"#), "inv.json: network.Backend.VNI: 1e999 is out of range 0...16777215"),
            c("400 digits", backend(#""Type": "vxlan", "VNI": "# + String(repeating: "9", count: 400)),
              "inv.json: network.Backend.VNI: 9999999999999999999999999999999999999999... (400 characters) is out of range"),
            c("a fraction", backend(#""Type": "vxlan", "VNI": 1.5"#), "inv.json: network.Backend.VNI: must be a whole number, not 1.5"),
            c("a duplicate top-level key", top(#""node": "node-2""#), "inv.json: node: duplicate key (again at line 1, column 20"),
            c("a duplicate key in a node", node(2, #"{"name": "node-3", "publicIP": "198.19.0.3", "publicIP": "198.19.0.33", "subnet": "10.244.3.0/24"}"#),
              "inv.json: nodes[2].publicIP: duplicate key"),
            c("a duplicate key in Backend", backend(#""Type": "vxlan", "VNI": 1, "VNI": 2"#), "inv.json: network.Backend.VNI: duplicate key"),
            c("a duplicate nodes array", top(#""nodes": []"#), "inv.json: nodes: duplicate key"),
            c("an escaped NUL in a value", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2\u0000", "subnet": "10.244.2.0/24"}"#),
              #"inv.json: nodes[1].publicIP: "198.19.0.2\u0000" is not an IPv4 address"#),
            c("a bidi override in a name", node(1, #"{"name": "node-\u202e2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24"}"#),
              #"inv.json: nodes[1].name: "node-\u202e2" contains a control, invisible"#),
            c("an ANSI escape in a name", node(1, #"{"name": "\u001b[31mnode-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24"}"#),
              #"inv.json: nodes[1].name: "\u001b[31mnode-2" contains a control"#),
        ]
    }()

    static let types: [Case] = {
        func c(_ field: String, _ input: Input, _ message: String) -> Case { Case(family: .types, name: field, input: input, message: "inv.json: \(field): \(message)") }
        let n1 = #""name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24""#
        return [
            c("node", edit(#""node": "node-1""#, #""node": 1"#), "must be a string, not a number (1)"),
            c("network", .text(doc(network: #""10.244.0.0/16""#)), "must be an object, not a string (\"10.244.0.0/16\")"),
            c("nodes", .text(doc().replacingOccurrences(of: "\"nodes\": [", with: "\"nodes\": {\"a\": [").replacingOccurrences(of: "]}\n", with: "]}}\n")),
              "must be an array, not an object"),
            c("nodes[1]", node(1, #""node-2""#), "must be an object, not a string (\"node-2\")"),
            c("network.Network", net(#"{"Network": 10}"#), "must be a string, not a number (10)"),
            c("network.SubnetLen", net(#"{"Network": "10.244.0.0/16", "SubnetLen": "24"}"#), "must be a whole number, not a string (\"24\")"),
            c("network.SubnetMin", net(#"{"Network": "10.244.0.0/16", "SubnetMin": 5}"#), "must be a string, not a number (5)"),
            c("network.SubnetMax", net(#"{"Network": "10.244.0.0/16", "SubnetMax": true}"#), "must be a string, not a boolean (true)"),
            c("network.Backend", net(#"{"Network": "10.244.0.0/16", "Backend": "vxlan"}"#), "must be an object, not a string (\"vxlan\")"),
            c("network.Backend.Type", backend(#""Type": 1"#), "must be a string, not a number (1)"),
            c("network.Backend.VNI", backend(#""VNI": "1""#), "must be a whole number, not a string (\"1\")"),
            c("network.Backend.Port", backend(#""Port": [8472]"#), "must be a whole number, not an array"),
            c("network.Backend.MTU", backend(#""MTU": {}"#), "must be a whole number, not an object"),
            c("network.Backend.DirectRouting", backend(#""DirectRouting": "yes""#), "must be true or false, not a string (\"yes\")"),
            c("nodes[1].name", node(1, #"{"name": 2, "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24"}"#), "must be a string, not a number (2)"),
            c("nodes[1].publicIP", node(1, #"{"name": "node-2", "publicIP": ["198.19.0.2"], "subnet": "10.244.2.0/24"}"#), "must be a string, not an array"),
            c("nodes[1].subnet", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": null}"#), "is required"),
            c("nodes[1].vtepMAC", node(1, "{\(n1), \"vtepMAC\": 12}"), "must be a string, not a number (12)"),
            c("nodes[1].interface", node(1, "{\(n1), \"interface\": false}"), "must be a string, not a boolean (false)"),
            c("routeLayout", top(#""routeLayout": 1"#), "must be a string, not a number (1)"),
            c("device", top(#""device": 1"#), "must be a string, not a number (1)"),
            c("interface", top(#""interface": {}"#), "must be a string, not an object"),
            c("ipMasq", top(#""ipMasq": "true""#), "must be true or false, not a string (\"true\")"),
            c("resyncInterval", top(#""resyncInterval": "60""#), "must be a whole number, not a string (\"60\")"),
            c("metricsAddress", top(#""metricsAddress": 9472"#), "must be a string, not a number (9472)"),
            c("leaseTTL", top(#""leaseTTL": 1.5"#), "must be a whole number, not 1.5"),
        ]
    }()

    static let network: [Case] = {
        func c(_ name: String, _ input: Input, _ message: String) -> Case { Case(family: .network, name: name, input: input, message: "inv.json: \(message)") }
        return [
            c("0.0.0.0/0 with SubnetLen 1 (item 9)", net(#"{"Network": "0.0.0.0/0", "SubnetLen": 1}"#),
              "network.Network: 0.0.0.0/0 overlaps 0.0.0.0/8 (\"this network\""),
            c("0.0.0.0/0", net(#"{"Network": "0.0.0.0/0"}"#), "network.Network: 0.0.0.0/0 overlaps 0.0.0.0/8"),
            c("0.0.0.0/1", net(#"{"Network": "0.0.0.0/1"}"#), "network.Network: 0.0.0.0/1 overlaps 0.0.0.0/8"),
            c("loopback", net(#"{"Network": "127.0.0.0/8"}"#), "network.Network: 127.0.0.0/8 overlaps 127.0.0.0/8 (loopback"),
            c("inside loopback", net(#"{"Network": "127.1.0.0/16"}"#), "network.Network: 127.1.0.0/16 overlaps 127.0.0.0/8 (loopback"),
            c("multicast", net(#"{"Network": "224.0.0.0/4"}"#), "network.Network: 224.0.0.0/4 overlaps 224.0.0.0/4 (multicast)"),
            c("containing multicast", net(#"{"Network": "192.0.0.0/2"}"#), "network.Network: 192.0.0.0/2 overlaps 224.0.0.0/4 (multicast)"),
            c("reserved 240/4", net(#"{"Network": "240.0.0.0/16"}"#), "network.Network: 240.0.0.0/16 overlaps 240.0.0.0/4 (reserved"),
            c("link-local", net(#"{"Network": "169.254.0.0/16"}"#), "network.Network: 169.254.0.0/16 overlaps 169.254.0.0/16 (link-local"),
            c("a /29", net(#"{"Network": "10.244.0.0/29"}"#), "network.Network: 10.244.0.0/29 is too small"),
            c("host bits", net(#"{"Network": "10.244.0.1/16"}"#), "network.Network: 10.244.0.1/16 has host bits set (did you mean 10.244.0.0/16?)"),
            c("no length", net(#"{"Network": "10.244.0.0"}"#), "network.Network: \"10.244.0.0\" is not an IPv4 prefix"),
            c("length 33", net(#"{"Network": "10.244.0.0/33"}"#), "network.Network: \"10.244.0.0/33\" is not an IPv4 prefix"),
            c("IPv6", net(#"{"Network": "fd00::/48"}"#), "network.Network: \"fd00::/48\" is not an IPv4 prefix"),
            c("missing", net(#"{"SubnetLen": 24}"#), "network.Network: is required"),
            c("SubnetLen 31", net(#"{"Network": "10.244.0.0/16", "SubnetLen": 31}"#), "network.SubnetLen: 31 is too long: at most 30"),
            c("SubnetLen 17 of a /16", net(#"{"Network": "10.244.0.0/16", "SubnetLen": 17}"#),
              "network.SubnetLen: 17 leaves no room: the network /16 must hold at least four subnets, so SubnetLen must be at least 18"),
            c("SubnetLen 16 of a /16", net(#"{"Network": "10.244.0.0/16", "SubnetLen": 16}"#), "network.SubnetLen: 16 leaves no room"),
            c("SubnetLen 40", net(#"{"Network": "10.244.0.0/16", "SubnetLen": 40}"#), "network.SubnetLen: 40 is out of range 0...32"),
            c("SubnetLen -24", net(#"{"Network": "10.244.0.0/16", "SubnetLen": -24}"#), "network.SubnetLen: -24 is out of range 0...32"),
            c("SubnetMin outside", net(#"{"Network": "10.244.0.0/16", "SubnetMin": "10.245.1.0"}"#), "network.SubnetMin: 10.245.1.0 is outside the network 10.244.0.0/16"),
            c("SubnetMin unaligned", net(#"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.5"}"#),
              "network.SubnetMin: 10.244.1.5 is not the start of a /24 subnet"),
            c("SubnetMax unaligned", net(#"{"Network": "10.244.0.0/16", "SubnetMax": "10.244.200.1"}"#), "network.SubnetMax: 10.244.200.1 is not the start"),
            c("SubnetMin above SubnetMax", net(#"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.9.0", "SubnetMax": "10.244.8.0"}"#),
              "network.SubnetMin: 10.244.9.0 is above SubnetMax 10.244.8.0"),
            c("SubnetMin not an address", net(#"{"Network": "10.244.0.0/16", "SubnetMin": "ten"}"#), "network.SubnetMin: \"ten\" is not an IPv4 address"),
            c("a node outside SubnetMin...SubnetMax", net(#"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.2.0"}"#),
              "nodes[0].subnet: 10.244.1.0/24 is outside SubnetMin...SubnetMax (10.244.2.0...10.244.255.0)"),
            c("Backend ipsec", backend(#""Type": "ipsec""#), "network.Backend.Type: \"ipsec\" is flannel's ipsec backend, which vxlan-agent does not implement"),
            c("Backend ipip", backend(#""Type": "ipip""#), "network.Backend.Type: \"ipip\" is flannel's ipip backend"),
            c("host-gw with an MTU", backend(#""Type": "host-gw", "MTU": 1400"#), "network.Backend.MTU: applies to the vxlan backend only"),
            c("Backend wireguard", backend(#""Type": "wireguard""#), "network.Backend.Type: \"wireguard\" is flannel's wireguard backend"),
            c("Backend empty type", backend(#""Type": """#), "network.Backend.Type: \"\" is not a flannel backend"),
            c("Backend unknown", backend(#""Type": "vxlan2""#), "network.Backend.Type: \"vxlan2\" is not a flannel backend"),
            c("VNI 2^24", backend(#""Type": "vxlan", "VNI": 16777216"#), "network.Backend.VNI: 16777216 is out of range 0...16777215"),
            c("VNI -1", backend(#""Type": "vxlan", "VNI": -1"#), "network.Backend.VNI: -1 is out of range 0...16777215"),
            c("Port 65536", backend(#""Type": "vxlan", "Port": 65536"#), "network.Backend.Port: 65536 is out of range 0...65535"),
            c("Port -1", backend(#""Type": "vxlan", "Port": -1"#), "network.Backend.Port: -1 is out of range 0...65535"),
            c("MTU 100", backend(#""Type": "vxlan", "MTU": 100"#), "network.Backend.MTU: 100 is below the IPv4 minimum of 576"),
            c("MTU 70000", backend(#""Type": "vxlan", "MTU": 70000"#), "network.Backend.MTU: 70000 is out of range 0...65535"),
            c("MTU 65500", backend(#""Type": "vxlan", "MTU": 65500"#), "network.Backend.MTU: 65500 is above 65485"),
            c("GBP", backend(#""Type": "vxlan", "GBP": true"#), "network.Backend.GBP: true is not supported"),
            c("Learning", backend(#""Type": "vxlan", "Learning": true"#), "network.Backend.Learning: true is not supported"),
            c("a misspelt network key", net(#"{"Network": "10.244.0.0/16", "Subnetlen": 24}"#), "network.Subnetlen: unknown key (did you mean \"SubnetLen\"?"),
            c("a misspelt Backend key", backend(#""Type": "vxlan", "vni": 1"#), "network.Backend.vni: unknown key (did you mean \"VNI\"?"),
            c("an unknown Backend key", backend(#""Type": "vxlan", "Flood": true"#), "network.Backend.Flood: unknown key (expected one of:"),
            Case(family: .network, name: "a network holding this node's publicIP",
                 input: .text(doc(network: #"{"Network": "198.18.0.0/15", "SubnetLen": 24}"#, nodes: [
                    #"{"name": "node-1", "publicIP": "198.18.0.1", "subnet": "198.19.1.0/24"}"#,
                    #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "198.19.2.0/24"}"#])),
                 message: "publicIP 198.18.0.1 of this node node-1 (nodes[0]) is inside the pod network 198.18.0.0/15"),
            // Was: exit 3 with the kernel's EINVAL on every sync, forever.
            Case(family: .network, name: "MTU 9000 over a 1500 underlay", input: backend(#""Type": "vxlan", "MTU": 9000"#),
                 message: "Backend.MTU 9000 is more than the underlay eth0 carries"),
            // Dual stack: every node needs its IPv6 half.
            c("EnableIPv6 and a node without its IPv6 half",
              .text(doc(network: #"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}"#,
                        nodes: goodNodes)),
              "nodes[0].subnetV6: is required: the network is dual stack (EnableIPv6)"),
            c("EnableIPv4 false without IPv6", net(#"{"Network": "10.244.0.0/16", "EnableIPv4": false}"#),
              "network.EnableIPv4: false needs \"EnableIPv6\": true"),
        ]
    }()

    static let nodes: [Case] = {
        func c(_ name: String, _ input: Input, _ message: String) -> Case { Case(family: .nodes, name: name, input: input, message: "inv.json: \(message)") }
        return [
            c("no name", node(1, #"{"publicIP": "198.19.0.2", "subnet": "10.244.2.0/24"}"#), "nodes[1].name: is required"),
            c("an empty name", node(1, #"{"name": "", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24"}"#), "nodes[1].name: must not be empty"),
            c("a 300-character name", node(1, #"{"name": ""# + String(repeating: "n", count: 300) + #"", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24"}"#),
              "nodes[1].name: is 300 characters long: at most 253"),
            c("a name with a NUL", node(1, #"{"name": "node\u0000-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24"}"#),
              #"nodes[1].name: "node\u0000-2" contains a control"#),
            c("a duplicate name", node(3, #"{"name": "node-2", "publicIP": "198.19.0.4", "subnet": "10.244.4.0/24"}"#),
              "nodes[3].name: \"node-2\" is already used by node \"node-2\" (nodes[1])"),
            c("no publicIP", node(1, #"{"name": "node-2", "subnet": "10.244.2.0/24"}"#), "nodes[1].publicIP: is required"),
            c("publicIP 198.19.0.300", node(1, #"{"name": "node-2", "publicIP": "198.19.0.300", "subnet": "10.244.2.0/24"}"#),
              "nodes[1].publicIP: \"198.19.0.300\" is not an IPv4 address"),
            c("publicIP IPv6", node(1, #"{"name": "node-2", "publicIP": "fd00::2", "subnet": "10.244.2.0/24"}"#),
              "nodes[1].publicIP: \"fd00::2\" is not an IPv4 address"),
            c("publicIP with a port", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2:8472", "subnet": "10.244.2.0/24"}"#),
              "nodes[1].publicIP: \"198.19.0.2:8472\" is not an IPv4 address"),
            c("a duplicate publicIP", node(3, #"{"name": "node-4", "publicIP": "198.19.0.2", "subnet": "10.244.4.0/24"}"#),
              "nodes[3].publicIP: 198.19.0.2 is already used by node \"node-2\" (nodes[1])"),
            c("no subnet", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2"}"#), "nodes[1].subnet: is required"),
            c("a subnet without length", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0"}"#),
              "nodes[1].subnet: \"10.244.2.0\" is not an IPv4 prefix"),
            c("a subnet with host bits", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.1/24"}"#),
              "nodes[1].subnet: 10.244.2.1/24 has host bits set"),
            c("a /25 subnet", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/25"}"#),
              "nodes[1].subnet: 10.244.2.0/25 is a /25; the network's SubnetLen is 24"),
            c("a /16 subnet (overlaps all)", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.0.0/16"}"#),
              "nodes[1].subnet: 10.244.0.0/16 is a /16; the network's SubnetLen is 24"),
            c("a subnet outside the network", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.245.2.0/24"}"#),
              "nodes[1].subnet: 10.245.2.0/24 is outside the network 10.244.0.0/16"),
            c("a duplicate subnet", node(3, #"{"name": "node-4", "publicIP": "198.19.0.4", "subnet": "10.244.1.0/24"}"#),
              "nodes[3].subnet: 10.244.1.0/24 is already used by node \"node-1\" (nodes[0])"),
            c("a bad MAC", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "0e:zz:00:00:00:02"}"#),
              "nodes[1].vtepMAC: \"0e:zz:00:00:00:02\" is not a MAC address"),
            c("a short MAC", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "0e:00:00:00:02"}"#),
              "nodes[1].vtepMAC: \"0e:00:00:00:02\" is not a MAC address"),
            c("a multicast MAC", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "01:00:5e:00:00:02"}"#),
              "nodes[1].vtepMAC: 01:00:5e:00:00:02 is not a unicast MAC"),
            c("an all-zero MAC", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24", "vtepMAC": "00:00:00:00:00:00"}"#),
              "nodes[1].vtepMAC: 00:00:00:00:00:00 is not a unicast MAC"),
            c("a duplicate MAC", node(3, #"{"name": "node-4", "publicIP": "198.19.0.4", "subnet": "10.244.4.0/24", "vtepMAC": "0e:00:00:00:00:03"}"#),
              "nodes[3].vtepMAC: 0e:00:00:00:00:03 is already used by node \"node-3\" (nodes[2])"),
            c("an interface with a slash", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24", "interface": "eth/0"}"#),
              "nodes[1].interface: \"eth/0\" is not a valid interface name"),
            c("a 16-byte interface", node(1, #"{"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.2.0/24", "interface": "abcdefghijklmnop"}"#),
              "nodes[1].interface: \"abcdefghijklmnop\" is not a valid interface name"),
            c("a misspelt node key", node(1, #"{"name": "node-2", "publicIp": "198.19.0.2", "subnet": "10.244.2.0/24"}"#),
              "nodes[1].publicIp: unknown key (did you mean \"publicIP\"?"),
            c("nodes empty", .text(doc(nodes: [])), "nodes: is empty: list at least this node"),
            c("nodes missing", .text(#"{"node": "node-1", "network": "# + goodNetwork + "}"), "nodes: is required"),
            c("this node not listed", edit(#""node": "node-1""#, #""node": "node-z""#), "nodes: this node \"node-z\" is not listed (nodes: node-1, node-2, node-3, node-4)"),
            c("an unknown top-level key", top(#""nodse": []"#), "nodse: unknown key (expected one of:"),
            c("a misspelt top-level key", top(#""routelayout": "classic""#), "routelayout: unknown key (did you mean \"routeLayout\"?"),
            c("etcd and nodes", top(#""etcd": {}"#), "etcd: cannot be used with \"nodes\": choose one registry"),
            c("routeLayout bogus", top(#""routeLayout": "bogus""#), "routeLayout: \"bogus\" is not one of auto, nexthop, classic"),
            c("device with a space", top(#""device": "flannel 1""#), "device: \"flannel 1\" is not a valid interface name"),
            c("device ..", top(#""device": "..""#), "device: \"..\" is not a valid interface name"),
            Case(family: .nodes, name: "device eth0 (the underlay)", input: top(#""device": "eth0""#),
                 message: "eth0 exists and is a veth device, not VXLAN; the agent will not touch it"),
            Case(family: .nodes, name: "device lo", input: top(#""device": "lo""#),
                 message: "lo exists and is not a VXLAN device; the agent will not touch it"),
            c("metricsAddress bogus", top(#""metricsAddress": "bogus""#), "metricsAddress: \"bogus\" is not IPv4:port"),
            c("a relative subnetFile", top(#""subnetFile": "subnet.env""#), "subnetFile: \"subnet.env\" must be an absolute path"),
            // The underlay: refused before anything is written (Syncer's checks, through the CLI).
            Case(family: .nodes, name: "interface lo (item 9)", input: top(#""interface": "lo""#),
                 message: "interface lo (the underlay of node node-1) is a loopback device"),
            Case(family: .nodes, name: "an interface that does not exist", input: top(#""interface": "nope0""#),
                 message: "interface nope0 (the underlay of node node-1) does not exist"),
        ]
    }()

    static let peers: [Case] = {
        func c(_ name: String, _ ip: String, _ reason: String) -> Case {
            Case(family: .peers, name: name, input: extra(#"{"name": "node-9", "publicIP": ""# + ip + #"", "subnet": "10.244.9.0/24"}"#),
                 status: 3, message: "peer node-9 (nodes[4]): \(reason)")
        }
        return [
            c("a loopback publicIP", "127.0.0.9", "publicIP 127.0.0.9 is loopback"),
            c("a multicast publicIP", "224.0.0.9", "publicIP 224.0.0.9 is multicast"),
            c("publicIP 0.0.0.0", "0.0.0.0", "publicIP 0.0.0.0 is not a unicast address"),
            c("publicIP 255.255.255.255", "255.255.255.255", "publicIP 255.255.255.255 is not a unicast address"),
            c("a reserved publicIP", "240.0.0.9", "publicIP 240.0.0.9 is not a unicast address"),
            c("a publicIP inside the pod network (item 5)", "10.244.77.5", "publicIP 10.244.77.5 is inside the pod network 10.244.0.0/16"),
            c("the underlay's broadcast address", "198.18.0.255", "publicIP 198.18.0.255 is the broadcast address of the underlay's subnet 198.18.0.0/24"),
            c("the underlay's network address", "198.18.0.0", "publicIP 198.18.0.0 is the network address of the underlay's subnet 198.18.0.0/24"),
        ]
    }()

    static let files: [Case] = {
        func c(_ name: String, _ script: String, _ message: String, wrapper: String = "") -> Case {
            Case(family: .files, name: name, input: .script(script), message: message, wrapper: wrapper)
        }
        let goodFile = "cat > \"$D/good.json\" <<'EOF'\n\(good)EOF\n"
        return [
            c("missing", "F=$D/absent.json", "absent.json: the configuration file does not exist"),
            c("a directory", "mkdir -p $D/dir.json; F=$D/dir.json", "dir.json: the configuration file is a directory, not a file"),
            c("a symlink to itself", "ln -sfn $D/loop.json $D/loop.json; F=$D/loop.json",
              "loop.json: the configuration file cannot be opened: a symbolic link loop (ELOOP"),
            c("a symlink loop of two", "ln -sfn $D/b.json $D/a.json; ln -sfn $D/a.json $D/b.json; F=$D/a.json",
              "a.json: the configuration file cannot be opened: a symbolic link loop (ELOOP"),
            c("a dangling symlink", "ln -sfn $D/gone.json $D/dangling.json; F=$D/dangling.json",
              "dangling.json: the configuration file is a symbolic link to \"", ),
            c("unreadable (mode 000, root without CAP_DAC_OVERRIDE)", goodFile + "cp $D/good.json $D/locked.json; chmod 000 $D/locked.json; F=$D/locked.json",
              "locked.json: the configuration file cannot be read: permission denied (EACCES)",
              wrapper: "setpriv --bounding-set=-dac_override,-dac_read_search"),
            c("empty", ": > $D/empty.json; F=$D/empty.json", "empty.json: the configuration file is empty (0 bytes)"),
            c("huge (100 MiB)", "truncate -s 100M $D/huge.json; F=$D/huge.json",
              "huge.json: the configuration file is 104857600 bytes, larger than the limit of 64 MiB"),
            c("/dev/null", "F=/dev/null", "/dev/null: the configuration file is empty (0 bytes)"),
            c("a path through a file", goodFile + "F=$D/good.json/inv.json", "good.json/inv.json: the configuration file cannot be opened: a component of the path is not a directory (ENOTDIR)"),
            c("a FIFO without a writer", "rm -f $D/fifo.json; mkfifo $D/fifo.json; F=$D/fifo.json", "fifo.json: the configuration file is empty (0 bytes)"),
        ]
    }()

    static let cli: [Case] = {
        func c(_ name: String, _ arguments: String, _ message: String, status: Int32 = 64) -> Case {
            Case(family: .cli, name: name, input: .text(good), status: status, message: message, arguments: arguments)
        }
        return [
            c("--node of no node", "--node node-z", "inv.json: nodes: this node \"node-z\" is not listed", status: 1),
            c("--node with a newline", "--node $'node-1\\nx'", "inv.json: nodes: this node \"node-1\\nx\" is not listed", status: 1),
            c("--node empty", "--node ''", "--node must not be empty"),
            c("--route-layout bogus", "--route-layout bogus", "--route-layout must be auto, nexthop or classic"),
            c("--route-layout empty", "--route-layout ''", "--route-layout must be auto, nexthop or classic"),
            c("--lock-timeout nan", "--lock-timeout nan", "--lock-timeout must be a number of seconds from 0 to 86400"),
            c("--lock-timeout -1", "--lock-timeout=-1", "--lock-timeout must be a number of seconds from 0 to 86400"),
            c("--lock-timeout inf", "--lock-timeout inf", "--lock-timeout must be a number of seconds from 0 to 86400"),
            c("--node in another case", "--node NODE-1", "inv.json: nodes: this node \"NODE-1\" is not listed", status: 1),
            c("--output xml", "--output xml", "--output"),
            c("an unknown flag", "--bogus", "--bogus"),
        ]
    }()

    static let all: [Case] = json + types + network + nodes + files + cli + peers

    // MARK: the run

    @Test("at least 80 cases, in every family")
    func tableIsComplete() {
        #expect(Self.all.count >= 80)
        for family in Family.allCases { #expect(Self.all.contains { $0.family == family }, "no case for \(family)") }
        #expect(Set(Self.all.map(\.description)).count == Self.all.count, "case names must be unique")
    }

    @Test("every hostile inventory: sync and diff exit as expected, name the field, and change nothing in the kernel")
    func hostileInventories() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let goodPath = try host.write("good.json", Self.good)
        let first = try host.agent("sync --config \(goodPath)")
        try #require(first.status == 0, "the good inventory must sync: \(first.stdout) \(first.stderr)")
        let before = try host.kernelState()
        try #require(before.contains("flannel.1") && before.contains("10.244.4.0/24"))

        var counts: [Family: Int] = [:]
        for (index, testCase) in Self.all.enumerated() {
            counts[testCase.family, default: 0] += 1
            let dir = "\(host.directory)/case-\(index)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let setup: String
            switch testCase.input {
            case .text(let text):
                try text.write(toFile: "\(dir)/inv.json", atomically: true, encoding: .utf8)
                setup = "F=\(dir)/inv.json"
            case .bytes(let bytes):
                try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/inv.json"))
                setup = "F=\(dir)/inv.json"
            case .script(let script):
                setup = "D=\(dir)\n\(script)"
            }
            for command in ["sync", "diff"] {
                let result = try run("""
                \(setup)
                \(testCase.wrapper) ip netns exec \(host.namespace) \(agentBinary) \(command) --config "$F" \(testCase.arguments) \
                    --lock-file \(host.directory)/sync.lock
                """)
                let output = result.stdout + result.stderr
                if let known = testCase.knownIssue {
                    withKnownIssue("\(testCase) [\(command)]: \(known)") {
                        #expect(result.status == testCase.status && output.contains(testCase.message), "\(output)")
                    }
                    continue
                }
                #expect(result.status == testCase.status, "\(testCase) [\(command)]: exit \(result.status): \(output)")
                #expect(output.contains(testCase.message), "\(testCase) [\(command)]: expected \(testCase.message.debugDescription) in: \(output)")
                #expect(!output.contains("\u{0}") && !output.contains("\u{1b}"), "\(testCase) [\(command)]: raw control characters in: \(output.debugDescription)")
                if testCase.status == 3 {
                    // The rest of the cluster is programmed (and was already): nothing else changed.
                    #expect(output.contains("in sync: nothing to do (3 peers, 1 skipped"), "\(testCase) [\(command)]: \(output)")
                }
            }
            let after = try host.kernelState()
            #expect(after == before, "\(testCase): the kernel changed:\n\(Self.difference(before, after))")
            if after != before {
                // Put it back for the next case.
                _ = try host.agent("sync --config \(goodPath)")
            }
        }
        #expect(counts.values.reduce(0, +) >= 80)
        print("hostile inventories: \(Self.all.count) cases, " + Family.allCases.map { "\($0.rawValue) \(counts[$0] ?? 0)" }.joined(separator: ", "))
    }

    static func difference(_ a: String, _ b: String) -> String {
        let left = Set(a.split(separator: "\n")), right = Set(b.split(separator: "\n"))
        return (left.subtracting(right).map { "- \($0)" } + right.subtracting(left).map { "+ \($0)" }).joined(separator: "\n")
    }

    @Test("item 11: a peer skipped for a foreign route names its protocol as iproute2 does (static, not 4)")
    func skippedPeerProtocolByName() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        try sh("ip -n \(host.namespace) route add 10.244.9.0/24 via 198.18.0.254 proto static")
        let config = try host.write("inv.json", Self.doc(nodes: Self.goodNodes + [#"{"name": "node-9", "publicIP": "198.19.0.9", "subnet": "10.244.9.0/24"}"#]))
        for command in ["sync", "diff"] {
            let result = try host.agent("\(command) --config \(config)")
            #expect(result.status == 3, "\(result.stdout) \(result.stderr)")
            let output = result.stdout + result.stderr
            #expect(output.contains("peer node-9 (nodes[4]): route 10.244.9.0/24 already exists with protocol static"), "\(output)")
            #expect(!output.contains("protocol 4"))
        }
        // The foreign route is still there, untouched, and the other peers are programmed.
        #expect(try host.json("ip -j route show 10.244.9.0/24 proto static").count == 1)
        #expect(try host.json("ip -j route show proto vxlan-agent").count == 3)
    }
}
