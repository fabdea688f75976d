// The hostile-leases family of the standing suite: keys and values that a buggy
// or hostile peer can write under <prefix>/subnets/, each with what the agent must
// do with it. One table, used by the pure suite (ReconcileTests/HostileLeaseTests)
// and by the real-etcd, real-kernel one (EndToEndTests/HostileLeaseDaemonTests).
//
// The cluster around them, in both suites: network 10.244.0.0/16 (/24 subnets,
// VNI 1), this node 198.18.0.1 on the underlay 198.18.0.0/24 holding
// 10.244.14.0/24 (SubnetMin 10.244.13.0, SubnetMax 10.244.14.0, and 10.244.13.0/24
// is held by a dual-stack key), two good peers: 10.244.2.0/24 at 198.18.0.2 and
// 10.244.3.0/24 at 198.18.0.3.

public enum HostileLeases {
    public static let prefix = "/coreos.com/network"
    public static let network = #"{"Network": "10.244.0.0/16", "SubnetMin": "10.244.13.0", "SubnetMax": "10.244.14.0", "Backend": {"Type": "vxlan"}}"#
    public static let publicIP = "198.18.0.1"
    public static let ownSubnet = "10.244.14.0/24"
    public static var ownKey: String { "\(prefix)/subnets/10.244.14.0-24" }

    /// What the agent does with one lease.
    public enum Outcome: Sendable, Hashable {
        /// Left out, with a reason that names the key and contains this text.
        case skipped(String)
        /// Programmed as flanneld would: this subnet, via this public IP and VTEP MAC.
        case programmed(subnet: String, publicIP: String, mac: String)
    }

    /// One key and value.
    public struct Entry: Sendable, Hashable {
        /// The key after `<prefix>/subnets/`.
        public var name: String
        public var value: String
        public var outcome: Outcome
        /// The /24 subnets that this key keeps from being allocated, whatever its value.
        public var holds: [String]

        public var key: String { "\(HostileLeases.prefix)/subnets/\(name)" }
    }

    /// One hostile situation: one lease, or a few that conflict.
    public struct Case: Sendable, Hashable, CustomStringConvertible {
        public var name: String
        public var entries: [Entry]
        /// The key cannot be written with etcdctl (a NUL byte in it): tested without etcd only.
        public var pureOnly = false
        public var description: String { name }
    }

    /// The good peers: they must stay programmed whatever else is written.
    public static let good: [Entry] = [
        Entry(name: "10.244.2.0-24", value: vxlan("198.18.0.2", "0e:01:c6:12:00:02"),
              outcome: .programmed(subnet: "10.244.2.0/24", publicIP: "198.18.0.2", mac: "0e:01:c6:12:00:02"), holds: ["10.244.2.0/24"]),
        Entry(name: "10.244.3.0-24", value: vxlan("198.18.0.3", "0e:01:c6:12:00:03"),
              outcome: .programmed(subnet: "10.244.3.0/24", publicIP: "198.18.0.3", mac: "0e:01:c6:12:00:03"), holds: ["10.244.3.0/24"]),
    ]

    /// A dual-stack lease for 10.244.13.0/24, in etcd before this node takes its
    /// lease: the allocator must not take 10.244.13.0/24 (issue 9, item 3).
    public static let dualStack = Case(name: "a dual-stack key: its IPv4 part is programmed and never allocated", entries: [
        Entry(name: "10.244.13.0-24&fd00:10:244:d::-64",
              value: #"{"PublicIP":"198.18.0.113","PublicIPv6":"fd00::113","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:01:13"},"BackendV6Data":{"VNI":1,"VtepMAC":"22:00:00:00:06:13"}}"#,
              outcome: .programmed(subnet: "10.244.13.0/24", publicIP: "198.18.0.113", mac: "22:00:00:00:01:13"), holds: ["10.244.13.0/24"]),
    ])

    /// The JSON flanneld writes for a vxlan lease.
    public static func vxlan(_ ip: String, _ mac: String, vni: String = "1") -> String {
        #"{"PublicIP":"\#(ip)","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":\#(vni),"VtepMAC":"\#(mac)"}}"#
    }

    static func one(_ name: String, _ subnet: Int, _ value: String, _ outcome: Outcome, holds: [String]? = nil) -> Case {
        Case(name: name, entries: [Entry(name: "10.244.\(subnet).0-24", value: value, outcome: outcome,
                                         holds: holds ?? ["10.244.\(subnet).0/24"])])
    }

