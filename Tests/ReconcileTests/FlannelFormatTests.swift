import Foundation
import Model
import Reconcile
import Registry
import Testing

@Suite("flannel's formats and the daemon's configuration")
struct FlannelFormatTests {
    @Test("a lease value is flanneld's JSON, byte for byte, and parses back")
    func leaseJSON() throws {
        let attributes = LeaseAttributes(publicIP: IPv4Address("198.18.0.1")!, vni: 1, vtepMAC: MACAddress("0e:01:c6:12:00:01")!)
        #expect(attributes.json == #"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:01"}}"#)
        let lease = try Lease.parse(key: "/coreos.com/network/subnets/10.244.3.0-24", value: Array(attributes.json.utf8))
        #expect(lease.subnet == IPv4Prefix("10.244.3.0/24"))
        #expect(lease.attributes == attributes)
        #expect(lease.record.origin == "/coreos.com/network/subnets/10.244.3.0-24")
        #expect(Flannel.leaseKey(prefix: "/coreos.com/network/", subnet: lease.subnet) == "/coreos.com/network/subnets/10.244.3.0-24")
    }

    @Test("a bad lease is refused with its key and field", arguments: [
        ("10.244.3.0-24", #"{"PublicIP": "198.18.0.1", "BackendType": "vxlan", "BackendData": {"VtepMAC": "zz"}}"#,
         #"/p/subnets/10.244.3.0-24: BackendData.VtepMAC: "zz" is not a MAC address"#),
        ("10.244.3.0-24", #"{"BackendData": {"VtepMAC": "0e:00:00:00:00:01"}}"#, "/p/subnets/10.244.3.0-24: PublicIP: is required"),
        ("10.244.3.0-24", #"{"PublicIP": "198.18.0.1", "BackendType": "host-gw"}"#,
         #"/p/subnets/10.244.3.0-24: BackendType: "host-gw": only vxlan leases can be reached over VXLAN"#),
        ("10.244.3.0-24", #"{"PublicIP": "198.18.0.1", "BackendType": "vxlan"}"#, "/p/subnets/10.244.3.0-24: BackendData: is required (VtepMAC)"),
        ("10.244.3.0-24", #"{"PublicIP": "198.18.0.1"}"#,
         #"/p/subnets/10.244.3.0-24: BackendType: is missing: flanneld programs only leases with "BackendType": "vxlan""#),
        ("10.244.3.1-24", #"{}"#,
         "/p/subnets/10.244.3.1-24: the key names 10.244.3.1/24, which is not a subnet (host bits set; its subnet is 10.244.3.0/24)"),
        ("10.244.3.0", #"{}"#, "/p/subnets/10.244.3.0: the key does not name a subnet "
         + "(expected .../subnets/a.b.c.d-len, or a.b.c.d-len&ipv6-len for dual stack)"),
    ])
    func badLease(key: String, value: String, message: String) {
        #expect(throws: ConfigError.self) { try Lease.parse(key: "/p/subnets/" + key, value: Array(value.utf8)) }
        do { _ = try Lease.parse(key: "/p/subnets/" + key, value: Array(value.utf8)) } catch {
            #expect("\(error)" == message)
        }
    }

    @Test("subnet.env as flanneld writes it; the previous subnet is read back")
    func subnetEnv() {
        let env = SubnetEnv(network: IPv4Prefix("10.244.0.0/16")!, subnet: IPv4Prefix("10.244.7.0/24")!, mtu: 1450, ipMasq: true)
        #expect(env.text == "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
        #expect(SubnetEnv.previousSubnet(in: env.text) == IPv4Prefix("10.244.7.0/24"))
        #expect(SubnetEnv.previousSubnet(in: "FLANNEL_NETWORK=10.244.0.0/16\n") == nil)
    }

    @Test("an etcd configuration parses with flannel's defaults")
    func etcdConfig() throws {
        let config = try AgentConfig.parse(Data(#"{"node": "n1", "publicIP": "198.18.0.1", "etcd": {"endpoints": ["http://127.0.0.1:2379"]}}"#.utf8), source: "c.json")
        #expect(config.etcd?.prefix == "/coreos.com/network")
        #expect(config.network == nil && config.nodes.isEmpty)
        #expect(config.daemon.subnetFile == "/run/flannel/subnet.env")
        #expect(config.daemon.ipMasq)
        #expect(config.daemon.metricsAddress?.port == 9472)
        #expect(config.daemon.resyncInterval == .seconds(60))
    }

    @Test("a bad daemon or etcd configuration names the field", arguments: [
        (#"{"publicIP": "198.18.0.1", "etcd": {}, "nodes": []}"#, #"c.json: etcd: cannot be used with "nodes": choose one registry"#),
        (#"{"etcd": {}}"#, "c.json: publicIP: is required with the etcd registry (this node's underlay address)"),
        (#"{"publicIP": "198.18.0.1", "etcd": {"endpoints": ["127.0.0.1:2379"]}}"#,
         #"c.json: etcd.endpoints[0]: "127.0.0.1:2379" is not an endpoint (http://host:port or https://host:port)"#),
        (#"{"publicIP": "198.18.0.1", "etcd": {"certFile": "/nonexistent.pem"}}"#, "c.json: etcd.certFile: /nonexistent.pem does not exist"),
        (#"{"publicIP": "198.18.0.1", "etcd": {}, "network": {"Network": "10.244.0.0/16"}}"#,
         "c.json: network: comes from etcd (<prefix>/config) when the registry is etcd; remove it here"),
        (#"{"publicIP": "198.18.0.1", "etcd": {}, "metricsAddress": "localhost"}"#,
         #"c.json: metricsAddress: "localhost" is not IPv4:port (e.g. 127.0.0.1:9472; "" serves none)"#),
        (#"{"publicIP": "198.18.0.1", "etcd": {}, "resyncInterval": 0}"#, "c.json: resyncInterval: 0 is out of range 1...86400"),
        (#"{"publicIP": "198.18.0.1", "etcd": {"colour": 1}}"#, "c.json: etcd.colour: unknown key (expected one of: caFile, certFile, endpoints, keyFile, prefix)"),
    ])
    func badConfig(text: String, message: String) {
        do {
            _ = try AgentConfig.parse(Data(text.utf8), source: "c.json")
            Issue.record("accepted: \(text)")
        } catch {
            #expect("\(error)" == message)
        }
    }
}

@Suite("deploy/ examples")
struct DeployExampleTests {
    @Test("the static example parses; the etcd example is refused only for its certificate files, named")
    func examples() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let staticConfig = try AgentConfig.load(path: "\(root)/deploy/config.static.example.json")
        #expect(staticConfig.nodes.count == 3 && staticConfig.daemon.ipMasq)
        do {
            _ = try AgentConfig.load(path: "\(root)/deploy/config.etcd.example.json")
            Issue.record("the example's certificate files do not exist here")
        } catch {
            #expect("\(error)".hasSuffix("etcd.caFile: /etc/vxlan-agent/etcd-ca.pem does not exist"), "\(error)")
        }
        let netConf = try NetworkConfig.parse(Data(contentsOf: URL(fileURLWithPath: "\(root)/deploy/net-conf.example.json")), source: "net-conf")
        #expect(netConf.network == IPv4Prefix("10.244.0.0/16"))
    }
}
