import Foundation
import Model

/// flannel's network configuration (`net-conf.json`, or `<prefix>/config` in
/// etcd), with flannel's keys and defaults.
public struct NetworkConfig: Sendable, Hashable {
    public var network: IPv4Prefix
    public var subnetLen: UInt8
    /// The first subnet leases are taken from (flannel: the second subnet of Network).
    public var subnetMin: IPv4Address
    /// The last subnet leases are taken from (flannel: the last subnet of Network).
    public var subnetMax: IPv4Address
    public var backendType: String
    public var vni: UInt32
    public var port: UInt16
    /// An explicit MTU for the VXLAN device; default: underlay MTU - 50.
    public var mtu: UInt32?
    /// vxlan: route directly (no encapsulation) to peers on this host's segment,
    /// over VXLAN to the rest, as flannel's `DirectRouting`.
    public var directRouting: Bool

    public init(network: IPv4Prefix, subnetLen: UInt8 = 24, subnetMin: IPv4Address? = nil, subnetMax: IPv4Address? = nil,
                backendType: String = "vxlan", vni: UInt32 = 1, port: UInt16 = 8472, mtu: UInt32? = nil,
                directRouting: Bool = false) {
        self.network = network
        self.subnetLen = subnetLen
        let size = UInt32(truncatingIfNeeded: UInt64(1) << (32 - UInt64(subnetLen)))
        self.subnetMin = subnetMin ?? IPv4Address(network.network.value &+ size)
        self.subnetMax = subnetMax ?? IPv4Address(network.last.value &- (size &- 1))
        self.backendType = backendType
        self.vni = vni
        self.port = port
        self.mtu = mtu
        self.directRouting = directRouting
    }

    /// The agent's device: the VXLAN device for this VNI, as flannel names it,
    /// or udp's TUN device `flannel0`. host-gw keeps no device, but removes a
    /// VXLAN device of this name left by the vxlan backend.
    public var deviceName: String { backendType == "udp" ? Self.tunName : vxlanDeviceName }
    public var vxlanDeviceName: String { "flannel.\(vni)" }
    /// The udp backend's TUN device (flanneld asks the kernel for `flannel%d`: the first is flannel0).
    public static let tunName = "flannel0"
    /// flannel's udp backend's default port.
    public static let udpPort: UInt16 = 8285

    /// The backends vxlan-agent implements (`Backend.Type`).
    public static let backendTypes = ["vxlan", "host-gw", "udp"]
    /// The keys of `Backend` that only the vxlan backend reads.
    static let vxlanOnlyKeys = ["VNI", "Port", "MTU", "DirectRouting", "GBP", "Learning", "MacPrefix"]

    /// Parses and validates net-conf.json read from `source`. `dialect`: `.flanneld`
    /// (the default) for `<prefix>/config` in etcd, read as flanneld reads it (the
    /// last of duplicate keys wins, keys match case-insensitively, keys of other
    /// features are ignored); `.strict` for a file of ours.
    public static func parse(_ data: Data, source: String, dialect: JSONDialect = .flanneld) throws(ConfigError) -> NetworkConfig {
        try parse(JSONFields.parse(data, source: source, dialect: dialect))
    }

    /// flannel's net-conf keys (pkg/subnet/config.go) and the vxlan backend's
    /// (pkg/backend/vxlan), plus our MTU.
    static let keys: Set<String> = [
        "Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend", "EnableIPv4", "EnableIPv6",
        "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "EnableNFTables",
    ]
    static let backendKeys: Set<String> = ["Type", "VNI", "Port", "MTU", "DirectRouting", "GBP", "Learning", "MacPrefix"]

    /// Address blocks a pod network must not overlap: packets to or from them are
    /// dropped or never leave the host, so such a network never converges.
    static let reservedBlocks: [(IPv4Prefix, String)] = [
        (IPv4Prefix(IPv4Address(0), 8), "0.0.0.0/8 (\"this network\": not an address a host can have)"),
        (IPv4Prefix(IPv4Address(127 << 24), 8), "127.0.0.0/8 (loopback: never leaves a host)"),
        (IPv4Prefix(IPv4Address(169 << 24 | 254 << 16), 16), "169.254.0.0/16 (link-local: never routed)"),
        (IPv4Prefix(IPv4Address(224 << 24), 4), "224.0.0.0/4 (multicast)"),
        (IPv4Prefix(IPv4Address(240 << 24), 4), "240.0.0.0/4 (reserved, and the broadcast address 255.255.255.255)"),
    ]