    static func skip(_ name: String, _ subnet: Int, _ value: String, _ reason: String) -> Case {
        one(name, subnet, value, .skipped(reason))
    }

    /// A valid lease at 10.244.N.0/24 with public IP 198.18.0.(100+N), MAC 22:00:00:00:00:NN.
    static func valid(_ n: Int) -> (ip: String, mac: String, value: String) {
        let ip = "198.18.0.\(100 + n)", mac = "22:00:00:00:00:\(n < 10 ? "0" : "")\(n)"
        return (ip, mac, vxlan(ip, mac))
    }

    static func programmed(_ n: Int) -> Outcome {
        .programmed(subnet: "10.244.\(n).0/24", publicIP: valid(n).ip, mac: valid(n).mac)
    }

    static func key(_ name: String, _ value: String, _ outcome: Outcome, holds: [String]) -> Entry {
        Entry(name: name, value: value, outcome: outcome, holds: holds)
    }

    public static let cases: [Case] = [
        // Malformed JSON.
        skip("truncated JSON", 20, #"{"PublicIP": "198.18.0.120", "BackendData": "#, "invalid JSON"),
        skip("an empty value", 21, "", "is empty (expected a JSON object)"),
        skip("a JSON array, not an object", 22, "[1, 2]", "expected a JSON object"),
        skip("JSON null", 23, "null", "expected a JSON object at the top level, found null"),
        skip("a trailing comma (flanneld's decoder refuses it)", 24,
             #"{"PublicIP":"198.18.0.124","BackendType":"vxlan","BackendData":{"VtepMAC":"22:00:00:00:00:24"},}"#,
             #"invalid JSON at line 1, column 96: expected a key in double quotes, found "}""#),
        skip("a byte order mark (flanneld's decoder refuses it)", 25, "\u{FEFF}" + valid(25).value, "byte order mark"),
        skip("a raw NUL byte inside a string", 26,
             "{\"PublicIP\":\"198.18.0.126\u{0}\",\"BackendType\":\"vxlan\",\"BackendData\":{\"VtepMAC\":\"22:00:00:00:00:26\"}}", "invalid JSON"),
        skip("a raw newline inside a string", 27,
             "{\"PublicIP\":\"198.18.0.127\n\",\"BackendType\":\"vxlan\",\"BackendData\":{\"VtepMAC\":\"22:00:00:00:00:27\"}}", "invalid JSON"),
        skip("two JSON documents", 28, valid(28).value + valid(28).value, "invalid JSON"),
        skip("BackendData nested 600 deep", 29,
             #"{"PublicIP":"198.18.0.129","BackendType":"vxlan","BackendData":"# + String(repeating: "[", count: 600)
                + String(repeating: "]", count: 600) + "}", "invalid JSON"),

        // Missing, null and wrong-typed fields; control characters; huge values.
        skip("PublicIP missing", 30, #"{"BackendType":"vxlan","BackendData":{"VtepMAC":"22:00:00:00:00:30"}}"#, "PublicIP: is required"),
        skip("PublicIP null", 31, #"{"PublicIP":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"22:00:00:00:00:31"}}"#, "PublicIP: is required"),
        skip("PublicIP a number", 32, #"{"PublicIP":3323068536,"BackendType":"vxlan","BackendData":{"VtepMAC":"22:00:00:00:00:32"}}"#,
             "PublicIP: must be a string"),
        skip("PublicIP not an address", 33, vxlan("not-an-ip", "22:00:00:00:00:33"), #"PublicIP: "not-an-ip" is not an IPv4 address"#),
        skip("PublicIP an IPv6 address", 34, vxlan("fd00::134", "22:00:00:00:00:34"), "is not an IPv4 address"),
        skip("PublicIP with an escaped NUL", 35, vxlan(#"198.18.0.135\u0000"#, "22:00:00:00:00:35"), #"198.18.0.135\u0000" is not an IPv4"#),
        skip("PublicIP with a terminal escape sequence", 36, vxlan(#"\u001b[2J198.18.0.136"#, "22:00:00:00:00:36"),
             #""\u001b[2J198.18.0.136" is not an IPv4"#),
        skip("PublicIP of 100,000 characters", 37, vxlan(String(repeating: "9", count: 100_000), "22:00:00:00:00:37"),
             "is not an IPv4 address"),
        skip("BackendType missing (flanneld's udp lease)", 38, #"{"PublicIP":"198.18.0.138","PublicIPv6":null}"#,
             "BackendType: is missing"),
        skip("BackendType host-gw", 39, #"{"PublicIP":"198.18.0.139","PublicIPv6":null,"BackendType":"host-gw"}"#,
             #"BackendType: "host-gw": only vxlan leases"#),
        skip("BackendType udp", 40, #"{"PublicIP":"198.18.0.140","BackendType":"udp","BackendData":{"VtepMAC":"22:00:00:00:00:40"}}"#,
             #"BackendType: "udp": only vxlan leases"#),
        skip("BackendType VXLAN (flanneld compares exactly)", 41,
             #"{"PublicIP":"198.18.0.141","BackendType":"VXLAN","BackendData":{"VtepMAC":"22:00:00:00:00:41"}}"#, #""VXLAN": only vxlan leases"#),
        skip("BackendType a number", 42, #"{"PublicIP":"198.18.0.142","BackendType":1,"BackendData":{"VtepMAC":"22:00:00:00:00:42"}}"#,
             "BackendType: must be a string"),
        skip("BackendData missing", 43, #"{"PublicIP":"198.18.0.143","BackendType":"vxlan"}"#, "BackendData: is required"),
        skip("BackendData a string", 44, #"{"PublicIP":"198.18.0.144","BackendType":"vxlan","BackendData":"22:00:00:00:00:44"}"#,
             "BackendData: must be an object"),
        skip("VtepMAC missing", 45, #"{"PublicIP":"198.18.0.145","BackendType":"vxlan","BackendData":{"VNI":1}}"#, "BackendData.VtepMAC: is required"),
        skip("VtepMAC garbage", 46, vxlan("198.18.0.146", "zz:zz"), #"BackendData.VtepMAC: "zz:zz" is not a MAC address"#),
        skip("VtepMAC of 100,000 characters", 47, vxlan("198.18.0.147", String(repeating: "f", count: 100_000)), "is not a MAC address"),
        skip("VtepMAC multicast", 48, vxlan("198.18.0.148", "01:00:5e:00:00:48"), "vtepMAC 01:00:5e:00:00:48 is not a unicast MAC"),
        skip("VtepMAC all zero", 49, vxlan("198.18.0.149", "00:00:00:00:00:00"), "is not a unicast MAC"),
        skip("VtepMAC broadcast", 50, vxlan("198.18.0.150", "ff:ff:ff:ff:ff:ff"), "is not a unicast MAC"),
        skip("VNI of another network", 51, vxlan("198.18.0.151", "22:00:00:00:00:51", vni: "2"), "VNI: 2, but the network uses VNI 1"),
        skip("VNI out of range", 52, vxlan("198.18.0.152", "22:00:00:00:00:52", vni: "16777216"), "16777216 is out of range"),
        skip("VNI negative", 53, vxlan("198.18.0.153", "22:00:00:00:00:53", vni: "-1"), "-1 is out of range"),
        skip("VNI a string", 54, vxlan("198.18.0.154", "22:00:00:00:00:54", vni: #""1""#), "VNI: must be a whole number"),
        skip("VNI a fraction", 55, vxlan("198.18.0.155", "22:00:00:00:00:55", vni: "1.5"), "VNI: must be a whole number"),

        // Public IPs no VXLAN packet should go to (item 5: the pod network, the underlay's broadcast).
        skip("PublicIP loopback", 56, vxlan("127.0.0.1", "22:00:00:00:00:56"), "publicIP 127.0.0.1 is loopback"),
        skip("PublicIP multicast", 57, vxlan("224.0.0.57", "22:00:00:00:00:57"), "publicIP 224.0.0.57 is multicast"),
        skip("PublicIP 0.0.0.0", 58, vxlan("0.0.0.0", "22:00:00:00:00:58"), "publicIP 0.0.0.0 is not a unicast address"),
        skip("PublicIP 255.255.255.255", 59, vxlan("255.255.255.255", "22:00:00:00:00:59"), "is not a unicast address"),
        skip("PublicIP this node's", 60, vxlan("198.18.0.1", "22:00:00:00:00:60"), "publicIP 198.18.0.1 is an address of this host"),
        skip("PublicIP inside the pod network (item 5)", 61, vxlan("10.244.61.7", "22:00:00:00:00:61"),
             "publicIP 10.244.61.7 is inside the pod network 10.244.0.0/16"),
        skip("PublicIP the underlay's broadcast address (item 5)", 62, vxlan("198.18.0.255", "22:00:00:00:00:62"),
             "publicIP 198.18.0.255 is the broadcast address of the underlay's subnet 198.18.0.0/24"),
        skip("PublicIP the underlay's network address", 63, vxlan("198.18.0.0", "22:00:00:00:00:63"),
             "publicIP 198.18.0.0 is the network address of the underlay's subnet"),

        // Subnets that are not a node's /24 of this network.
        Case(name: "a subnet outside the network", entries: [
            key("10.99.64.0-24", valid(64).value, .skipped("subnet 10.99.64.0/24 is not a /24 inside the network 10.244.0.0/16"), holds: [])]),
        Case(name: "a subnet of the wrong length", entries: [
            key("10.244.65.0-25", valid(65).value, .skipped("subnet 10.244.65.0/25 is not a /24"), holds: ["10.244.65.0/24"])]),
        Case(name: "the whole network as a subnet", entries: [
            key("10.244.0.0-16", valid(66).value, .skipped("subnet 10.244.0.0/16 is not a /24"), holds: [])]),
        Case(name: "a /23 across two subnets", entries: [
            key("10.244.68.0-23", valid(67).value, .skipped("subnet 10.244.68.0/23 is not a /24"), holds: ["10.244.68.0/24", "10.244.69.0/24"])]),
        Case(name: "host bits set in the key", entries: [
            key("10.244.70.1-24", valid(70).value, .skipped("10.244.70.1/24, which is not a subnet (host bits set"), holds: ["10.244.70.0/24"])]),
        Case(name: "a /32 in the key", entries: [
            key("10.244.71.9-32", valid(71).value, .skipped("subnet 10.244.71.9/32 is not a /24"), holds: ["10.244.71.0/24"])]),
        Case(name: "0.0.0.0-0 without an IPv6 part", entries: [
            key("0.0.0.0-0", valid(72).value, .skipped("subnet 0.0.0.0/0 is not a /24"), holds: [])]),
        Case(name: "this node's subnet under another spelling of its key", entries: [
            key("10.244.14.0-024", valid(73).value, .skipped("subnet 10.244.14.0/24 overlaps this host's subnet 10.244.14.0/24"),
                holds: ["10.244.14.0/24"])]),
        Case(name: "this node's subnet in a dual-stack key with another IP", entries: [
            key("10.244.14.0-24&fd00:10:244:e::-64", valid(74).value, .skipped("subnet 10.244.14.0/24 overlaps this host's subnet"),
                holds: ["10.244.14.0/24"])]),

        // Conflicts between leases: the first (by subnet) is kept.
        Case(name: "two leases with one PublicIP", entries: [
            key("10.244.75.0-24", valid(75).value, programmed(75), holds: ["10.244.75.0/24"]),
            key("10.244.76.0-24", vxlan(valid(75).ip, "22:00:00:00:00:76"), .skipped("publicIP 198.18.0.175 is also used by 198.18.0.175"),
                holds: ["10.244.76.0/24"])]),
        Case(name: "two leases with one VtepMAC", entries: [
            key("10.244.77.0-24", valid(77).value, programmed(77), holds: ["10.244.77.0/24"]),
            key("10.244.78.0-24", vxlan("198.18.0.178", valid(77).mac), .skipped("vtepMAC 22:00:00:00:00:77 is also used by 198.18.0.177"),
                holds: ["10.244.78.0/24"])]),
        skip("a good peer's VtepMAC", 79, vxlan("198.18.0.179", "0e:01:c6:12:00:02"), "vtepMAC 0e:01:c6:12:00:02 is also used by 198.18.0.2"),
        Case(name: "one subnet under an IPv4 and a dual-stack key", entries: [
            key("10.244.80.0-24", valid(80).value, programmed(80), holds: ["10.244.80.0/24"]),
            key("10.244.80.0-24&fd00:10:244:50::-64", vxlan("198.18.0.181", "22:00:00:00:00:81"),
                .skipped("subnet 10.244.80.0/24 is also claimed by 198.18.0.180"), holds: ["10.244.80.0/24"])]),

        // Keys that name no subnet (or one only flanneld reads).
        Case(name: "a key that names no subnet", entries: [
            key("garbage", valid(82).value, .skipped("the key does not name a subnet"), holds: [])]),
        Case(name: "an address without a length", entries: [
            key("10.244.83.0", valid(83).value, .skipped("the key does not name a subnet"), holds: [])]),
        Case(name: "trailing junk after the length", entries: [
            key("10.244.84.0-24hi", valid(84).value, .skipped("the key does not name a subnet"), holds: [])]),
        Case(name: "leading junk (flanneld still reads 10.244.85.0/24)", entries: [
            key("x10.244.85.0-24", valid(85).value, .skipped("the key does not name a subnet"), holds: ["10.244.85.0/24"])]),
        Case(name: "an upper-case IPv6 part (flanneld's pattern is lower case)", entries: [
            key("10.244.86.0-24&FD00:10:244:56::-64", valid(86).value, .skipped("the key does not name a subnet"), holds: ["10.244.86.0/24"])]),
        Case(name: "an IPv6 part of /128 (flanneld reads 7 bits)", entries: [
            key("10.244.87.0-24&fd00:10:244:57::-128", valid(87).value, .skipped("the key does not name a subnet"), holds: ["10.244.87.0/24"])]),
        Case(name: "only an IPv6 part", entries: [
            key("&fd00:10:244:58::-64", valid(88).value, .skipped("the key does not name a subnet"), holds: [])]),
        Case(name: "a key of 100,000 characters", entries: [
            key(String(repeating: "9", count: 100_000) + "10.244.93.0-24", valid(93).value, .skipped("the key does not name a subnet"), holds: [])]),
        Case(name: "a newline in the key", entries: [
            key("evil\nkey/10.244.89.0-24", valid(89).value, .skipped("the key contains control characters"), holds: ["10.244.89.0/24"])]),
        Case(name: "a NUL byte in the key", entries: [
            key("nul\u{0}/10.244.90.0-24", valid(90).value, .skipped("the key contains control characters"), holds: ["10.244.90.0/24"])],
             pureOnly: true),

        // Dual stack and IPv6 only.
        dualStack,
        Case(name: "a dual-stack lease whose BackendV6Data is broken (the IPv4 part is fine)", entries: [
            key("10.244.91.0-24&fd00:10:244:5b::-64",
                #"{"PublicIP":"198.18.0.191","PublicIPv6":"fd00::191","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:00:91"},"BackendV6Data":"junk"}"#,
                programmed(91), holds: ["10.244.91.0/24"])]),
        Case(name: "a dual-stack lease whose PublicIPv6 is not an address", entries: [
            key("10.244.92.0-24&fd00:10:244:5c::-64",
                #"{"PublicIP":"198.18.0.192","PublicIPv6":"zz::1::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:00:92"}}"#,
                .skipped(#"PublicIPv6: "zz::1::2" is not an IPv6 address"#), holds: ["10.244.92.0/24"])]),
        Case(name: "an IPv6-only lease", entries: [
            key("0.0.0.0-0&fd00:10:244:5d::-64",
                #"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::193","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"22:00:00:00:06:93"}}"#,
                .skipped("an IPv6-only lease (fd00:10:244:5d::/64) in a network with IPv4 (EnableIPv4 is true)"), holds: [])]),

        // JSON as flanneld's Go decoder reads it.
        one("duplicate PublicIP: the last wins, as in flanneld", 94,
            #"{"PublicIP":"198.18.0.1","PublicIP":"198.18.0.194","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:00:94"}}"#,
            programmed(94)),
        one("duplicate BackendData: the last wins, as in flanneld", 95,
            #"{"PublicIP":"198.18.0.195","BackendType":"vxlan","BackendData":{"VtepMAC":"01:00:5e:00:00:95"},"BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:00:95"}}"#,
            programmed(95)),
        one("field names in another case (Go matches them)", 96,
            #"{"publicip":"198.18.0.196","BACKENDTYPE":"vxlan","backendData":{"vni":1,"vtepmac":"22:00:00:00:00:96"}}"#,
            programmed(96)),
        one("one field in two spellings: the last wins, as in flanneld", 97,
            #"{"PublicIP":"198.18.0.1","publicIP":"198.18.0.197","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:00:97"}}"#,
            programmed(97)),
        one("unknown fields are ignored, even a huge one", 98,
            #"{"PublicIP":"198.18.0.198","Junk":""# + String(repeating: "x", count: 200_000)
                + #"","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:00:98","More":[1,{"a":null}]}}"#,
            programmed(98)),
        one("VNI missing (flanneld does not read it)", 99,
            #"{"PublicIP":"198.18.0.199","BackendType":"vxlan","BackendData":{"VtepMAC":"22:00:00:00:00:99"}}"#, programmed(99)),
    ]
}
