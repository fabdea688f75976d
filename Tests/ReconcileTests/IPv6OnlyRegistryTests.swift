import Foundation
import Model
import Reconcile
@testable import Registry
import Testing

/// IPv6-only clusters (`EnableIPv4: false`, issue 12) in the registries: flannel's
/// `0.0.0.0-0&<ipv6>-<len>` keys, IPv6-only lease values (PublicIP 0.0.0.0, no
/// BackendData), this node's own lease value, finding this node's lease by
/// PublicIPv6, subnet.env, the CNI configuration and the static inventory.
@Suite("IPv6 only: flannel's keys, leases and files without IPv4")
struct IPv6OnlyRegistryTests {
    static func network(_ json: String, dialect: JSONDialect = .flanneld) throws -> NetworkConfig {
        try NetworkConfig.parse(Data(json.utf8), source: "net-conf.json", dialect: dialect)
    }

    static let v6only = #"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#
    static let v6onlyHostGW = #"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "host-gw"}}"#
    static let ipv4 = #"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#
    static let dual = #"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#

    static let key = "/coreos.com/network/subnets/0.0.0.0-0&fd00:10:244:2::-64"
    /// An IPv6-only vxlan node's lease, as flanneld writes it.
    static let good = #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::2","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:02"}}"#
    static let publicIPv6 = IPv6Address("2001:2::1")!

    // MARK: keys

    @Test("the key is flanneld's 0.0.0.0-0&<ipv6>-<len>, written and read back; it holds no IPv4 subnet")
    func keys() throws {
        let subnet = try #require(IPv6Prefix("fd00:10:244:2::/64"))
        #expect(Flannel.leaseKey(prefix: "/coreos.com/network", ipv6Only: subnet) == Self.key)
        #expect(Flannel.subnets(ofLeaseKey: Self.key) == LeaseKeySubnets(ipv4: nil, ipv6: subnet))
        #expect(Flannel.heldIPv6Subnet(byLeaseKey: Self.key) == subnet)
        #expect(Flannel.heldSubnet(byLeaseKey: Self.key) == nil)
        #expect(Flannel.subnet(ofLeaseKey: Self.key) == nil)
        let lease = try Lease.parse(key: Self.key, value: Array(Self.good.utf8), ipv6Only: true)
        #expect(lease.isIPv6Only && lease.subnet == NodeRecord.noIPv4Subnet && lease.ipv6Subnet == subnet)
        // An IPv6-only network allocates no IPv4 subnet, and owns none.
        let network = try Self.network(Self.v6only)
        #expect(Flannel.freeSubnets(network: network, held: []).isEmpty)
        #expect(!Flannel.isOwnable(NodeRecord.noIPv4Subnet, in: network))
        #expect(Flannel.isOwnable(ipv6: subnet, in: network))
    }

