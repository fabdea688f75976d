/// Renders kernel objects in iproute2's words, so an operator can paste them
/// after `ip` or `bridge`.
public struct Renderer: Sendable {
    /// The agent's device name (`flannel.1`).
    public var deviceName: String
    /// The agent's own route protocol; other protocols are shown as `proto N`.
    public var proto: UInt8
    /// The agent's device index, when known; other indexes show as `if<N>`.
    public var deviceIndex: Int32?
    /// Names of other devices the agent writes on (the underlay, for direct routes).
    public var otherDevices: [Int32: String]

    public init(deviceName: String, proto: UInt8, deviceIndex: Int32? = nil, otherDevices: [Int32: String] = [:]) {
        self.deviceName = deviceName
        self.proto = proto
        self.deviceIndex = deviceIndex
        self.otherDevices = otherDevices
    }

    /// A route protocol as `ip route` shows it: iproute2's names (rt_protos),
    /// the agent's own, else the number.
    public static func protocolName(_ proto: UInt8) -> String {
        switch proto {
        case 0: "unspec"
        case 1: "redirect"
        case 2: "kernel"
        case 3: "boot"
        case 4: "static"
        case 8: "gated"
        case 9: "ra"
        case 10: "mrt"
        case 11: "zebra"
        case 12: "bird"
        case 13: "dnrouted"
        case 14: "xorp"
        case 15: "ntk"
        case 16: "dhcp"
        case 18: "keepalived"
        case 42: "babel"
        case 80: "calico"
        case 99: "openr"
        case 152: "vxlan-agent"
        case 186: "bgp"
        case 187: "isis"
        case 188: "ospf"
        case 189: "rip"
        case 192: "eigrp"
        default: "\(proto)"
        }
    }

    func dev(_ index: Int32?) -> String {
        guard let index else { return deviceName }
        if let name = otherDevices[index] { return name }
        guard let deviceIndex, index != deviceIndex else { return deviceName }
        return "if\(index)"
    }

    public func describe(_ entry: Entry) -> String { describeEntry(entry) }
    /// An IPv6 plane's entry: the same words, IPv6 addresses as iproute2 prints them.
    public func describe(_ entry: Entry6) -> String { describeEntry(entry) }

    /// Either family's entry (the concrete overloads above are what other
    /// modules call: this is specialized here for each family).
    public func describeEntry<A: IPFamilyAddress>(_ entry: EntryOf<A>) -> String {
        switch entry {
        case .address(let prefix):
            return "address \(prefix) dev \(deviceName)"
        case .fdb(let fdb):
            return "fdb \(fdb.mac) dev \(deviceName) dst \(fdb.dst)" + fdbExtras(fdb) + (fdb.permanent ? "" : " (not permanent)")
        case .neighbor(let neighbor):
            return "neigh \(neighbor.ip) lladdr \(neighbor.mac) dev \(deviceName)" + (neighbor.permanent ? "" : " (not permanent)")
        case .nexthop(let nexthop):
            var text = "nexthop id \(nexthop.id)"
            if let gateway = nexthop.gateway { text += " via \(gateway)" }
            text += " dev \(dev(nexthop.deviceIndex))"
            if nexthop.onlink { text += " onlink" }
            if nexthop.proto != proto { text += " proto \(Self.protocolName(nexthop.proto))" }
            return text
        case .route(let route):
            var text = "route \(route.dst)"
            if let id = route.nexthopID { text += " nhid \(id)" }
            if let gateway = route.gateway { text += " via \(gateway)" }
            text += " dev \(dev(route.deviceIndex))"
            if route.onlink { text += " onlink" }
            if route.proto != proto { text += " proto \(Self.protocolName(route.proto))" }
            if route.priority != 0 { text += " metric \(route.priority)" }
            return text
        }
    }

    /// ` port P vni V via DEV`, as `bridge fdb` prints what differs from the device's defaults.
    func fdbExtras<A: IPFamilyAddress>(_ fdb: FDBEntryOf<A>) -> String {
        var text = ""
        if let port = fdb.port { text += " port \(port)" }
        if let vni = fdb.vni { text += " vni \(vni)" }
        if let via = fdb.via { text += " via if\(via)" }
        return text
    }

