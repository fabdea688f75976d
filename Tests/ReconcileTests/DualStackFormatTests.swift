import Foundation
import Model
import Reconcile
@testable import Registry
import Testing

/// Dual stack's control plane (issue 12): net-conf's IPv6 keys, lease keys and
/// values, a peer's IPv6 half, subnet.env, the CNI configuration, the static
/// inventory, flanneld's --public-ipv6 and the underlay's IPv6 address.
@Suite("dual stack: flannel's IPv6 keys, leases and files")
struct DualStackTests {
    static func network(_ json: String, dialect: JSONDialect = .flanneld) throws -> NetworkConfig {
        try NetworkConfig.parse(Data(json.utf8), source: "net-conf.json", dialect: dialect)
    }

    static let dual = #"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#

    // MARK: net-conf

    @Test("flannel's IPv6 defaults: IPv6SubnetLen 64, IPv6SubnetMin the second subnet, IPv6SubnetMax the last")
    func ipv6Defaults() throws {
        // The values of flannel's TestIPv6ConfigDefaults (pkg/subnet/config_test.go), with an
        // IPv4 Network beside it (flannel's test is IPv6-only, which the agent does not run yet).
        let config = try Self.network(#"{"Network": "10.3.0.0/16", "enableIPv6": true, "ipv6Network": "fc00::/48"}"#)
        let ipv6 = try #require(config.ipv6)
        #expect(ipv6.network.description == "fc00::/48")
        #expect(ipv6.subnetMin.description == "fc00:0:0:1::")
        #expect(ipv6.subnetMax.description == "fc00:0:0:ffff::")
        #expect(ipv6.subnetLen == 64)
        // The IPv4 half is as before.
        #expect(config.network == IPv4Prefix("10.3.0.0/16") && config.subnetLen == 24)
        // flannel: a /64 each where the network holds four of them, else a quarter of the network.
        #expect(try Self.network(#"{"Network": "10.3.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/62"}"#).ipv6?.subnetLen == 64)
        #expect(try Self.network(#"{"Network": "10.3.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/63"}"#).ipv6?.subnetLen == 65)
        #expect(try Self.network(#"{"Network": "10.3.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/124"}"#).ipv6?.subnetLen == 126)
        // EnableIPv6 false or absent: no IPv6 half, whatever else is there (flanneld ignores it).
        #expect(try Self.network(#"{"Network": "10.3.0.0/16", "IPv6Network": "fd00::/48"}"#).ipv6 == nil)
    }

    @Test("flannel's IPv6 overrides are taken as given")
    func ipv6Overrides() throws {
        // flannel's TestIPv6ConfigOverrides (pkg/subnet/config_test.go), with an IPv4 Network.
        let config = try Self.network(#"{"Network": "10.3.0.0/16", "EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", "IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124}"#)
        #expect(config.ipv6?.subnetMin.description == "fc00:0:0:1::")
        #expect(config.ipv6?.subnetMax.description == "fc00:0:0:f::")
        #expect(config.ipv6?.subnetLen == 124)
        // The JSON it writes reads back the same.
        #expect(try Self.network(config.json) == config)
        // An IPv4-only network writes what it always wrote.
        #expect(try Self.network(#"{"Network": "10.3.0.0/16"}"#).json
                == #"{"Network": "10.3.0.0/16", "SubnetLen": 24, "SubnetMin": "10.3.1.0", "SubnetMax": "10.3.255.0", "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}"#)
    }

    @Test("a bad IPv6 configuration is an error naming the field", arguments: [
        (#""EnableIPv6": true"#, "IPv6Network: is required when EnableIPv6 is true"),
        (#""EnableIPv6": true, "IPv6Network": "10.0.0.0/8""#, #"IPv6Network: "10.0.0.0/8" is not an IPv6 prefix"#),
        (#""EnableIPv6": true, "IPv6Network": "fe80::/64""#, "IPv6Network: fe80::/64 overlaps fe80::/10 (link-local"),
        (#""EnableIPv6": true, "IPv6Network": "ff02::/64""#, "IPv6Network: ff02::/64 overlaps ff00::/8 (multicast)"),
        (#""EnableIPv6": true, "IPv6Network": "::/0""#, "IPv6Network: ::/0 overlaps ::/8"),
        (#""EnableIPv6": true, "IPv6Network": "fd00::/125""#, "IPv6Network: fd00::/125 is too small: the smallest useful IPv6 network is a /124"),
        (#""EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetLen": 127"#, "IPv6SubnetLen: 127 is too long: at most 126"),
        (#""EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetLen": 57"#,
         "IPv6SubnetLen: 57 leaves no room: the network /56 must hold at least four subnets, so IPv6SubnetLen must be at least 58"),
        (#""EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "fd01::""#, "IPv6SubnetMin: fd01:: is outside the IPv6 network fd00::/56"),
        (#""EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMax": "fd00:0:0:5::1""#,
         "IPv6SubnetMax: fd00:0:0:5::1 is not the start of a /64 subnet"),
        (#""EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "fd00:0:0:9::", "IPv6SubnetMax": "fd00:0:0:8::""#,
         "IPv6SubnetMin: fd00:0:0:9:: is above IPv6SubnetMax fd00:0:0:8::"),
        (#""EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "fd00:0:0:1:zz::""#, #"IPv6SubnetMin: "fd00:0:0:1:zz::" is not an IPv6 address"#),
    ])
    func badIPv6(_ keys: String, _ message: String) {
        let json = #"{"Network": "10.244.0.0/16", "#  + keys + "}"
        #expect { try Self.network(json) } throws: { error in
            "\(error)".hasPrefix("net-conf.json: " + message)
        }
    }

    @Test("IPv6-only (EnableIPv4 false): flannel's empty IPv4 values, the IPv6 part with its defaults")
    func ipv6Only() throws {
        for dialect in [JSONDialect.flanneld, .strict] {
            let config = try Self.network(#"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}"#,
                                          dialect: dialect)
            #expect(!config.enableIPv4)
            #expect(config.network == IPv4Prefix(IPv4Address(0), 0))
            #expect(config.subnetLen == 0)
            #expect(config.ipv6 == NetworkConfig.IPv6Part(network: IPv6Prefix("fd00:10:244::/56")!))
            #expect(config.ipv6?.subnetMin == IPv6Address("fd00:10:244:1::"))
            // What we write for it reads back the same.
            #expect(try Self.network(config.json, dialect: .strict) == config)
        }
        // flanneld ignores Network when EnableIPv4 is false; so does the reader of its configuration.
        let flannels = try Self.network(#"{"Network": "10.244.0.0/16", "EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56"}"#)
        #expect(!flannels.enableIPv4 && flannels.network.length == 0)
    }

    @Test("IPv6-only: what cannot run is named", arguments: [
        (#""EnableIPv4": false"#, "EnableIPv4: false needs \"EnableIPv6\": true (an IPv6-only cluster)"),
        (#""EnableIPv4": false, "EnableIPv6": false"#, "EnableIPv4: false needs \"EnableIPv6\": true"),
        (#""EnableIPv4": false, "EnableIPv6": true"#, "IPv6Network: is required when EnableIPv6 is true"),
        (#""EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "Backend": {"Type": "udp"}"#,
         #"Backend.Type: "udp" carries IPv4 only"#),
        (#""EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "Backend": {"Type": "vxlan", "MTU": 1000}"#,
         "Backend.MTU: 1000 is below the IPv6 minimum of 1280"),
    ])
    func badIPv6Only(_ keys: String, _ message: String) {
        #expect { try Self.network("{" + keys + "}") } throws: { error in
            "\(error)".hasPrefix("net-conf.json: " + message)
        }
    }

    @Test("host bits in Network and IPv6Network: dropped as flanneld's decoder (Go's net.ParseCIDR) drops them; named in a file of ours")
    func hostBits() throws {
        let json = #"{"Network": "10.244.1.7/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::1/56"}"#
        let config = try Self.network(json)
        #expect(config.network == IPv4Prefix("10.244.0.0/16") && config.ipv6?.network == IPv6Prefix("fd00:10:244::/56"))
        #expect(config.subnetMin == IPv4Address("10.244.1.0"))
        #expect { try Self.network(json, dialect: .strict) } throws: { error in
            "\(error)".hasPrefix("net-conf.json: Network: 10.244.1.7/16 has host bits set (did you mean 10.244.0.0/16?)")
        }
        #expect { try Self.network(#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::1/64"}"#, dialect: .strict) } throws: { error in
            "\(error)".hasPrefix("net-conf.json: IPv6Network: fd00::1/64 has host bits set (did you mean fd00::/64?)")
        }
    }

    @Test("IPv6-only, a file of ours: an IPv4 key is a mistake named")
    func strictIPv6OnlyIPv4Keys() {
        #expect { try Self.network(#"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "Network": "10.244.0.0/16"}"#,
                                   dialect: .strict) } throws: { error in
            "\(error)".hasPrefix("net-conf.json: Network: is set but EnableIPv4 is false")
        }
    }

    @Test("a file of ours: IPv6 keys without EnableIPv6 are a mistake named; flanneld's dialect ignores them")
    func strictIPv6Keys() throws {
        let json = #"{"Network": "10.244.0.0/16", "IPv6Network": "fd00::/56"}"#
        #expect { try Self.network(json, dialect: .strict) } throws: { error in
            "\(error)".hasPrefix("net-conf.json: IPv6Network: is set but EnableIPv6 is not true")
        }
        #expect(try Self.network(json).ipv6 == nil)
    }

    @Test("a file of ours and a flannel cluster's configuration both keep their IPv6 part")
    func bothDialectsKeepIPv6() throws {
        #expect(try Self.network(Self.dual, dialect: .strict).ipv6?.network == IPv6Prefix("fd00:10:244::/56"))
        #expect(try Self.network(Self.dual).ipv6?.network == IPv6Prefix("fd00:10:244::/56"))
    }

    // MARK: lease keys and values

    @Test("the dual-stack lease key flannel makes, and reads back")
    func leaseKey() throws {
        // flannel's TestSubnetNodev6 (pkg/subnet/subnet_test.go): MakeSubnetKey gives back the key it parsed.
        let key = "10.12.13.0-24&fd00:12:13::-56"
        #expect(Flannel.leaseKey(prefix: "/coreos.com/network", subnet: IPv4Prefix("10.12.13.0/24")!, ipv6: IPv6Prefix("fd00:12:13::/56"))
                == "/coreos.com/network/subnets/" + key)
        #expect(Flannel.leaseKey(prefix: "/p/", subnet: IPv4Prefix("10.244.1.0/24")!, ipv6: IPv6Prefix("fd00:10:244:1::/64"))
                == "/p/subnets/10.244.1.0-24&fd00:10:244:1::-64")
        #expect(Flannel.leaseKey(prefix: "/p", subnet: IPv4Prefix("10.244.1.0/24")!) == "/p/subnets/10.244.1.0-24", "IPv4 as before")
        let parsed = try #require(Flannel.subnets(ofLeaseKey: "/p/subnets/" + key))
        #expect(Flannel.leaseKey(prefix: "/p", subnet: parsed.ipv4!, ipv6: parsed.ipv6) == "/p/subnets/" + key)
        #expect(Flannel.heldIPv6Subnet(byLeaseKey: "/p/subnets/10.244.1.0-24&fd00:10:244:1::-64")?.description == "fd00:10:244:1::/64")
        #expect(Flannel.heldIPv6Subnet(byLeaseKey: "/p/subnets/10.244.1.300-24&fd00:10:244:1::-64")?.description == "fd00:10:244:1::/64",
                "a broken IPv4 part still holds its IPv6 subnet")
        #expect(Flannel.heldIPv6Subnet(byLeaseKey: "/p/subnets/10.244.1.0-24") == nil)
    }

    static let publicIP = IPv4Address("198.18.0.1")!
    static let publicIPv6 = IPv6Address("fd00::1")!

    @Test("this node's lease value in dual stack, as flanneld writes it per backend", arguments: [
        ("vxlan", #"{"PublicIP":"198.18.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:01:00:00:00:01"}}"#),
        ("host-gw", #"{"PublicIP":"198.18.0.1","PublicIPv6":"fd00::1","BackendType":"host-gw"}"#),
        // flanneld's udp backend sets PublicIP alone, dual stack or not.
        ("udp", #"{"PublicIP":"198.18.0.1","PublicIPv6":null}"#),
    ])
    func ownValue(_ backend: String, _ json: String) throws {
        let network = try Self.network(#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "\#(backend)"}}"#)
        let own = LeaseAttributes.own(publicIP: Self.publicIP, publicIPv6: Self.publicIPv6, network: network)
        #expect(own.json == json)
        // Both readers read it back as written.
        let bytes = Array(json.utf8)
        #expect(try LeaseAttributes.parseFields(bytes, key: "k", backendType: nil) == own)
        if let fast = bytes.withUnsafeBufferPointer(LeaseReader.attributes) { #expect(fast == own) }
        // An IPv4-only network writes what it always wrote, whatever this node's IPv6 address.
        let ipv4 = try Self.network(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "\#(backend)"}}"#)
        #expect(LeaseAttributes.own(publicIP: Self.publicIP, publicIPv6: Self.publicIPv6, network: ipv4)
                == LeaseAttributes.own(publicIP: Self.publicIP, network: ipv4))
    }

    @Test("the fast reader reads a dual-stack vxlan lease itself, and agrees with the general reader")
    func readersAgree() throws {
        let value = Array(#"{"PublicIP":"198.18.0.113","PublicIPv6":"fd00::113","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:01:13"},"BackendV6Data":{"VNI":1,"VtepMAC":"22:00:00:00:06:13"}}"#.utf8)
        let fast = try #require(value.withUnsafeBufferPointer(LeaseReader.attributes))
        #expect(fast == (try LeaseAttributes.parseFields(value, key: "k")))
        #expect(fast.backendV6 == LeaseAttributes.VTEP(vni: 1, vtepMAC: MACAddress("22:00:00:00:06:13")!))
        // A broken IPv6 half: the fast reader declines, the general one keeps the IPv4 half.
        for broken in [#""BackendV6Data":{"VtepMAC":"zz"}"#, #""BackendV6Data":"junk""#, #""BackendV6Data":{"VNI":1}"#] {
            let text = #"{"PublicIP":"198.18.0.113","PublicIPv6":"fd00::113","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:01:13"},"# + broken + "}"
            #expect(Array(text.utf8).withUnsafeBufferPointer(LeaseReader.attributes) == nil, "\(broken)")
            let general = try LeaseAttributes.parse(Array(text.utf8), key: "k")
            #expect(general.backendV6 == nil && general.vtepMAC == MACAddress("22:00:00:00:01:13"), "\(broken)")
        }
    }

    static let key = "/coreos.com/network/subnets/10.244.13.0-24&fd00:10:244:d::-64"
    static let good = #"{"PublicIP":"198.18.0.113","PublicIPv6":"fd00::113","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"22:00:00:00:01:13"},"BackendV6Data":{"VNI":1,"VtepMAC":"22:00:00:00:06:13"}}"#

    @Test("a dual-stack peer carries its IPv6 half: subnet from the key, PublicIPv6, BackendV6Data's VtepMAC")
    func peerHalf() throws {
        let network = try Self.network(Self.dual)
        let lease = try Flannel.check(LeaseEntry(key: Self.key, value: Array(Self.good.utf8)), network: network).get()
        let record = lease.record
        #expect(record.subnet == IPv4Prefix("10.244.13.0/24") && record.publicIP == IPv4Address("198.18.0.113"))
        #expect(record.ipv6 == NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:d::/64")!, publicIP: IPv6Address("fd00::113")!,
                                                  vtepMAC: MACAddress("22:00:00:00:06:13")))
        #expect(lease.ipv6Skipped == nil)
        // In an IPv4-only network the same lease is an IPv4 peer, as before, and nothing is noted.
        let ipv4 = try Flannel.check(LeaseEntry(key: Self.key, value: Array(Self.good.utf8)), network: try Self.network(#"{"Network": "10.244.0.0/16"}"#)).get()
        #expect(ipv4.record.ipv6 == nil && ipv4.ipv6Skipped == nil)
        #expect(ipv4.record == NodeRecord(name: "198.18.0.113", publicIP: IPv4Address("198.18.0.113")!, subnet: IPv4Prefix("10.244.13.0/24")!,
                                          vtepMAC: MACAddress("22:00:00:00:01:13"), origin: Self.key))
        // host-gw needs no BackendV6Data.
        let hostGW = try Self.network(#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "host-gw"}}"#)
        let gw = try Flannel.check(LeaseEntry(key: Self.key, value: Array(#"{"PublicIP":"198.18.0.113","PublicIPv6":"fd00::113","BackendType":"host-gw"}"#.utf8)),
                                   network: hostGW).get()
        #expect(gw.record.ipv6 == NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:d::/64")!, publicIP: IPv6Address("fd00::113")!))
    }

    @Test("a dual-stack lease whose IPv6 half is broken: the IPv4 half is programmed, the reason recorded", arguments: [
        ("/p/subnets/10.244.13.0-24", good, "the key names no IPv6 subnet (an IPv4-only lease in a dual-stack network)"),
        ("/p/subnets/10.244.13.0-24&fd00:10:244:d::1-64", good, "the key's IPv6 part fd00:10:244:d::1/64 is not a subnet (host bits set"),
        ("/p/subnets/10.244.13.0-24&fd00:10:245:d::-64", good, "the key's IPv6 subnet fd00:10:245:d::/64 is not a /64 inside the IPv6 network fd00:10:244::/56"),
        ("/p/subnets/10.244.13.0-24&fd00:10:244:d::-80", good, "the key's IPv6 subnet fd00:10:244:d::/80 is not a /64"),
        (key, good.replacingOccurrences(of: #""fd00::113""#, with: "null"), "PublicIPv6: is missing (null)"),
        (key, good.replacingOccurrences(of: #""fd00::113""#, with: #""fe80::113""#), "PublicIPv6: fe80::113 is not a global unicast address"),
        (key, good.replacingOccurrences(of: #""fd00::113""#, with: #""198.18.0.9""#), "PublicIPv6: ::ffff:198.18.0.9 is not a global unicast address"),
        (key, good.replacingOccurrences(of: #""fd00::113""#, with: #""fd00:10:244:d::5""#), "PublicIPv6: fd00:10:244:d::5 is inside the IPv6 pod network"),
        (key, good.replacingOccurrences(of: #","BackendV6Data":{"VNI":1,"VtepMAC":"22:00:00:00:06:13"}"#, with: ""),
         "BackendV6Data: is missing: a dual-stack vxlan node says its IPv6 VTEP's VtepMAC there"),
        (key, good.replacingOccurrences(of: #""VtepMAC":"22:00:00:00:06:13""#, with: #""VtepMAC":"zz""#),
         #"BackendV6Data.VtepMAC: "zz" is not a MAC address"#),
        (key, good.replacingOccurrences(of: #"{"VNI":1,"VtepMAC":"22:00:00:00:06:13"}"#, with: #""junk""#), "BackendV6Data: must be an object"),
        (key, good.replacingOccurrences(of: #"{"VNI":1,"VtepMAC":"22:00:00:00:06:13"}"#, with: #"{"VNI":2,"VtepMAC":"22:00:00:00:06:13"}"#),
         "BackendV6Data.VNI: 2, but the network uses VNI 1"),
    ])
    func brokenHalf(_ key: String, _ value: String, _ reason: String) throws {
        let network = try Self.network(Self.dual)
        let lease = try Flannel.check(LeaseEntry(key: key, value: Array(value.utf8)), network: network).get()
        #expect(lease.record.ipv6 == nil)
        #expect(lease.record.subnet == IPv4Prefix("10.244.13.0/24") && lease.record.vtepMAC == MACAddress("22:00:00:00:01:13"))
        #expect(lease.ipv6Skipped?.hasPrefix(reason) == true, "\(lease.ipv6Skipped ?? "no reason")")
        // The cluster view lists it with the reason; the peer is there.
        let own = (key: "/p/subnets/10.244.1.0-24&fd00:10:244:1::-64", subnet: IPv4Prefix("10.244.1.0/24")!)
        let view = Flannel.clusterView(network: network, leases: [LeaseEntry(key: key, value: Array(value.utf8))], node: "a",
                                       publicIP: Self.publicIP, publicIPv6: Self.publicIPv6, own: own)
        #expect(view.view.peers.count == 1 && view.skipped.isEmpty)
        #expect(view.skippedIPv6.map(\.key) == [key])
        #expect(view.skippedIPv6.first?.description.hasSuffix("; its IPv6 half is skipped (IPv4 is programmed)") == true)
    }

    @Test("this node's record carries its own IPv6 half: its key's IPv6 subnet, its IPv6 address, the derived VTEP MAC")
    func localHalf() throws {
        let own = (key: "/p/subnets/10.244.1.0-24&fd00:10:244:1::-64", subnet: IPv4Prefix("10.244.1.0/24")!)
        let view = Flannel.clusterView(network: try Self.network(Self.dual), leases: [], node: "a", publicIP: Self.publicIP,
                                       publicIPv6: Self.publicIPv6, own: own).view
        #expect(view.local.ipv6 == NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:1::/64")!, publicIP: Self.publicIPv6,
                                                      vtepMAC: MACAddress("0a:01:00:00:00:01")))
        #expect(view.local.ipv6?.vtepAddress.description == "fd00:10:244:1::")
        let ipv4 = Flannel.clusterView(network: try Self.network(#"{"Network": "10.244.0.0/16"}"#), leases: [], node: "a",
                                       publicIP: Self.publicIP, publicIPv6: Self.publicIPv6, own: (key: "/p/subnets/10.244.1.0-24", subnet: own.subnet))
        #expect(ipv4.view.local.ipv6 == nil)
    }

    // MARK: allocation (pure half; etcd in EtcdTests)

    @Test("free IPv6 subnets: from IPv6SubnetMin, past the held ones, at most 100; ownable ones are in range and of the length")
    func freeIPv6() throws {
        let network = try Self.network(#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "IPv6SubnetMax": "fd00:10:244:5::"}"#)
        let held = ["fd00:10:244:1::/64", "fd00:10:244:3::/64", "fd00:10:244:4::/63", "fd00:99::/64", "fd00:10:244::/48"].map { IPv6Prefix($0)! }
        #expect(Flannel.freeIPv6Subnets(network: network, held: held).map(\.description) == ["fd00:10:244:2::/64"],
                "4::/63 holds 4 and 5; a prefix outside or around the network holds nothing")
        let wide = try Self.network(#"{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/32"}"#)
        let free = Flannel.freeIPv6Subnets(network: wide, held: [IPv6Prefix("fd00::/33")!])
        #expect(free.count == 100, "2^32 subnets: the first 100 only")
        #expect(free.first?.description == "fd00:0:8000::/64", "past a held /33 at once")
        #expect(Flannel.isOwnable(ipv6: IPv6Prefix("fd00:10:244:2::/64"), in: network))
        #expect(!Flannel.isOwnable(ipv6: IPv6Prefix("fd00:10:244:6::/64"), in: network), "above IPv6SubnetMax")
        #expect(!Flannel.isOwnable(ipv6: IPv6Prefix("fd00:10:244::/64"), in: network), "below IPv6SubnetMin")
        #expect(!Flannel.isOwnable(ipv6: IPv6Prefix("fd00:10:244:2::/80"), in: network))
        #expect(!Flannel.isOwnable(ipv6: nil, in: network), "dual stack: a key without an IPv6 part is not ours to keep")
        #expect(Flannel.isOwnable(ipv6: nil, in: try Self.network(#"{"Network": "10.244.0.0/16"}"#)))
        #expect(!Flannel.isOwnable(ipv6: IPv6Prefix("fd00:10:244:2::/64"), in: try Self.network(#"{"Network": "10.244.0.0/16"}"#)))
    }

    // MARK: files

    @Test("subnet.env in dual stack: flanneld's lines in flanneld's order, and both subnets read back")
    func subnetEnv() {
        let env = SubnetEnv(network: IPv4Prefix("10.244.0.0/16")!, subnet: IPv4Prefix("10.244.1.0/24")!, mtu: 1450, ipMasq: true,
                            ipv6Network: IPv6Prefix("fd00:10:244::/56"), ipv6Subnet: IPv6Prefix("fd00:10:244:1::/64"))
        // flannel's WriteSubnetFile (pkg/subnet/subnet.go): the IPv4 pair, the IPv6 pair, MTU, IPMASQ;
        // each subnet as its first usable address.
        #expect(env.text == """
            FLANNEL_NETWORK=10.244.0.0/16
            FLANNEL_SUBNET=10.244.1.1/24
            FLANNEL_IPV6_NETWORK=fd00:10:244::/56
            FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64
            FLANNEL_MTU=1450
            FLANNEL_IPMASQ=true

            """)
        #expect(SubnetEnv.previousSubnet(in: env.text) == IPv4Prefix("10.244.1.0/24"))
        #expect(SubnetEnv.previousIPv6Subnet(in: env.text) == IPv6Prefix("fd00:10:244:1::/64"))
        let ipv4 = SubnetEnv(network: IPv4Prefix("10.244.0.0/16")!, subnet: IPv4Prefix("10.244.1.0/24")!, mtu: 1450, ipMasq: true)
        #expect(ipv4.text == "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
        #expect(SubnetEnv.previousIPv6Subnet(in: ipv4.text) == nil)
        // flanneld's own file (the form of its tests): fc00::1:1/64 is fc00::/64.
        #expect(SubnetEnv.previousIPv6Subnet(in: "FLANNEL_IPV6_SUBNET=fc00::1:1/64\n") == IPv6Prefix("fc00::/64"))
    }

    @Test("the CNI configuration in dual stack: two host-local ranges, each with its gateway; IPv4 as before")
    func cni() throws {
        let config = CNIConfig(network: IPv4Prefix("10.244.0.0/16")!, subnet: IPv4Prefix("10.244.1.0/24")!, mtu: 1450,
                               ipv6Subnet: IPv6Prefix("fd00:10:244:1::/64"))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(config.text.utf8)) as? [String: Any])
        let plugin = try #require((json["plugins"] as? [[String: Any]])?.first)
        #expect(plugin["isDefaultGateway"] as? Bool == true, "the bridge plugin's default route for each family of address it assigns")
        let ipam = try #require(plugin["ipam"] as? [String: Any])
        let ranges = try #require(ipam["ranges"] as? [[[String: String]]])
        #expect(ranges == [[["subnet": "10.244.1.0/24", "gateway": "10.244.1.1"]], [["subnet": "fd00:10:244:1::/64", "gateway": "fd00:10:244:1::1"]]])
        let ipv4 = CNIConfig(network: IPv4Prefix("10.244.0.0/16")!, subnet: IPv4Prefix("10.244.1.0/24")!, mtu: 1450)
        #expect(ipv4.text.contains(#""ranges": [[{"subnet": "10.244.1.0/24", "gateway": "10.244.1.1"}]]"#))
        #expect(!ipv4.text.contains("fd00"))
    }

    // MARK: static inventory, flags, interface

    static func inventory(_ nodes: String, network: String = dual) -> String {
        #"{"node": "a", "network": \#(network), "nodes": [\#(nodes)]}"#
    }

    static let a = #"{"name": "a", "publicIP": "198.18.0.1", "subnet": "10.244.1.0/24", "publicIPv6": "fd00::1", "subnetV6": "fd00:10:244:1::/64"}"#
    static let b = #"{"name": "b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "publicIPv6": "fd00::2", "subnetV6": "fd00:10:244:2::/64"}"#

    @Test("a dual-stack static inventory: publicIPv6 and subnetV6 per node, in the view this node's and its peers' IPv6 halves")
    func inventory() throws {
        let config = try AgentConfig.parse(Data(Self.inventory(Self.a + ", " + Self.b).utf8), source: "inv.json")
        #expect(config.nodes.map(\.record.ipv6) == [
            NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:1::/64")!, publicIP: IPv6Address("fd00::1")!),
            NodeRecord.IPv6Half(subnet: IPv6Prefix("fd00:10:244:2::/64")!, publicIP: IPv6Address("fd00::2")!),
        ])
        let view = try config.view(node: "a").view
        #expect(view.local.ipv6?.subnet == IPv6Prefix("fd00:10:244:1::/64"))
        #expect(view.peers.map(\.ipv6?.publicIP) == [IPv6Address("fd00::2")])
        // The guess sync starts the kernel read with says the same as the real view's record.
        let staged = try AgentConfig.stage(Data(Self.inventory(Self.a + ", " + Self.b).utf8), source: "inv.json")
        #expect(staged.provisionalView(node: "a")?.view.local == config.nodes[0].record)
    }

    @Test("a bad IPv6 field of a node is an error naming the node's field", arguments: [
        (#"{"name": "b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "publicIPv6": "fd00::2"}"#,
         "nodes[1].subnetV6: is required: the network is dual stack (EnableIPv6)"),
        (#"{"name": "b", "publicIP": "198.18.0.2", "subnet": "10.244.2.0/24", "subnetV6": "fd00:10:244:2::/64"}"#,
         "nodes[1].publicIPv6: is required: the network is dual stack"),
        (b.replacingOccurrences(of: "fd00:10:244:2::/64", with: "fd00:10:244:2::1/64"), "nodes[1].subnetV6: fd00:10:244:2::1/64 has host bits set"),
        (b.replacingOccurrences(of: "fd00:10:244:2::/64", with: "fd00:10:244:2::/80"), "nodes[1].subnetV6: fd00:10:244:2::/80 is a /80; the network's IPv6SubnetLen is 64"),
        (b.replacingOccurrences(of: "fd00:10:244:2::/64", with: "fd00:10:245:2::/64"), "nodes[1].subnetV6: fd00:10:245:2::/64 is outside the IPv6 network fd00:10:244::/56"),
        (b.replacingOccurrences(of: "fd00:10:244:2::/64", with: "fd00:10:244:1::/64"), #"nodes[1].subnetV6: fd00:10:244:1::/64 is already used by node "a" (nodes[0])"#),
        (b.replacingOccurrences(of: "fd00::2", with: "fd00::1"), #"nodes[1].publicIPv6: fd00::1 is already used by node "a" (nodes[0])"#),
        (b.replacingOccurrences(of: "fd00::2", with: "fd01::1"),
         #"nodes[1].publicIPv6: fd01::1 gives the IPv6 VTEP MAC 0a:01:00:00:00:01 (from its last four bytes), already used by node "a" (nodes[0])"#),
        (b.replacingOccurrences(of: "fd00::2", with: "fe80::2"), "nodes[1].publicIPv6: fe80::2 is link-local"),
        (b.replacingOccurrences(of: "fd00::2", with: "198.18.0.2"), #"nodes[1].publicIPv6: "198.18.0.2" is not an IPv6 address"#),
        (b.replacingOccurrences(of: "fd00::2", with: "fd00:10:244:9::2"), "nodes[1].publicIPv6: fd00:10:244:9::2 is inside the IPv6 pod network"),
    ])
    func badInventory(_ node: String, _ message: String) {
        #expect { _ = try AgentConfig.parse(Data(Self.inventory(Self.a + ", " + node).utf8), source: "inv.json") } throws: { error in
            "\(error)".hasPrefix("inv.json: " + message)
        }
    }

    @Test("IPv6 fields in an IPv4-only inventory are named, not ignored")
    func ipv6FieldsWithoutDualStack() {
        #expect {
            _ = try AgentConfig.parse(Data(Self.inventory(Self.a, network: #"{"Network": "10.244.0.0/16"}"#).utf8), source: "inv.json")
        } throws: { "\($0)".hasPrefix("inv.json: nodes[0].subnetV6: is set but the network is not dual stack") }
    }

    @Test("publicIPv6 in the file (etcd), --public-ipv6 and FLANNELD_PUBLIC_IPV6 are taken")
    func publicIPv6() throws {
        let file = #"{"etcd": {"endpoints": ["http://127.0.0.1:2379"]}, "publicIP": "198.18.0.1", "publicIPv6": "fd00::1"}"#
        #expect(try AgentConfig.parse(Data(file.utf8), source: "agent.json").publicIPv6 == IPv6Address("fd00::1"))
        #expect {
            _ = try AgentConfig.parse(Data(file.replacingOccurrences(of: "fd00::1", with: "ff02::1").utf8), source: "agent.json")
        } throws: { "\($0)".hasPrefix("agent.json: publicIPv6: ff02::1 is not a unicast address") }
        let flag = try FlanneldFlags.parse(arguments: ["--public-ipv6=fd00::5"], environment: [:])
        #expect(try flag.agentConfig(interface: "eth0", interfaceIP: Self.publicIP).publicIPv6 == IPv6Address("fd00::5"))
        let environment = try FlanneldFlags.parse(arguments: [], environment: ["FLANNELD_PUBLIC_IPV6": "fd00::6"])
        #expect(try environment.agentConfig(interface: "eth0", interfaceIP: Self.publicIP).publicIPv6 == IPv6Address("fd00::6"))
        #expect(try FlanneldFlags.parse(arguments: [], environment: [:]).agentConfig(interface: "eth0", interfaceIP: Self.publicIP).publicIPv6 == nil)
    }

    @Test("the underlay's IPv6 address: the first global one that is not link-local, temporary, deprecated or tentative")
    func interfaceIPv6() throws {
        func entry(_ text: String, temporary: Bool = false, deprecated: Bool = false, tentative: Bool = false) -> IPv6InterfaceAddress {
            IPv6InterfaceAddress(address: IPv6Address(text)!, temporary: temporary, deprecated: deprecated, tentative: tentative)
        }
        let eth0 = HostInterface(index: 2, name: "eth0", mtu: 1500, addresses: [Self.publicIP], ipv6Addresses: [
            entry("fe80::1"), entry("2001:db8::aa", temporary: true), entry("2001:db8::bb", deprecated: true),
            entry("2001:db8::cc", tentative: true), entry("fd00::1"), entry("2001:db8::dd"),
        ])
        #expect(eth0.globalIPv6 == IPv6Address("fd00::1"))
        #expect(HostInterface(index: 3, name: "eth1", mtu: 1500, addresses: [], ipv6Addresses: [entry("fe80::1")]).globalIPv6 == nil)
        let host = HostNetwork(interfaces: [eth0], defaultRouteIndex: 2, route: { _ in nil })
        #expect(try InterfaceSelection(names: ["eth0"]).choose(on: host).ipv6Address == IPv6Address("fd00::1"))
        // etcd, no publicIPv6 in the file: the chosen interface's.
        let file = #"{"etcd": {"endpoints": ["http://127.0.0.1:2379"]}, "interfaces": ["eth0"]}"#
        let resolved = try AgentConfig.parse(Data(file.utf8), source: "agent.json").resolvingInterface(on: host)
        #expect(resolved.publicIP == Self.publicIP && resolved.publicIPv6 == IPv6Address("fd00::1"))
    }
}
