/// One change the kernel announced (netlink multicast) that touches what the
/// agent owns, already typed. The daemon keeps its picture of the kernel
/// current with these and diffs only the entry an event names. Generic over
/// the family of the device it concerns (`KernelEvent` for `flannel.<VNI>`,
/// `KernelEvent6` for `flannel-v6.<VNI>`).
public struct KernelEventOf<A: IPFamilyAddress>: Sendable, Hashable {
    public enum Subject: Sendable, Hashable {
        /// An FDB entry or neighbor on the agent's device, a nexthop of its
        /// protocol, a main-table route of its protocol or on its device.
        case entry(EntryOf<A>)
        /// The device itself or its addresses changed: only a full pass (a dump
        /// of everything) can say what that did to the entries on it. The text
        /// says what happened, for logs.
        case device(String)
    }

    public var subject: Subject
    /// `RTM_DEL*`: the entry is gone.
    public var deleted: Bool
    /// Sent in answer to the agent's own request (the message's port id is the
    /// agent's socket's). The kernel stamps FDB notifications with port 0, so
    /// the agent's FDB writes come back as not its own.
    public var own: Bool
    /// `NLM_F_REPLACE`: the entry replaced one with the same key.
    public var replace: Bool

    public init(_ subject: Subject, deleted: Bool = false, own: Bool = false, replace: Bool = false) {
        self.subject = subject
        self.deleted = deleted
        self.own = own
        self.replace = replace
    }
}

public typealias KernelEvent = KernelEventOf<IPv4Address>
public typealias KernelEvent6 = KernelEventOf<IPv6Address>

/// What the kernel identifies an entry by, as the agent's diff keys it: one FDB
/// entry per MAC, one neighbor per address, one nexthop per id, one route per
/// (destination, metric) in the main table. Generic over the plane's family
/// (`EntryKey`: IPv4, `EntryKey6`: IPv6).
public enum EntryKeyOf<A: IPFamilyAddress>: Hashable, Sendable {
    case fdb(MACAddress)
    case neighbor(A)
    case nexthop(UInt32)
    case route(RouteKeyOf<A>)

    // Written out and inlinable: the synthesized conformance of a generic enum is
    // an unspecialized call per key from another module.
    @inlinable
    public static func == (a: EntryKeyOf, b: EntryKeyOf) -> Bool {
        switch (a, b) {
        case (.fdb(let x), .fdb(let y)): x == y
        case (.neighbor(let x), .neighbor(let y)): x == y
        case (.nexthop(let x), .nexthop(let y)): x == y
        case (.route(let x), .route(let y)): x.dst == y.dst && x.priority == y.priority
        default: false
        }
    }

    @inlinable
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .fdb(let mac): hasher.combine(0 as UInt8); hasher.combine(mac)
        case .neighbor(let ip): hasher.combine(1 as UInt8); hasher.combine(ip)
        case .nexthop(let id): hasher.combine(2 as UInt8); hasher.combine(id)
        case .route(let key): hasher.combine(3 as UInt8); hasher.combine(key.dst.hashBits); hasher.combine(key.priority)
        }
    }
}

public typealias EntryKey = EntryKeyOf<IPv4Address>
public typealias EntryKey6 = EntryKeyOf<IPv6Address>

extension EntryOf {
    /// The key of an FDB entry, neighbor, nexthop or route; nil for an address.
    @inlinable
    public var key: EntryKeyOf<A>? {
        switch self {
        case .fdb(let e): .fdb(e.mac)
        case .neighbor(let n): .neighbor(n.ip)
        case .nexthop(let n): .nexthop(n.id)
        case .route(let r): .route(r.key)
        case .address: nil
        }
    }
}
