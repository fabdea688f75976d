import Dataplane
import Foundation
import Reconcile

/// flannel's formats, spoken exactly: a node running flanneld and a node
/// running vxlan-agent share one cluster (same etcd keys, same JSON, same files).
public enum Flannel {
    public static let defaultPrefix = "/coreos.com/network"

    /// `<prefix>/config`: the network configuration (net-conf.json).
    public static func configKey(prefix: String) -> String { trimmed(prefix) + "/config" }
    /// `<prefix>/subnets/`: one key per lease.
    public static func subnetsPrefix(prefix: String) -> String { trimmed(prefix) + "/subnets/" }
    /// `<prefix>/subnets/10.244.1.0-24`.
    public static func leaseKey(prefix: String, subnet: IPv4Prefix) -> String {
        subnetsPrefix(prefix: prefix) + "\(subnet.network)-\(subnet.length)"
    }

    /// The subnet a lease key names, or nil for a key that is not `a.b.c.d-len`.
    public static func subnet(ofLeaseKey key: String) -> IPv4Prefix? {
        guard let name = key.split(separator: "/").last else { return nil }
        let parts = name.split(separator: "-")
        guard parts.count == 2, let subnet = IPv4Prefix("\(parts[0])/\(parts[1])"), subnet.isCanonical else { return nil }
        return subnet
    }

    static func trimmed(_ prefix: String) -> String {
        var prefix = prefix
        while prefix.hasSuffix("/") { prefix.removeLast() }
        return prefix
    }
}

/// What a flannel lease says about its node (`LeaseAttrs` with the vxlan
/// backend's `BackendData`).
public struct LeaseAttributes: Sendable, Hashable {
    public var publicIP: IPv4Address
    public var backendType: String
    public var vni: UInt32?
    public var vtepMAC: MACAddress

    public init(publicIP: IPv4Address, backendType: String = "vxlan", vni: UInt32?, vtepMAC: MACAddress) {
        self.publicIP = publicIP
        self.backendType = backendType
        self.vni = vni
        self.vtepMAC = vtepMAC
    }

    /// The JSON flanneld writes, field for field and in its order.
    public var json: String {
        let vniField = vni.map { "\"VNI\":\($0)," } ?? ""
        return "{\"PublicIP\":\"\(publicIP)\",\"PublicIPv6\":null,\"BackendType\":\"\(backendType)\","
            + "\"BackendData\":{\(vniField)\"VtepMAC\":\"\(vtepMAC)\"}}"
    }

    /// Parses a lease value; the error names the key and the field.
    public static func parse(_ value: [UInt8], key: String) throws(ConfigError) -> LeaseAttributes {
        let fields = try JSONFields.parse(Data(value), source: key)
        guard let ip = try fields.ipv4("PublicIP") else { throw fields.error("PublicIP", "is required") }
        let type = try fields.string("BackendType") ?? "vxlan"
        guard type == "vxlan" else {
            throw fields.error("BackendType", "\"\(type)\": only vxlan leases can be reached over VXLAN")
        }
        guard let data = try fields.object("BackendData") else { throw fields.error("BackendData", "is required (VtepMAC)") }
        guard let macText = try data.string("VtepMAC") else { throw data.error("VtepMAC", "is required") }
        guard let mac = MACAddress(macText) else { throw data.error("VtepMAC", "\"\(macText)\" is not a MAC address") }
        let vni = try data.integer("VNI", in: 0...16_777_215).map { UInt32($0) }
        return LeaseAttributes(publicIP: ip, backendType: type, vni: vni, vtepMAC: mac)
    }
}

/// One lease read from the registry: its subnet and attributes, or why it is unusable.
public struct Lease: Sendable, Hashable {
    public var key: String
    public var subnet: IPv4Prefix
    public var attributes: LeaseAttributes
    /// The etcd lease the key is attached to (0: none).
    public var etcdLease: Int64

    public init(key: String, subnet: IPv4Prefix, attributes: LeaseAttributes, etcdLease: Int64 = 0) {
        self.key = key
        self.subnet = subnet
        self.attributes = attributes
        self.etcdLease = etcdLease
    }

    /// Parses one key of `<prefix>/subnets/`; the error names the key.
    public static func parse(key: String, value: [UInt8], etcdLease: Int64 = 0) throws(ConfigError) -> Lease {
        guard let subnet = Flannel.subnet(ofLeaseKey: key) else {
            throw ConfigError(source: key, field: "", message: "the key does not name a subnet (expected .../subnets/a.b.c.d-len)")
        }
        return Lease(key: key, subnet: subnet, attributes: try LeaseAttributes.parse(value, key: key), etcdLease: etcdLease)
    }

    /// The node as the reconciler sees it: named by its public IP (flannel
    /// leases carry no node name), with the key as its origin.
    public var record: NodeRecord {
        NodeRecord(name: "\(attributes.publicIP)", publicIP: attributes.publicIP, subnet: subnet,
                   vtepMAC: attributes.vtepMAC, origin: key)
    }
}

/// `/run/flannel/subnet.env`, as flanneld writes it and CNI's flannel plugin reads it.
public struct SubnetEnv: Sendable, Hashable {
    public var network: IPv4Prefix
    /// This node's subnet (the file holds its first usable address: `10.244.1.1/24`).
    public var subnet: IPv4Prefix
    public var mtu: UInt32
    public var ipMasq: Bool

    public init(network: IPv4Prefix, subnet: IPv4Prefix, mtu: UInt32, ipMasq: Bool) {
        self.network = network
        self.subnet = subnet
        self.mtu = mtu
        self.ipMasq = ipMasq
    }

    public var text: String {
        """
        FLANNEL_NETWORK=\(network)
        FLANNEL_SUBNET=\(IPv4Address(subnet.network.value &+ 1))/\(subnet.length)
        FLANNEL_MTU=\(mtu)
        FLANNEL_IPMASQ=\(ipMasq)

        """
    }

    /// The subnet a previous run wrote, if the file exists and says one.
    public static func previousSubnet(in text: String) -> IPv4Prefix? {
        for line in text.split(separator: "\n") where line.hasPrefix("FLANNEL_SUBNET=") {
            guard let prefix = IPv4Prefix(String(line.dropFirst("FLANNEL_SUBNET=".count))) else { return nil }
            return IPv4Prefix(prefix.network, prefix.length)
        }
        return nil
    }
}

/// The CNI network configuration list for this node's pods: the reference
/// `bridge` plugin with `host-local` addresses from the node's subnet, the way
/// flannel's CNI plugin delegates (gateway on the bridge, no masquerade by the
/// plugin: the agent masquerades).
public struct CNIConfig: Sendable, Hashable {
    public var name: String
    public var bridge: String
    public var network: IPv4Prefix
    public var subnet: IPv4Prefix
    public var mtu: UInt32

    public init(name: String = "vxlan-agent", bridge: String = "cni0", network: IPv4Prefix, subnet: IPv4Prefix, mtu: UInt32) {
        self.name = name
        self.bridge = bridge
        self.network = network
        self.subnet = subnet
        self.mtu = mtu
    }

    public var text: String {
        let gateway = IPv4Address(subnet.network.value &+ 1)
        return """
        {
          "cniVersion": "1.0.0",
          "name": "\(name)",
          "plugins": [
            {
              "type": "bridge",
              "bridge": "\(bridge)",
              "isGateway": true,
              "isDefaultGateway": true,
              "ipMasq": false,
              "hairpinMode": true,
              "mtu": \(mtu),
              "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "\(subnet)", "gateway": "\(gateway)"}]]
              }
            }
          ]
        }

        """
    }
}