    public static func parse(_ fields: JSONFields) throws(ConfigError) -> NetworkConfig {
        let strict = fields.dialect == .strict
        if strict { try fields.rejectUnknownKeys(keys) }
        guard let network = try fields.prefix("Network") else { throw fields.error("Network", "is required") }
        guard network.isCanonical else {
            throw fields.error("Network", "\(network) has host bits set (did you mean \(network.network)/\(network.length)?)")
        }
        for (block, why) in reservedBlocks where block.contains(network.network) || network.contains(block.network) {
            throw fields.error("Network", "\(network) overlaps \(why); choose a private range such as 10.244.0.0/16")
        }
        guard network.length <= 28 else {
            throw fields.error("Network", "\(network) is too small: the smallest useful network is a /28 (four /30 subnets)")
        }
        if try fields.bool("EnableIPv4") == false {
            throw fields.error("EnableIPv4", "false is not supported: vxlan-agent programs the IPv4 network")
        }
        if strict, try fields.bool("EnableIPv6") == true {
            throw fields.error("EnableIPv6", "true is not supported: vxlan-agent programs the IPv4 network only")
        }
        let subnetLen: UInt8
        if let given = try fields.integer("SubnetLen", in: 0...32), given != 0 {
            subnetLen = UInt8(given)
            guard subnetLen <= 30 else {
                throw fields.error("SubnetLen", "\(subnetLen) is too long: at most 30 (a subnet needs room for the VTEP, a bridge and pods)")
            }
            guard Int(subnetLen) >= Int(network.length) + 2 else {
                throw fields.error("SubnetLen", "\(subnetLen) leaves no room: the network /\(network.length) must hold at least four "
                                   + "subnets, so SubnetLen must be at least \(Int(network.length) + 2)")
            }
        } else {
            // flannel's default: a /24 each where the network holds at least four, else a quarter.
            subnetLen = network.length <= 22 ? 24 : network.length + 2
        }
        var config = NetworkConfig(network: network, subnetLen: subnetLen)
        for key in ["SubnetMin", "SubnetMax"] {
            // 0.0.0.0 means "not set", as in flannel.
            guard let address = try fields.ipv4(key), address.value != 0 else { continue }
            guard network.contains(address) else { throw fields.error(key, "\(address) is outside the network \(network)") }
            guard IPv4Prefix(address, subnetLen).isCanonical else {
                throw fields.error(key, "\(address) is not the start of a /\(subnetLen) subnet (not on a SubnetLen boundary)")
            }
            if key == "SubnetMin" { config.subnetMin = address } else { config.subnetMax = address }
        }
        guard config.subnetMin <= config.subnetMax else {
            throw fields.error("SubnetMin", "\(config.subnetMin) is above SubnetMax \(config.subnetMax): no subnet can be allocated")
        }
        if let backend = try fields.object("Backend") {
            if strict { try backend.rejectUnknownKeys(backendKeys) }
            if let type = try backend.string("Type") {
                // flanneld lower-cases the type.
                guard backendTypes.contains(type.lowercased()) else {
                    let known = ["udp", "wireguard", "ipip", "ipsec", "alivpc", "alloc", "gce", "awsvpc", "tencentvpc", "extension"]
                    let what = known.contains(type.lowercased()) ? "is flannel's \(type.lowercased()) backend, which vxlan-agent does not implement"
                        : "is not a flannel backend"
                    throw backend.error("Type", "\(quoted(type)) \(what): vxlan-agent implements \"vxlan\", \"host-gw\" and \"udp\"")
                }
                config.backendType = type.lowercased()
            }
            if config.backendType == "host-gw" {
                // flanneld's host-gw reads no other key; in a file of ours, one that
                // only vxlan reads is a mistake worth naming.
                if strict, let key = vxlanOnlyKeys.first(where: { backend.has($0) }) {
                    throw backend.error(key, "applies to the vxlan backend only; host-gw routes to each peer's public IP "
                                        + "with no device of its own (remove \(key), or set \"Type\": \"vxlan\")")
                }
                return config
            }
            if config.backendType == "udp" {
                if strict, let key = vxlanOnlyKeys.first(where: { $0 != "Port" && backend.has($0) }) {
                    throw backend.error(key, "applies to the vxlan backend only; udp reads only \"Port\" "
                                        + "(remove \(key), or set \"Type\": \"vxlan\")")
                }
                // flanneld's udp takes Port as it comes (0 would bind a random port no peer
                // knows); 0 means the default here, as for vxlan.
                let port = try backend.integer("Port", in: 0...65535) ?? 0
                config.port = port == 0 ? udpPort : UInt16(port)
                return config
            }
            config.vni = UInt32(try backend.integer("VNI", in: 0...16_777_215) ?? 1)
            if config.vni == 0 { config.vni = 1 }
            let port = try backend.integer("Port", in: 0...65535) ?? 0
            config.port = port == 0 ? 8472 : UInt16(port)
            config.mtu = try backend.integer("MTU", in: 0...65535).flatMap { $0 == 0 ? nil : UInt32($0) }
            if let mtu = config.mtu, mtu < 576 { throw backend.error("MTU", "\(mtu) is below the IPv4 minimum of 576") }
            if let mtu = config.mtu, mtu > 65485 {
                throw backend.error("MTU", "\(mtu) is above 65485, the largest a VXLAN device takes (65535 minus the 50 bytes VXLAN adds)")
            }
            config.directRouting = try backend.bool("DirectRouting") ?? false
            if try backend.bool("GBP") == true {
                throw backend.error("GBP", "true is not supported: vxlan-agent creates devices without group-based policy")
            }
            if strict, try backend.bool("Learning") == true {
                throw backend.error("Learning", "true is not supported: vxlan-agent programs every peer and keeps learning off")
            }
            if strict, let prefix = try backend.string("MacPrefix") {
                throw backend.error("MacPrefix", "\(quoted(prefix)): not supported (flannel uses it on Windows only)")
            }
        }
        return config
    }

    /// The JSON flannel writes for this configuration.
    public var json: String {
        var backend = "\"Type\": \"\(backendType)\""
        if backendType == "udp" { backend += ", \"Port\": \(port)" }
        if backendType == "vxlan" {
            backend += ", \"VNI\": \(vni), \"Port\": \(port)"
            if let mtu { backend += ", \"MTU\": \(mtu)" }
            if directRouting { backend += ", \"DirectRouting\": true" }
        }
        return "{\"Network\": \"\(network)\", \"SubnetLen\": \(subnetLen), \"SubnetMin\": \"\(subnetMin)\", "
            + "\"SubnetMax\": \"\(subnetMax)\", \"Backend\": {\(backend)}}"
    }
}
