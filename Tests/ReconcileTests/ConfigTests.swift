import Foundation
import Model
@testable import Reconcile
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
        // flanneld on Linux keeps an explicit VNI 0 (parseVXLANConfig: the default 1 only when VNI is absent).
        #expect(config.vni == 0)
        #expect(config.deviceName == "flannel.0")
        #expect(try NetworkConfig.parse(Data(#"{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}}"#.utf8), source: "x").vni == 1)
        // flannel: a /24 each where the network holds four of them, else a quarter of the network.
        let small = try NetworkConfig.parse(Data(#"{"Network": "10.1.0.0/25"}"#.utf8), source: "x")
        #expect(small.subnetLen == 27)
        #expect(try NetworkConfig.parse(Data(#"{"Network": "10.1.0.0/22"}"#.utf8), source: "x").subnetLen == 24)
        #expect(try NetworkConfig.parse(Data(#"{"Network": "10.1.0.0/23"}"#.utf8), source: "x").subnetLen == 25)
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
            error: "inv.json: network.SubnetLen: 8 leaves no room: the network /16 must hold at least four subnets"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}, "nodes": []}"#,
            error: "inv.json: network.Backend.Type: \"wireguard\" is flannel's wireguard backend, which vxlan-agent does not implement"),
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

    static let hostile: [Bad] = [
        // Item 9: networks that can never converge.
        Bad(json: #"{"network": {"Network": "0.0.0.0/0", "SubnetLen": 1}, "nodes": []}"#,
            error: "inv.json: network.Network: 0.0.0.0/0 overlaps 0.0.0.0/8"),
        Bad(json: #"{"network": {"Network": "127.0.0.0/8"}, "nodes": []}"#, error: "inv.json: network.Network: 127.0.0.0/8 overlaps 127.0.0.0/8 (loopback"),
        Bad(json: #"{"network": {"Network": "224.0.0.0/8"}, "nodes": []}"#, error: "inv.json: network.Network: 224.0.0.0/8 overlaps 224.0.0.0/4 (multicast)"),
        Bad(json: #"{"network": {"Network": "192.0.0.0/2"}, "nodes": []}"#, error: "inv.json: network.Network: 192.0.0.0/2 overlaps 224.0.0.0/4"),
        Bad(json: #"{"network": {"Network": "169.254.0.0/16"}, "nodes": []}"#, error: "inv.json: network.Network: 169.254.0.0/16 overlaps 169.254.0.0/16 (link-local"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "SubnetLen": 17}, "nodes": []}"#,
            error: "inv.json: network.SubnetLen: 17 leaves no room: the network /16 must hold at least four subnets, so SubnetLen must be at least 18"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "SubnetLen": 31}, "nodes": []}"#, error: "inv.json: network.SubnetLen: 31 is too long"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "SubnetMin": "10.244.9.0", "SubnetMax": "10.244.8.0"}, "nodes": []}"#,
            error: "inv.json: network.SubnetMin: 10.244.9.0 is above SubnetMax 10.244.8.0"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "SubnetMin": "10.244.9.1"}, "nodes": []}"#,
            error: "inv.json: network.SubnetMin: 10.244.9.1 is not the start of a /24 subnet"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Subnetlen": 26}, "nodes": []}"#,
            error: "inv.json: network.Subnetlen: unknown key (did you mean \"SubnetLen\"?"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "vni": 5}}, "nodes": []}"#,
            error: "inv.json: network.Backend.vni: unknown key (did you mean \"VNI\"?"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"Type": "ipip"}}, "nodes": []}"#,
            error: "inv.json: network.Backend.Type: \"ipip\" is flannel's ipip backend, which vxlan-agent does not implement"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw", "VNI": 2}}, "nodes": []}"#,
            error: "inv.json: network.Backend.VNI: applies to the vxlan backend only; host-gw routes"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw", "DirectRouting": true}}, "nodes": []}"#,
            error: "inv.json: network.Backend.DirectRouting: applies to the vxlan backend only"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "GBP": true}}, "nodes": []}"#,
            error: "inv.json: network.Backend.GBP: true is not supported"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "EnableIPv6": true}, "nodes": []}"#,
            error: "inv.json: network.IPv6Network: is required when EnableIPv6 is true"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"MTU": 65500}}, "nodes": []}"#,
            error: "inv.json: network.Backend.MTU: 65500 is above 65485"),
        Bad(json: nodes("").replacingOccurrences(of: #""SubnetLen": 24"#, with: #""SubnetLen": 24, "SubnetMin": "10.244.5.0""#),
            error: "inv.json: nodes[0].subnet: 10.244.1.0/24 is outside SubnetMin...SubnetMax (10.244.5.0...10.244.255.0)"),
        // Item 9: duplicate keys in the file name the key and its path.
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "publicIP": "198.18.0.3", "subnet": "10.244.2.0/24"}"#),
            error: "inv.json: nodes[1].publicIP: duplicate key (again at line 2, column 130;"),
        Bad(json: #"{"node": "a", "node": "b", "network": {"Network": "10.244.0.0/16"}, "nodes": []}"#,
            error: "inv.json: node: duplicate key (again at line 1, column 15"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"VNI": 1, "VNI": 2}}, "nodes": []}"#,
            error: "inv.json: network.Backend.VNI: duplicate key"),
        // Item 11: where the JSON breaks, and what was there.
        Bad(json: "{\n  \"node\": \"a\",\n  \"network\": {\"Network\": \"10.244.0.0/16\"} x\n}",
            error: "inv.json: invalid JSON at line 3, column 43: expected ',' or '}' after the member \"network\", found \"x\"; here: \"network\": {\"Network\": \"10.244.0.0/16\"}  >>> x"),
        Bad(json: "{\"node\": \"a\",\n \"nodes\": [{\"name\": \"a\"",
            error: "inv.json: invalid JSON at line 2, column 24 (in nodes[0]): the document ends where ',' or '}' was expected (truncated?); an object opened at line 2, column 12 is not closed"),
        Bad(json: "\u{FEFF}{}", error: "inv.json: invalid JSON at line 1, column 1: starts with a UTF-8 byte order mark"),
        Bad(json: "{\"node\": \"a\u{0}\"}", error: "inv.json: invalid JSON at line 1, column 12 (in node): a raw control character \\u0000 inside a string"),
        Bad(json: "{\"node\": \"a\"}\u{0}", error: "inv.json: invalid JSON at line 1, column 14: unexpected \"\\u0000\" after the end of the document"),
        Bad(json: "{\"x\": " + String(repeating: "[", count: 100_000), error: "inv.json: invalid JSON at line 1, column 70 (in x"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"VNI": 1e20}}, "nodes": []}"#,
            error: "inv.json: network.Backend.VNI: 1e20 is out of range 0...16777215"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"VNI": 1e999}}, "nodes": []}"#,
            error: "inv.json: network.Backend.VNI: 1e999 is out of range 0...16777215"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"VNI": 99999999999999999999999}}, "nodes": []}"#,
            error: "inv.json: network.Backend.VNI: 99999999999999999999999 is out of range 0...16777215"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"VNI": 1.5}}, "nodes": []}"#,
            error: "inv.json: network.Backend.VNI: must be a whole number, not 1.5"),
        Bad(json: #"{"network": {"Network": "10.244.0.0/16", "Backend": {"VNI": "1"}}, "nodes": []}"#,
            error: "inv.json: network.Backend.VNI: must be a whole number, not a string (\"1\")"),
        // Item 11: NUL and other invisible characters are echoed escaped.
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2\u0000", "subnet": "10.244.2.0/24"}"#),
            error: #"inv.json: nodes[1].publicIP: "198.18.0.2\u0000" is not an IPv4 address"#),
        Bad(json: nodes(#", {"name": "node\u001b[31mred", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24"}"#),
            error: #"inv.json: nodes[1].name: "node\u001b[31mred" contains a control"#),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "interface": "eth\u202e0"}"#),
            error: #"inv.json: nodes[1].interface: "eth\u202e0" is not a valid interface name"#),
        Bad(json: nodes(#", {"name": "node-b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "na\u0000me": 1}"#),
            error: #"inv.json: nodes[1].na\u0000me: unknown key"#),
    ]

    @Test("hostile configurations are refused with the file, field and an escaped echo", arguments: hostile)
    func hostileRefused(_ bad: Bad) {
        do {
            _ = try AgentConfig.parse(Data(bad.json.utf8), source: "inv.json")
            Issue.record("accepted: \(bad.json.prefix(200))")
        } catch {
            #expect(error.description.hasPrefix(bad.error), "got: \(error.description)")
            #expect(!error.description.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }, "raw control character in: \(error.description)")
        }
    }

    @Test("values read as flanneld reads them: the last duplicate wins, keys match case-insensitively")
    func flanneldDialect() throws {
        let text = #"{"Network": "10.1.0.0/16", "Backend": {"Type": "VXLAN", "VNI": 3, "vni": 7, "port": 9000}, "network": "10.2.0.0/16"}"#
        let config = try NetworkConfig.parse(Data(text.utf8), source: "etcd /coreos.com/network/config")
        #expect(config.network == IPv4Prefix("10.2.0.0/16"))
        #expect(config.vni == 7)
        #expect(config.port == 9000)
        // The same text as a file of ours is refused, naming the duplicate.
        #expect(throws: ConfigError.self) { try NetworkConfig.parse(Data(text.utf8), source: "net-conf.json", dialect: .strict) }
        let lease = try JSONFields.parse(Data(#"{"PublicIP": "198.18.0.1", "PublicIP": "198.18.0.2"}"#.utf8), source: "lease")
        #expect(try lease.ipv4("PublicIP") == IPv4Address("198.18.0.2"))
        // Keys flanneld knows and we do not use are ignored in etcd, refused in a file.
        let dual = #"{"Network": "10.1.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48"}"#
        #expect(try NetworkConfig.parse(Data(dual.utf8), source: "etcd").network == IPv4Prefix("10.1.0.0/16"))
    }

    @Test("messages escape what they echo: NUL, ESC, bidi overrides; long values are cut")
    func escaping() {
        #expect(quoted("a\u{0}b") == #""a\u0000b""#)
        #expect(quoted("\u{1b}[2J") == #""\u001b[2J""#)
        #expect(quoted("x\u{202E}y") == #""x\u202ey""#)
        #expect(quoted("tab\there\n") == #""tab\there\n""#)
        #expect(quoted("node-1") == #""node-1""#)
        #expect(quoted(String(repeating: "a", count: 1000), limit: 10) == #""aaaaaaaaaa... (1000 characters)""#)
        #expect(quoted("\u{10FFFF}") == #""\u{10ffff}""#)
    }

    @Test("a JSON parser that accepts what RFC 8259 accepts")
    func parserAccepts() throws {
        let text = #" {"s": "\u00e9\ud83d\ude00\/\"\\\b\f\n\r\t", "n": [-0, 0.5e-3, 1E+2, 12], "t": true, "f": false, "z": null, "e": {}, "a": []} "#
        let value = try JSONParser.parse(Data(text.utf8), source: "x", dialect: .strict)
        guard case .object(let object) = value else { Issue.record("not an object"); return }
        #expect(object.keys == ["s", "n", "t", "f", "z", "e", "a"])
        #expect(object.value("s", dialect: .strict) == .string("\u{e9}\u{1F600}/\"\\\u{8}\u{c}\n\r\t"))
        #expect(object.value("n", dialect: .strict) == .array([.number("-0"), .number("0.5e-3"), .number("1E+2"), .number("12")]))
    }

    @Test("this node missing from the inventory is an error naming the node")
    func nodeMissing() throws {
        let config = try AgentConfig.parse(Data(Self.good.utf8), source: "inv.json")
        #expect(throws: ConfigError.self) { try config.view(node: "node-z") }
        do { _ = try config.view(node: "node-z") } catch {
            #expect(error.description.contains("\"node-z\" is not listed"))
        }
    }

    @Test("a file that cannot be read says why: missing, dangling link, loop, directory, empty, too big")
    func fileProblems() throws {
        let dir = NSTemporaryDirectory() + "vxa-config-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        symlink("\(dir)/loop", "\(dir)/loop")
        symlink("\(dir)/absent", "\(dir)/dangling")
        _ = FileManager.default.createFile(atPath: "\(dir)/empty", contents: Data())
        _ = FileManager.default.createFile(atPath: "\(dir)/huge", contents: Data())
        truncate("\(dir)/huge", off_t(AgentConfig.maximumFileSize + 1))
        let cases = [
            ("\(dir)/loop", "a symbolic link loop (ELOOP"),
            ("\(dir)/dangling", "is a symbolic link to \"\(dir)/absent\", which does not exist"),
            (dir, "is a directory, not a file"),
            ("\(dir)/empty", "is empty (0 bytes)"),
            ("\(dir)/huge", "is 67108865 bytes, larger than the limit of 64 MiB"),
            ("\(dir)/empty/x", "a component of the path is not a directory (ENOTDIR)"),
        ]
        for (path, message) in cases {
            do { _ = try AgentConfig.load(path: path); Issue.record("loaded \(path)") } catch {
                #expect(error.description == "\(path): the configuration file \(error.message.dropFirst("the configuration file ".count))")
                #expect(error.description.contains(message), "got: \(error.description)")
            }
        }
    }

    @Test("a missing file says so")
    func missingFile() {
        do { _ = try AgentConfig.load(path: "/nonexistent/inv.json"); Issue.record("loaded") } catch {
            #expect(error.description == "/nonexistent/inv.json: the configuration file does not exist")
        }
    }
}

@Suite("flanneld's case-insensitive keys")
struct EqualFoldTests {
    @Test("ASCII keys fold as before, without building strings; non-ASCII keys take the old rule",
          arguments: [("PublicIP", "publicip", true), ("PublicIP", "PUBLICIP", true), ("PublicIP", "PublicIp", true),
                      ("PublicIP", "PublicIPv6", false), ("VNI", "vni", true), ("VNI", "vn1", false),
                      ("a@", "A`", false), ("[", "{", false), ("", "", true), ("Backend", "Backen", false),
                      ("K", "\u{212A}", true), ("PublicÍP", "publicíp", true), ("VtepMAC", "vtepmac", true)])
    func equalFold(a: String, b: String, same: Bool) {
        #expect(JSONDialect.equalFold(a, b) == same)
        // The rule it replaces: Swift's == (canonical equivalence: the Kelvin sign is K, as Go folds it) or ASCII folding.
        #expect(JSONDialect.equalFold(a, b) == (a == b || JSONDialect.fold(a) == JSONDialect.fold(b)))
    }
}

@Suite("this node's name")
struct NodeNameTests {
    @Test("--node, else NODE_NAME (flanneld's, from a DaemonSet), else the file's node, else the host name")
    func precedence() throws {
        let withNode = try AgentConfig.parse(Data(#"{"node": "from-file", "network": {"Network": "10.244.0.0/16"}, "nodes": [{"name": "from-file", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24"}]}"#.utf8), source: "inv.json")
        #expect(AgentConfig.nodeName(flag: "from-flag", config: withNode, environment: ["NODE_NAME": "from-env"]) == "from-flag")
        #expect(AgentConfig.nodeName(flag: nil, config: withNode, environment: ["NODE_NAME": "from-env"]) == "from-env")
        #expect(AgentConfig.nodeName(flag: nil, config: withNode, environment: ["NODE_NAME": ""]) == "from-file")
        #expect(AgentConfig.nodeName(flag: nil, config: withNode, environment: [:]) == "from-file")
    }
}