    public func describe(_ device: VXLANDevice) -> String {
        "link \(device.name) type vxlan id \(device.vni) local \(device.localIPv6.map(\.description) ?? device.localIP.description) "
            + "dev \(device.underlayName) "
            + "dstport \(device.port) \(device.learning ? "learning" : "nolearning") mtu \(device.mtu) address \(device.mac)"
    }

    /// `link flannel0 type tun multi_queue vnet_hdr persist mtu 1472`, as `ip -d link` shows a TUN device.
    public func describe(_ device: TUNDevice) -> String {
        "link \(device.name) type \(device.layer3 ? "tun" : "tap")\(device.packetInfo ? " pi" : "")"
            + "\(device.multiQueue ? " multi_queue" : "")\(device.vnetHeader ? " vnet_hdr" : "")\(device.persistent ? " persist" : "") mtu \(device.mtu)"
    }

    /// One line per change: `+ ` add, `~ ` change, `- ` remove.
    public func describe(_ change: Change) -> String { describeChange(change) }
    public func describe(_ change: Change6) -> String { describeChange(change) }

    public func describeChange<A: IPFamilyAddress>(_ change: ChangeOf<A>) -> String {
        switch change {
        case .createTUN(let device):
            return "+ " + describe(device)
        case .updateTUN(let old, let new):
            var parts: [String] = []
            if old.mtu != new.mtu { parts.append("mtu \(old.mtu) -> \(new.mtu)") }
            if !old.isUp { parts.append("down -> up") }
            return "~ link \(new.name) " + parts.joined(separator: ", ")
        case .createDevice(let device):
            return "+ " + describe(device)
        case .recreateDevice(let old, let new):
            let why = old.vxlan.map { new.identityDifferences(from: $0) } ?? "is \(old.kind ?? "not vxlan")"
            return "~ " + describe(new) + " (recreate: \(why))"
        case .updateDevice(let old, let new):
            var parts: [String] = []
            if old.mtu != new.mtu { parts.append("mtu \(old.mtu) -> \(new.mtu)") }
            if old.mac != new.mac { parts.append("address \(old.mac.map(\.description) ?? "none") -> \(new.mac)") }
            if !old.isUp { parts.append("down -> up") }
            return "~ link \(new.name) " + parts.joined(separator: ", ")
        case .deleteDevice(let link):
            return "- link \(link.name)"
        case .add(let entry):
            return "+ " + describeEntry(entry)
        case .replace(let old, let new):
            return "~ " + describeEntry(new) + " (was: " + describeDifference(old, new) + ")"
        case .remove(let entry):
            return "- " + describeEntry(entry)
        }
    }

    /// A change in words a person types (`add route ...`, `replace fdb ...`,
    /// `remove neigh ...`, `add link ...`): what a failure message names.
    public func words(_ change: Change) -> String { changeWords(change) }
    public func words(_ change: Change6) -> String { changeWords(change) }

    public func changeWords<A: IPFamilyAddress>(_ change: ChangeOf<A>) -> String {
        switch change {
        case .createTUN(let device): "add " + describe(device)
        case .updateTUN(_, let device): "change link \(device.name)"
        case .createDevice(let device): "add " + describe(device)
        case .recreateDevice(_, let device): "recreate " + describe(device)
        case .updateDevice(_, let device): "change link \(device.name)"
        case .deleteDevice(let link): "remove link \(link.name)"
        case .add(let entry): "add " + describeEntry(entry)
        case .replace(_, let entry): "replace " + describeEntry(entry)
        case .remove(let entry): "remove " + describeEntry(entry)
        }
    }

    func describeDifference<A: IPFamilyAddress>(_ old: EntryOf<A>, _ new: EntryOf<A>) -> String {
        switch (old, new) {
        case (.fdb(let a), .fdb(let b)) where a.mac == b.mac && a.permanent == b.permanent:
            a.dst != b.dst ? "dst \(a.dst)" + fdbExtras(a) : String(fdbExtras(a).dropFirst())
        case (.neighbor(let a), .neighbor(let b)) where a.mac != b.mac: "lladdr \(a.mac)"
        case (.neighbor(let a), .neighbor(let b)) where a.permanent != b.permanent: a.permanent ? "permanent" : "not permanent"
        default: describeEntry(old)
        }
    }
}
