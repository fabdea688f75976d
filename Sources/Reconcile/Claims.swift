import Model

/// What a peer holds that no other peer may hold too, in either plane: its
/// subnet, the backend's own claim (VXLAN: the VTEP MAC), its public address,
/// its name. The IPv4 plane's claims are `PeerClaim`, the IPv6 plane's `PeerClaim6`.
public enum PeerClaimOf<A: IPFamilyAddress>: Hashable, Sendable {
    case subnet(A.Prefix)
    case vtepMAC(MACAddress)
    case publicIP(A)
    case name(String)

    /// Why a peer that claims this too is skipped (the IPv6 plane's claims say so).
    public func conflict(with other: String) -> String {
        let v6 = A.family == IPv6Address.family
        return switch self {
        case .subnet(let subnet): "\(v6 ? "IPv6 " : "")subnet \(subnet) is also claimed by \(other)"
        case .vtepMAC(let mac): "\(v6 ? "IPv6 " : "")vtepMAC \(mac) is also used by \(other)"
        case .publicIP(let ip): "publicIP\(v6 ? "v6" : "") \(ip) is also used by \(other)"
        case .name(let name): "name \(name) appears twice"
        }
    }
}

public typealias PeerClaim = PeerClaimOf<IPv4Address>
public typealias PeerClaim6 = PeerClaimOf<IPv6Address>

/// Who made each claim first, one table per kind of claim (their keys hash
/// cheaply; a table keyed by the enum would hash every claim with SipHash).
struct ClaimTable<A: IPFamilyAddress> {
    private var subnets: [A.Prefix: String]
    private var macs: [MACAddress: String]
    private var ips: [A: String]
    private var names: Set<String>

    init(capacity: Int) {
        subnets = .init(minimumCapacity: capacity)
        macs = .init(minimumCapacity: capacity)
        ips = .init(minimumCapacity: capacity)
        names = .init(minimumCapacity: capacity)
    }

    func owner(_ claim: PeerClaimOf<A>) -> String? {
        switch claim {
        case .subnet(let subnet): subnets[subnet]
        case .vtepMAC(let mac): macs[mac]
        case .publicIP(let ip): ips[ip]
        case .name(let name): names.contains(name) ? name : nil
        }
    }

    mutating func record(_ claim: PeerClaimOf<A>, by name: String) {
        switch claim {
        case .subnet(let subnet): subnets[subnet] = name
        case .vtepMAC(let mac): macs[mac] = name
        case .publicIP(let ip): ips[ip] = name
        case .name(let name): names.insert(name)
        }
    }

    /// A peer's claims, in the order conflicts are reported: subnet, the
    /// backend's (nil: none), public address, name. The first that another
    /// holds, as the reason; else nil, and all of them are recorded as the
    /// peer's. (Four parameters, not an array: no allocation per peer.)
    mutating func claim(subnet: A.Prefix, own: PeerClaimOf<A>?, publicIP: A, name: String) -> String? {
        if let other = subnets[subnet] { return PeerClaimOf<A>.subnet(subnet).conflict(with: other) }
        if let own, let other = owner(own) { return own.conflict(with: other) }
        if let other = ips[publicIP] { return PeerClaimOf<A>.publicIP(publicIP).conflict(with: other) }
        if names.contains(name) { return PeerClaimOf<A>.name(name).conflict(with: name) }
        subnets[subnet] = name
        if let own { record(own, by: name) }
        ips[publicIP] = name
        names.insert(name)
        return nil
    }
}

/// Names the peer behind each entry of a plane (output names each change's peer).
public struct PeerIndexOf<A: IPFamilyAddress>: Sendable {
    /// VTEP addresses and public addresses (disjoint: a public address is never in the pod network).
    private var byAddress: [A: String]
    private var bySubnet: [A.Prefix: String]

    init(capacity: Int) {
        byAddress = .init(minimumCapacity: 2 * capacity)
        bySubnet = .init(minimumCapacity: capacity)
    }

    mutating func add(_ name: String, vtep: A, publicIP: A, subnet: A.Prefix) {
        byAddress[vtep] = name
        byAddress[publicIP] = name
        bySubnet[subnet] = name
    }

    /// The peer an entry belongs to, if it is one of the desired peers'.
    public func peer(of entry: EntryOf<A>) -> String? {
        switch entry {
        case .fdb(let e): byAddress[e.dst]
        case .neighbor(let n): byAddress[n.ip]
        case .nexthop(let n): n.gateway.flatMap { byAddress[$0] }
        case .route(let r): bySubnet[r.dst]
        case .address: nil
        }
    }
}
