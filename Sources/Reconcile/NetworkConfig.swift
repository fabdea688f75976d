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
    /// Dual stack (`EnableIPv6: true`): the IPv6 pod network and its subnets; nil
    /// when EnableIPv6 is false (the default).
    public var ipv6: IPv6Part?
    /// `EnableIPv4` (default true). false: an IPv6-only cluster (`ipv6` is then
    /// set). `network`, `subnetLen`, `subnetMin` and `subnetMax` hold flannel's
    /// empty values (0.0.0.0/0, 0), every record's IPv4 half is empty
    /// (`NodeRecord.ipv6Only`), and the IPv4 plane holds nothing: whatever reads
    /// an IPv4 field of a record or of the network checks this first.
    public var enableIPv4: Bool = true

    /// An IPv6-only network (`EnableIPv4: false`): flannel's empty IPv4 values.
    public static func ipv6Only(_ ipv6: IPv6Part, backendType: String = "vxlan", vni: UInt32 = 1, port: UInt16 = 8472,
                                mtu: UInt32? = nil, directRouting: Bool = false) -> NetworkConfig {
        var config = NetworkConfig(network: IPv4Prefix(IPv4Address(0), 0), subnetLen: 0, subnetMin: IPv4Address(0),
                                   subnetMax: IPv4Address(0), backendType: backendType, vni: vni, port: port, mtu: mtu,
                                   directRouting: directRouting)
        config.ipv6 = ipv6
        config.enableIPv4 = false
        return config
    }

    /// The IPv6 half of a dual-stack network (`IPv6Network`, `IPv6SubnetLen`,
    /// `IPv6SubnetMin`, `IPv6SubnetMax`), with flannel's defaults.
    public struct IPv6Part: Sendable, Hashable {
        public var network: IPv6Prefix
        public var subnetLen: UInt8
        /// The first subnet leases are taken from (flannel: the second subnet of IPv6Network).
        public var subnetMin: IPv6Address
        /// The last subnet leases are taken from (flannel: the last subnet of IPv6Network).
        public var subnetMax: IPv6Address

        public init(network: IPv6Prefix, subnetLen: UInt8 = 64, subnetMin: IPv6Address? = nil, subnetMax: IPv6Address? = nil) {
            self.network = network
            self.subnetLen = subnetLen
            let size = Self.size(subnetLen)
            self.subnetMin = subnetMin ?? IPv6Address(uint128: network.network.uint128 &+ size)
            self.subnetMax = subnetMax ?? IPv6Address(uint128: network.last.uint128 &- (size &- 1))
        }

        /// The number of addresses in a /`length` (0 for a /0: 2^128 does not fit).
        public static func size(_ length: UInt8) -> UInt128 { length == 0 ? 0 : UInt128(1) << (128 - UInt128(length)) }
    }

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
        var config: NetworkConfig
        if try fields.bool("EnableIPv4") == false {
            // flanneld: with both families off there is no network (ipmatch.GetIPFamily fails).
            guard try fields.bool("EnableIPv6") == true else {
                throw fields.error("EnableIPv4", "false needs \"EnableIPv6\": true (an IPv6-only cluster); with both off there is no pod network")
            }
            // flanneld ignores the IPv4 keys then; in a file of ours they are a mistake worth naming.
            if strict, let key = ipv4Keys.first(where: { fields.has($0) }) {
                throw fields.error(key, "is set but EnableIPv4 is false (an IPv6-only cluster has no IPv4 network; remove \(key))")
            }
            guard let ipv6 = try parseIPv6(fields) else { throw fields.error("EnableIPv6", "must be true when EnableIPv4 is false") }
            config = .ipv6Only(ipv6)
        } else {
            config = try parseIPv4(fields)
            config.ipv6 = try parseIPv6(fields)
        }
        try parseBackend(fields, into: &config)
        return config
    }

    static let ipv4Keys = ["Network", "SubnetLen", "SubnetMin", "SubnetMax"]

    /// `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax` with flannel's checks and defaults.
    static func parseIPv4(_ fields: JSONFields) throws(ConfigError) -> NetworkConfig {
        guard var network = try fields.prefix("Network") else { throw fields.error("Network", "is required") }
        if !network.isCanonical {
            // flanneld's decoder (Go's net.ParseCIDR) drops host bits; a file of ours names them.
            guard fields.dialect != .strict else {
                throw fields.error("Network", "\(network) has host bits set (did you mean \(network.network)/\(network.length)?)")
            }
            network = IPv4Prefix(network.network, network.length)
        }
        for (block, why) in reservedBlocks where block.contains(network.network) || network.contains(block.network) {
            throw fields.error("Network", "\(network) overlaps \(why); choose a private range such as 10.244.0.0/16")
        }
        guard network.length <= 28 else {
            throw fields.error("Network", "\(network) is too small: the smallest useful network is a /28 (four /30 subnets)")
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
        return config
    }

    /// `Backend`: the type and what it reads.
    static func parseBackend(_ fields: JSONFields, into config: inout NetworkConfig) throws(ConfigError) {
        let strict = fields.dialect == .strict
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
            if config.backendType == "udp", !config.enableIPv4 {
                throw backend.error("Type", "\"udp\" carries IPv4 only (as flanneld's), and EnableIPv4 is false: an IPv6-only "
                                    + "cluster runs \"vxlan\" or \"host-gw\"")
            }
            if config.backendType == "host-gw" {
                // flanneld's host-gw reads no other key; in a file of ours, one that
                // only vxlan reads is a mistake worth naming.
                if strict, let key = vxlanOnlyKeys.first(where: { backend.has($0) }) {
                    throw backend.error(key, "applies to the vxlan backend only; host-gw routes to each peer's public IP "
                                        + "with no device of its own (remove \(key), or set \"Type\": \"vxlan\")")
                }
                return
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
                return
            }
            // flanneld on Linux takes an explicit 0 as given (`flannel.0`, VNI 0): so does the agent.
            config.vni = UInt32(try backend.integer("VNI", in: 0...16_777_215) ?? 1)
            let port = try backend.integer("Port", in: 0...65535) ?? 0
            config.port = port == 0 ? 8472 : UInt16(port)
            config.mtu = try backend.integer("MTU", in: 0...65535).flatMap { $0 == 0 ? nil : UInt32($0) }
            if let mtu = config.mtu, mtu < 576 { throw backend.error("MTU", "\(mtu) is below the IPv4 minimum of 576") }
            if let mtu = config.mtu, mtu < 1280, !config.enableIPv4 {
                throw backend.error("MTU", "\(mtu) is below the IPv6 minimum of 1280 (EnableIPv4 is false: the device carries IPv6 only)")
            }
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
        return
    }

    /// IPv6 blocks a pod network must not overlap.
    static let reservedIPv6Blocks: [(IPv6Prefix, String)] = [
        (IPv6Prefix(IPv6Address(high: 0, low: 0), 8), "::/8 (reserved: the unspecified and loopback addresses, IPv4-mapped addresses)"),
        (IPv6Prefix(IPv6Address(high: 0xfe80 << 48, low: 0), 10), "fe80::/10 (link-local: never routed)"),
        (IPv6Prefix(IPv6Address(high: 0xff00 << 48, low: 0), 8), "ff00::/8 (multicast)"),
    ]

    /// The IPv6 half, with flannel's validation (pkg/subnet/config.go
    /// `CheckNetworkConfig`) and defaults; nil unless EnableIPv6 is true.
    static func parseIPv6(_ fields: JSONFields) throws(ConfigError) -> IPv6Part? {
        let ipv6Keys = ["IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax"]
        guard try fields.bool("EnableIPv6") == true else {
            // flanneld ignores them then; in a file of ours they are a mistake worth naming.
            if fields.dialect == .strict, let key = ipv6Keys.first(where: { fields.has($0) }) {
                throw fields.error(key, "is set but EnableIPv6 is not true (set \"EnableIPv6\": true for dual stack, or remove \(key))")
            }
            return nil
        }
        guard var network = try fields.ipv6Prefix("IPv6Network") else {
            throw fields.error("IPv6Network", "is required when EnableIPv6 is true (the IPv6 pod network, such as fd00:10:244::/56)")
        }
        if !network.isCanonical {
            // As `Network`: flanneld drops host bits, a file of ours names them.
            guard fields.dialect != .strict else {
                throw fields.error("IPv6Network", "\(network) has host bits set (did you mean \(network.network)/\(network.length)?)")
            }
            network = IPv6Prefix(network.network, network.length)
        }
        for (block, why) in reservedIPv6Blocks where block.overlaps(network) {
            throw fields.error("IPv6Network", "\(network) overlaps \(why); choose a unique local range such as fd00:10:244::/56")
        }
        let subnetLen: UInt8
        if let given = try fields.integer("IPv6SubnetLen", in: 0...128), given != 0 {
            subnetLen = UInt8(given)
            guard subnetLen <= 126 else {
                throw fields.error("IPv6SubnetLen", "\(subnetLen) is too long: at most 126 (a subnet needs room for the VTEP, a bridge and pods)")
            }
            guard Int(subnetLen) >= Int(network.length) + 2 else {
                throw fields.error("IPv6SubnetLen", "\(subnetLen) leaves no room: the network /\(network.length) must hold at least four "
                                   + "subnets, so IPv6SubnetLen must be at least \(Int(network.length) + 2)")
            }
        } else {
            guard network.length <= 124 else {
                throw fields.error("IPv6Network", "\(network) is too small: the smallest useful IPv6 network is a /124 (four /126 subnets)")
            }
            // flannel's default: a /64 each where the network holds at least four, else a quarter.
            subnetLen = network.length <= 62 ? 64 : network.length + 2
        }
        var part = IPv6Part(network: network, subnetLen: subnetLen)
        for key in ["IPv6SubnetMin", "IPv6SubnetMax"] {
            // :: means "not set", as in flannel.
            guard let address = try fields.ipv6(key), !address.isUnspecified else { continue }
            guard network.contains(address) else { throw fields.error(key, "\(address) is outside the IPv6 network \(network)") }
            guard IPv6Prefix(address, subnetLen).isCanonical else {
                throw fields.error(key, "\(address) is not the start of a /\(subnetLen) subnet (not on an IPv6SubnetLen boundary)")
            }
            if key == "IPv6SubnetMin" { part.subnetMin = address } else { part.subnetMax = address }
        }
        guard part.subnetMin <= part.subnetMax else {
            throw fields.error("IPv6SubnetMin", "\(part.subnetMin) is above IPv6SubnetMax \(part.subnetMax): no subnet can be allocated")
        }
        return part
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
        let dual = ipv6.map {
            "\"EnableIPv6\": true, \"IPv6Network\": \"\($0.network)\", \"IPv6SubnetLen\": \($0.subnetLen), "
                + "\"IPv6SubnetMin\": \"\($0.subnetMin)\", \"IPv6SubnetMax\": \"\($0.subnetMax)\", "
        } ?? ""
        guard enableIPv4 else { return "{\"EnableIPv4\": false, \(dual)\"Backend\": {\(backend)}}" }
        return "{\"Network\": \"\(network)\", \"SubnetLen\": \(subnetLen), \"SubnetMin\": \"\(subnetMin)\", "
            + "\"SubnetMax\": \"\(subnetMax)\", \(dual)\"Backend\": {\(backend)}}"
    }
}

extension IPv6Address {
    /// The address as one 128-bit number (`high` the upper half).
    public var uint128: UInt128 { UInt128(high) << 64 | UInt128(low) }

    public init(uint128 value: UInt128) {
        self.init(high: UInt64(truncatingIfNeeded: value >> 64), low: UInt64(truncatingIfNeeded: value))
    }
}