    @Test("an IPv4 network skips an IPv6-only key, with a reason naming it")
    func ipv6OnlyKeyInIPv4Network() throws {
        for json in [Self.ipv4, Self.dual] {
            guard case .failure(let skipped) = Flannel.check(LeaseEntry(key: Self.key, value: Array(Self.good.utf8)),
                                                             network: try Self.network(json)) else {
                Issue.record("an IPv6-only key was accepted in \(json)")
                continue
            }
            #expect(skipped.key == Self.key)
            #expect(skipped.description.hasPrefix("lease \(Self.key): an IPv6-only lease (fd00:10:244:2::/64) in a network with IPv4"),
                    "\(skipped)")
        }
    }

    @Test("an IPv6-only network skips IPv4 and dual-stack keys, with a reason naming the key", arguments: [
        ("/p/subnets/10.244.1.0-24", #"{"PublicIP":"198.18.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:02"}}"#,
         "an IPv4 lease (10.244.1.0/24) in an IPv6-only network (EnableIPv4 false): it names no IPv6 subnet"),
        ("/p/subnets/10.244.1.0-24&fd00:10:244:1::-64", #"{"PublicIP":"198.18.0.2","PublicIPv6":"2001:2::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:02"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:02"}}"#,
         "a dual-stack lease (10.244.1.0/24) in an IPv6-only network (EnableIPv4 false)"),
        ("/p/subnets/0.0.0.0-0", good, "an IPv4 lease (0.0.0.0/0) in an IPv6-only network"),
        ("/p/subnets/junk", good, "the key does not name a subnet"),
    ])
    func ipv4KeysInIPv6OnlyNetwork(_ key: String, _ value: String, _ reason: String) throws {
        let network = try Self.network(Self.v6only)
        guard case .failure(let skipped) = Flannel.check(LeaseEntry(key: key, value: Array(value.utf8)), network: network) else {
            Issue.record("\(key) was accepted in an IPv6-only network")
            return
        }
        #expect(skipped.description.hasPrefix("lease \(key): \(reason)"), "\(skipped)")
        // The cluster view leaves it out and says why.
        let view = Flannel.clusterView(network: network, leases: [LeaseEntry(key: key, value: Array(value.utf8))], node: "a",
                                       publicIP: IPv4Address(0), publicIPv6: Self.publicIPv6,
                                       own: (key: "/p/subnets/0.0.0.0-0&fd00:10:244:1::-64", subnet: NodeRecord.noIPv4Subnet))
        #expect(view.view.peers.isEmpty && view.skipped.map(\.key) == [key])
    }

    // MARK: values

    @Test("an IPv6-only peer: NodeRecord.ipv6Only named by its PublicIPv6, its half from the key, PublicIPv6 and BackendV6Data")
    func peer() throws {
        let lease = try Flannel.check(LeaseEntry(key: Self.key, value: Array(Self.good.utf8)), network: try Self.network(Self.v6only)).get()
        let half = NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:2::/64")!, publicIP: IPv6Address("2001:2::2")!,
                                       vtepMAC: MACAddress("0a:01:00:00:00:02"))
        #expect(lease.record == NodeRecord.ipv6Only(name: "2001:2::2", ipv6: half, origin: Self.key))
        #expect(lease.record.subnet == NodeRecord.noIPv4Subnet && lease.record.publicIP == IPv4Address(0))
        #expect(lease.ipv6Skipped == nil)
        // host-gw: no BackendV6Data needed.
        let gw = try Flannel.check(LeaseEntry(key: Self.key, value: Array(#"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::2","BackendType":"host-gw"}"#.utf8)),
                                   network: try Self.network(Self.v6onlyHostGW)).get()
        #expect(gw.record == NodeRecord.ipv6Only(name: "2001:2::2", ipv6: NodeRecord.IPv6Half(subnet: half.subnet, publicIP: half.publicIP), origin: Self.key))
        // BackendData means nothing without IPv4: a broken one, or one of another VNI, costs nothing.
        for data in [#","BackendData":"junk""#, #","BackendData":{"VNI":7,"VtepMAC":"0e:01:c6:12:00:02"}"#, #","BackendData":null"#] {
            let value = Self.good.replacingOccurrences(of: #","BackendV6Data""#, with: data + #","BackendV6Data""#)
            let again = try Flannel.check(LeaseEntry(key: Self.key, value: Array(value.utf8)), network: try Self.network(Self.v6only)).get()
            #expect(again.record == lease.record, "\(data)")
        }
    }

    @Test("an IPv6-only lease whose IPv6 half is broken is skipped whole, with the reason: it has nothing else", arguments: [
        ("/p/subnets/0.0.0.0-0&fd00:10:244:2::1-64", good, "the key's IPv6 part fd00:10:244:2::1/64 is not a subnet (host bits set"),
        ("/p/subnets/0.0.0.0-0&fd00:10:245:2::-64", good, "the key's IPv6 subnet fd00:10:245:2::/64 is not a /64 inside the IPv6 network fd00:10:244::/56"),
        (key, good.replacingOccurrences(of: #""2001:2::2""#, with: "null"), "PublicIPv6: is missing (null)"),
        (key, good.replacingOccurrences(of: #""2001:2::2""#, with: #""fe80::2""#), "PublicIPv6: fe80::2 is not a global unicast address"),
        (key, good.replacingOccurrences(of: #""2001:2::2""#, with: #""fd00:10:244:9::2""#), "PublicIPv6: fd00:10:244:9::2 is inside the IPv6 pod network"),
        (key, good.replacingOccurrences(of: #""2001:2::2""#, with: #""zz""#), #"PublicIPv6: "zz" is not an IPv6 address"#),
        (key, good.replacingOccurrences(of: #","BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:02"}"#, with: ""), "BackendV6Data: is missing"),
        (key, good.replacingOccurrences(of: #""VtepMAC":"0a:01:00:00:00:02""#, with: #""VtepMAC":"zz""#), #"BackendV6Data.VtepMAC: "zz" is not a MAC address"#),
        (key, good.replacingOccurrences(of: #""VNI":1"#, with: #""VNI":2"#), "BackendV6Data.VNI: 2, but the network uses VNI 1"),
        (key, good.replacingOccurrences(of: #""vxlan""#, with: #""host-gw""#), #"BackendType: "host-gw": only vxlan leases"#),
        (key, good.replacingOccurrences(of: #""PublicIP":"0.0.0.0","#, with: ""), "PublicIP: is required"),
    ])
    func brokenHalf(_ key: String, _ value: String, _ reason: String) throws {
        let network = try Self.network(Self.v6only)
        guard case .failure(let skipped) = Flannel.check(LeaseEntry(key: key, value: Array(value.utf8)), network: network) else {
            Issue.record("accepted: \(value)")
            return
        }
        #expect(skipped.key == key && skipped.reason.hasPrefix(reason), "\(skipped)")
        let view = Flannel.clusterView(network: network, leases: [LeaseEntry(key: key, value: Array(value.utf8))], node: "a",
                                       publicIP: IPv4Address(0), publicIPv6: Self.publicIPv6,
                                       own: (key: "/p/subnets/0.0.0.0-0&fd00:10:244:1::-64", subnet: NodeRecord.noIPv4Subnet))
        #expect(view.view.peers.isEmpty && view.skipped.map(\.key) == [key] && view.skippedIPv6.isEmpty)
    }

    /// IPv6-only values both readers read.
    static let readerValues: [String] = [
        good,
        #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::2","BackendType":"vxlan","BackendData":null,"BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:02"}}"#,
        #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::2","BackendType":"vxlan","BackendData":"junk","BackendV6Data":{"VtepMAC":"0a:01:00:00:00:02"}}"#,
        #"{"publicip":"0.0.0.0","publicIPv6":"2001:2::2","backendtype":"vxlan","backendv6data":{"vni":1,"vtepmac":"0A-01-00-00-00-02"}}"#,
        #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::2","BackendType":"vxlan"}"#,
    ]

    @Test("the fast reader reads IPv6-only leases itself (BackendData not read) and gives what the general reader gives", arguments: readerValues)
    func readersAgree(_ value: String) throws {
        let bytes = Array(value.utf8)
        let fast = try #require(bytes.withUnsafeBufferPointer { LeaseReader.attributes($0, ipv6Only: true) })
        #expect(fast == (try LeaseAttributes.parseFields(bytes, key: Self.key, ipv6Only: true)))
        #expect(fast == (try LeaseAttributes.parse(bytes, key: Self.key, ipv6Only: true)))
        #expect(fast.vni == nil && fast.vtepMAC == nil && fast.publicIPv6 == IPv6Address("2001:2::2"))
        // The IPv4 reading of the same bytes is unchanged: BackendData is required there.
        if value.contains("\"BackendData\":{") == false {
            #expect(bytes.withUnsafeBufferPointer(LeaseReader.attributes) == nil)
        }
    }

    @Test("where the fast reader declines an IPv6-only lease, the general one answers", arguments: [
        #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::2","BackendType":"vxlan","BackendV6Data":"junk"}"#,
        #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::2","BackendType":"vxlan","BackendV6Data":{"VtepMAC":"zz"}}"#,
        #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::2","BackendType":"host-gw"}"#,
        #"{"PublicIP":"0.0.0.0","PublicIPv6":"zz","BackendType":"vxlan"}"#,
        #"{"PublicIPv6":"2001:2::2","BackendType":"vxlan"}"#,
    ])
    func readerDeclines(_ value: String) {
        let bytes = Array(value.utf8)
        #expect(bytes.withUnsafeBufferPointer { LeaseReader.attributes($0, ipv6Only: true) } == nil)
        let general = Swift.Result { () throws(ConfigError) in try LeaseAttributes.parseFields(bytes, key: Self.key, backendType: "vxlan", ipv6Only: true) }
        let parsed = Swift.Result { () throws(ConfigError) in try LeaseAttributes.parse(bytes, key: Self.key, backendType: "vxlan", ipv6Only: true) }
        #expect(general == parsed)
    }

    // MARK: this node

    @Test("this node's lease value, as flanneld writes it IPv6-only", arguments: [
        ("vxlan", #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:01"}}"#),
        ("host-gw", #"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:2::1","BackendType":"host-gw"}"#),
    ])
    func ownValue(_ backend: String, _ json: String) throws {
        let network = try Self.network(#"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "\#(backend)"}}"#)
        // Whatever IPv4 address the node has, the lease says 0.0.0.0.
        let own = LeaseAttributes.own(publicIP: IPv4Address("198.18.0.1")!, publicIPv6: Self.publicIPv6, network: network)
        #expect(own.json == json)
        #expect(try LeaseAttributes.parse(Array(json.utf8), key: Self.key, backendType: nil, ipv6Only: true) == own)
        // It is a peer to the others.
        let key = "/p/subnets/0.0.0.0-0&fd00:10:244:1::-64"
        let lease = try Flannel.check(LeaseEntry(key: key, value: Array(json.utf8)), network: network).get()
        #expect(lease.record.name == "2001:2::1" && lease.record.ipv6?.subnet == IPv6Prefix("fd00:10:244:1::/64"))
    }

    @Test("this node's record: flannel's empty IPv4 half, its key's IPv6 subnet and its IPv6 address")
    func local() throws {
        let own = (key: "/p/subnets/0.0.0.0-0&fd00:10:244:1::-64", subnet: NodeRecord.noIPv4Subnet)
        let result = Flannel.clusterView(network: try Self.network(Self.v6only),
                                         leases: [LeaseEntry(key: Self.key, value: Array(Self.good.utf8))],
                                         node: "a", publicIP: IPv4Address("198.18.0.1")!, publicIPv6: Self.publicIPv6, own: own)
        let half = NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:1::/64")!, publicIP: Self.publicIPv6, vtepMAC: MACAddress("0a:01:00:00:00:01"))
        #expect(result.view.local == NodeRecord.ipv6Only(name: "a", ipv6: half, origin: own.key))
        #expect(result.view.peers.map(\.name) == ["2001:2::2"] && result.skipped.isEmpty)
    }

    @Test("a one-shot command finds this node's lease by its PublicIPv6 (every IPv6-only lease's PublicIP is 0.0.0.0)")
    func ownLease() throws {
        let network = try Self.network(Self.v6only)
        func value(_ ipv6: String) -> [UInt8] {
            Array(#"{"PublicIP":"0.0.0.0","PublicIPv6":"\#(ipv6)","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:01"}}"#.utf8)
        }
        let mine = LeaseEntry(key: "/p/subnets/0.0.0.0-0&fd00:10:244:1::-64", value: value("2001:2::1"))
        let other = LeaseEntry(key: Self.key, value: Array(Self.good.utf8))
        let found = try Flannel.ownLease(among: [other, mine], network: network, publicIP: IPv4Address(0), previousSubnet: nil,
                                         publicIPv6: Self.publicIPv6)
        #expect(found.key == mine.key && found.ipv6Subnet == IPv6Prefix("fd00:10:244:1::/64"))
        // Two with this address: the previous IPv6 subnet (subnet.env) decides; without it, both are named.
        let second = LeaseEntry(key: "/p/subnets/0.0.0.0-0&fd00:10:244:5::-64", value: value("2001:2::1"))
        #expect(try Flannel.ownLease(among: [mine, second, other], network: network, publicIP: IPv4Address(0), previousSubnet: nil,
                                     publicIPv6: Self.publicIPv6, previousIPv6Subnet: IPv6Prefix("fd00:10:244:5::/64")).key == second.key)
        #expect(throws: OwnLeaseError.several(keys: [mine.key, second.key])) {
            try Flannel.ownLease(among: [mine, second, other], network: network, publicIP: IPv4Address(0), previousSubnet: nil,
                                 publicIPv6: Self.publicIPv6)
        }
        // Another address, or none given: no lease.
        #expect(throws: OwnLeaseError.noLease) {
            try Flannel.ownLease(among: [mine, other], network: network, publicIP: IPv4Address(0), previousSubnet: nil,
                                 publicIPv6: IPv6Address("2001:2::9"))
        }
        #expect(throws: OwnLeaseError.noLease) {
            try Flannel.ownLease(among: [mine, other], network: network, publicIP: IPv4Address(0), previousSubnet: nil)
        }
        // A dual-stack lease of this address is not an IPv6-only network's lease.
        let dual = LeaseEntry(key: "/p/subnets/10.244.1.0-24&fd00:10:244:1::-64",
                              value: Array(#"{"PublicIP":"198.18.0.1","PublicIPv6":"2001:2::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:01"}}"#.utf8))
        #expect(throws: OwnLeaseError.noLease) {
            try Flannel.ownLease(among: [dual], network: network, publicIP: IPv4Address("198.18.0.1")!, previousSubnet: nil, publicIPv6: Self.publicIPv6)
        }
    }

    // MARK: files

    @Test("subnet.env IPv6-only, as flanneld's WriteSubnetFile: no FLANNEL_NETWORK or FLANNEL_SUBNET; the previous IPv6 subnet reads back")
    func subnetEnv() throws {
        let env = SubnetEnv.ipv6Only(ipv6Network: IPv6Prefix("fd00:10:244::/56")!, ipv6Subnet: IPv6Prefix("fd00:10:244:1::/64")!,
                                     mtu: 1430, ipMasq: true)
        let text = "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
        #expect(env.text == text)
        // The network's and the node's empty IPv4 values, passed as they are, write the same file.
        let network = try Self.network(Self.v6only)
        #expect(SubnetEnv(network: network.network, subnet: NodeRecord.noIPv4Subnet, mtu: 1430, ipMasq: true,
                          ipv6Network: network.ipv6?.network, ipv6Subnet: IPv6Prefix("fd00:10:244:1::/64")).text == text)
        #expect(SubnetEnv.previousSubnet(in: text) == nil)
        #expect(SubnetEnv.previousIPv6Subnet(in: text) == IPv6Prefix("fd00:10:244:1::/64"))
    }

    @Test("the CNI configuration IPv6-only: one host-local range, the IPv6 one, with its gateway")
    func cni() throws {
        let text = CNIConfig.ipv6Only(ipv6Subnet: IPv6Prefix("fd00:10:244:1::/64")!, mtu: 1430).text
        #expect(text.contains(#""ranges": [[{"subnet": "fd00:10:244:1::/64", "gateway": "fd00:10:244:1::1"}]]"#), "\(text)")
        #expect(!text.contains("0.0.0.0"))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let plugin = try #require((json["plugins"] as? [[String: Any]])?.first)
        let ranges = try #require((plugin["ipam"] as? [String: Any])?["ranges"] as? [[[String: String]]])
        #expect(ranges == [[["subnet": "fd00:10:244:1::/64", "gateway": "fd00:10:244:1::1"]]])
        // Passed the empty IPv4 subnet as it is: the same.
        #expect(CNIConfig(network: NodeRecord.noIPv4Subnet, subnet: NodeRecord.noIPv4Subnet, mtu: 1430,
                          ipv6Subnet: IPv6Prefix("fd00:10:244:1::/64")).text == text)
    }

    // MARK: the static inventory

    static func inventory(_ nodes: String, network: String = #"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#) -> String {
        #"{"node": "a", "network": \#(network), "nodes": [\#(nodes)]}"#
    }

    static let twoNodes = #"{"name": "a", "publicIPv6": "2001:2::1", "subnetV6": "fd00:10:244:1::/64"}, {"name": "b", "publicIPv6": "2001:2::2", "subnetV6": "fd00:10:244:2::/64"}"#

    @Test("an IPv6-only inventory: nodes have publicIPv6 and subnetV6, and no IPv4 half")
    func inventory() throws {
        let config = try AgentConfig.parse(Data(Self.inventory(Self.twoNodes).utf8), source: "agent.json")
        let (view, _) = try config.view(node: "a")
        #expect(!view.network.enableIPv4)
        #expect(view.local == NodeRecord.ipv6Only(name: "a", ipv6: NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:1::/64")!,
                                                                                       publicIP: IPv6Address("2001:2::1")!), origin: "nodes[0]"))
        #expect(view.peers == [NodeRecord.ipv6Only(name: "b", ipv6: NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:2::/64")!,
                                                                                        publicIP: IPv6Address("2001:2::2")!), origin: "nodes[1]")])
        // The staged guess is the same node.
        let staged = try AgentConfig.stage(Data(Self.inventory(Self.twoNodes).utf8), source: "agent.json")
        #expect(staged.provisionalView(node: "a")?.view.local == view.local)
    }

    @Test("an IPv6-only inventory: a wrong node is named with its field", arguments: [
        (#"{"name": "a", "publicIP": "198.18.0.1", "publicIPv6": "2001:2::1", "subnetV6": "fd00:10:244:1::/64"}"#,
         "nodes[0].publicIP: is set but EnableIPv4 is false"),
        (#"{"name": "a", "subnet": "10.244.1.0/24", "publicIPv6": "2001:2::1", "subnetV6": "fd00:10:244:1::/64"}"#,
         "nodes[0].subnet: is set but EnableIPv4 is false"),
        (#"{"name": "a", "publicIPv6": "2001:2::1"}"#, "nodes[0].subnetV6: is required: the network is IPv6-only (EnableIPv4 false)"),
        (#"{"name": "a", "subnetV6": "fd00:10:244:1::/64"}"#, "nodes[0].publicIPv6: is required: the network is IPv6-only (EnableIPv4 false)"),
        (#"{"name": "a", "publicIPv6": "2001:2::1", "subnetV6": "fd00:10:245:1::/64"}"#, "nodes[0].subnetV6: fd00:10:245:1::/64 is outside the IPv6 network"),
        (twoNodes.replacingOccurrences(of: "2001:2::2", with: "2001:2::1"), "nodes[1].publicIPv6: 2001:2::1 is already used by node \"a\""),
        (twoNodes.replacingOccurrences(of: "fd00:10:244:2::/64", with: "fd00:10:244:1::/64"), "nodes[1].subnetV6: fd00:10:244:1::/64 is already used by node \"a\""),
        (twoNodes.replacingOccurrences(of: #""name": "b""#, with: #""name": "a""#), "nodes[1].name: \"a\" is already used by node \"a\""),
    ])
    func badInventory(_ nodes: String, _ message: String) {
        #expect { try AgentConfig.parse(Data(Self.inventory(nodes).utf8), source: "agent.json") } throws: { error in
            "\(error)".hasPrefix("agent.json: " + message) || "\(error)".contains(message)
        }
    }

    @Test("IPv6-only with etcd: publicIPv6 alone is enough in the file (the network, in etcd, says which address is used)")
    func etcdPublicIPv6() throws {
        let config = try AgentConfig.parse(Data(#"{"etcd": {"endpoints": ["http://127.0.0.1:2379"]}, "publicIPv6": "2001:2::1"}"#.utf8), source: "agent.json")
        #expect(config.publicIP == nil && config.publicIPv6 == IPv6Address("2001:2::1"))
        // Neither: the old error, as before.
        #expect { try AgentConfig.parse(Data(#"{"etcd": {"endpoints": ["http://127.0.0.1:2379"]}}"#.utf8), source: "agent.json") } throws: { error in
            "\(error)".contains("publicIP: is required with the etcd registry")
        }
    }

    // MARK: the underlay: an interface with IPv6 only

    static let host = HostNetwork(interfaces: [
        HostInterface(index: 1, name: "lo", mtu: 65536, addresses: [IPv4Address("127.0.0.1")!]),
        HostInterface(index: 2, name: "eth0", mtu: 1500, addresses: [],
                      ipv6Addresses: [IPv6InterfaceAddress(address: IPv6Address("fe80::1")!), IPv6InterfaceAddress(address: IPv6Address("2001:2::1")!)]),
        HostInterface(index: 3, name: "eth1", mtu: 1500, addresses: []),
    ], defaultRouteIndex: nil, route: { _ in nil })

    @Test("interface selection takes an interface with a global IPv6 address and no IPv4 one; --iface and --public-ipv6 may name the IPv6 address", arguments: [
        InterfaceSelection(names: ["eth0"]),
        InterfaceSelection(names: ["2001:2::1"]),
        InterfaceSelection(regexes: ["^eth0$"]),
        InterfaceSelection(regexes: ["^2001:2:"]),
        InterfaceSelection(publicIPv6: "2001:2::1"),
    ])
    func ipv6OnlyUnderlay(_ selection: InterfaceSelection) throws {
        let choice = try selection.choose(on: Self.host)
        #expect(choice.interface.name == "eth0" && choice.address == nil && choice.ipv6Address == IPv6Address("2001:2::1"))
    }

    @Test("an interface with neither address is still refused, by name")
    func noAddress() {
        #expect { _ = try InterfaceSelection(names: ["eth1"]).choose(on: Self.host) } throws: { error in
            "\(error)".contains("failed to find IPv4 address for interface eth1 (nor a global IPv6 address)")
        }
    }

    @Test("flanneld's command line on an IPv6-only underlay: no public IPv4 address, --public-ipv6 (or the interface's) is used")
    func flanneldIPv6Only() throws {
        let options = try FlanneldFlags.parse(arguments: ["--etcd-endpoints=http://127.0.0.1:2379", "--public-ipv6=2001:2::1"], environment: [:])
        #expect(options.interfaceSelection.publicIPv6 == "2001:2::1")
        let choice = try options.interfaceSelection.choose(on: Self.host)
        let config = try options.agentConfig(interface: choice.interface.name, interfaceIP: choice.address)
        #expect(config.publicIP == nil && config.publicIPv6 == IPv6Address("2001:2::1") && config.interface == "eth0")
        // The file's interfaces may name an IPv6 address too; resolving sets no IPv4 address.
        let file = try AgentConfig.parse(Data(#"{"etcd": {"endpoints": ["http://127.0.0.1:2379"]}, "interfaces": ["2001:2::1"]}"#.utf8), source: "agent.json")
        let resolved = try file.resolvingInterface(on: Self.host)
        #expect(resolved.interface == "eth0" && resolved.publicIP == nil && resolved.publicIPv6 == IPv6Address("2001:2::1"))
    }
}
