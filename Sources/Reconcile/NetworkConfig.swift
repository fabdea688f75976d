import Dataplane
import Foundation

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
    /// Accepted for compatibility; vxlan-agent always encapsulates.
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

    /// The VXLAN device name for this VNI, as flannel names it.
    public var deviceName: String { "flannel.\(vni)" }

    /// Parses and validates net-conf.json read from `source`.
    public static func parse(_ data: Data, source: String) throws(ConfigError) -> NetworkConfig {
        try parse(JSONFields.parse(data, source: source))
    }

    public static func parse(_ fields: JSONFields) throws(ConfigError) -> NetworkConfig {
        guard let network = try fields.prefix("Network") else { throw fields.error("Network", "is required") }
        guard network.isCanonical else {
            throw fields.error("Network", "\(network) has host bits set (did you mean \(network.network)/\(network.length)?)")
        }
        guard network.length <= 28 else { throw fields.error("Network", "\(network) is too small: the smallest useful network is a /28") }
        let subnetLen: UInt8
        if let given = try fields.integer("SubnetLen", in: 0...32), given != 0 {
            subnetLen = UInt8(given)
            guard subnetLen > network.length else {
                throw fields.error("SubnetLen", "\(subnetLen) must be longer than the network's /\(network.length)")
            }
            guard subnetLen <= 30 else { throw fields.error("SubnetLen", "\(subnetLen) is too long: at most 30") }
        } else {
            subnetLen = network.length < 24 ? 24 : network.length + 1
        }
        var config = NetworkConfig(network: network, subnetLen: subnetLen)
        for key in ["SubnetMin", "SubnetMax"] {
            guard let address = try fields.ipv4(key) else { continue }
            guard network.contains(address) else { throw fields.error(key, "\(address) is outside the network \(network)") }
            guard IPv4Prefix(address, subnetLen).isCanonical else {
                throw fields.error(key, "\(address) is not the start of a /\(subnetLen) subnet")
            }
            if key == "SubnetMin" { config.subnetMin = address } else { config.subnetMax = address }
        }
        guard config.subnetMin <= config.subnetMax else {
            throw fields.error("SubnetMin", "\(config.subnetMin) is above SubnetMax \(config.subnetMax)")
        }
        if let backend = try fields.object("Backend") {
            config.backendType = try backend.string("Type") ?? "vxlan"
            guard config.backendType == "vxlan" else {
                throw backend.error("Type", "\"\(config.backendType)\" is not supported: vxlan-agent implements the vxlan backend")
            }
            config.vni = UInt32(try backend.integer("VNI", in: 0...16_777_215) ?? 1)
            if config.vni == 0 { config.vni = 1 }
            let port = try backend.integer("Port", in: 0...65535) ?? 0
            config.port = port == 0 ? 8472 : UInt16(port)
            config.mtu = try backend.integer("MTU", in: 0...65535).flatMap { $0 == 0 ? nil : UInt32($0) }
            if let mtu = config.mtu, mtu < 576 { throw backend.error("MTU", "\(mtu) is below the IPv4 minimum of 576") }
            config.directRouting = try backend.bool("DirectRouting") ?? false
        }
        return config
    }

    /// The JSON flannel writes for this configuration.
    public var json: String {
        var backend = "\"Type\": \"\(backendType)\", \"VNI\": \(vni), \"Port\": \(port)"
        if let mtu { backend += ", \"MTU\": \(mtu)" }
        return "{\"Network\": \"\(network)\", \"SubnetLen\": \(subnetLen), \"SubnetMin\": \"\(subnetMin)\", "
            + "\"SubnetMax\": \"\(subnetMax)\", \"Backend\": {\(backend)}}"
    }
}
