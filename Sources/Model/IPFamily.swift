/// An address family the agent writes kernel objects in: IPv4 (`flannel.<VNI>`)
/// or IPv6 (`flannel-v6.<VNI>`, dual stack). The kernel objects (neighbors,
/// FDB entries, nexthops, routes) are generic over it, so both families share
/// one diff and one writer; the IPv4 names (`Route`, `Neighbor`, ...) are the
/// IPv4 instances.
public protocol IPFamilyAddress: Hashable, Comparable, Sendable, TextCodable {
    associatedtype Prefix: IPFamilyPrefix where Prefix.Address == Self
    /// `AF_INET` or `AF_INET6`.
    static var family: UInt8 { get }
    /// The address's length on the wire: 4 or 16.
    static var byteCount: Int { get }
    /// The family in iproute2's words (`-4`/`-6`), for messages: "IPv4", "IPv6".
    static var familyName: String { get }
    /// The unspecified address (0.0.0.0, ::).
    static var zero: Self { get }
    /// From network-order bytes (exactly `byteCount` of them).
    init?(networkBytes: UnsafeRawBufferPointer)
    /// Calls `body` with the address's network-order bytes.
    func withNetworkBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

/// A prefix of an `IPFamilyAddress`.
public protocol IPFamilyPrefix: Hashable, Comparable, Sendable, TextCodable {
    associatedtype Address: IPFamilyAddress where Address.Prefix == Self
    var address: Address { get }
    var length: UInt8 { get }
    init(_ address: Address, _ length: UInt8)
    var network: Address { get }
    var isCanonical: Bool { get }
    func contains(_ address: Address) -> Bool
    /// The longest prefix: 32 or 128 (a host route).
    static var maxLength: UInt8 { get }
    /// Address and length folded into 64 bits, for `RouteKey`'s cheap hash.
    var hashBits: UInt64 { get }
}

extension IPv4Address: IPFamilyAddress {
    public typealias Prefix = IPv4Prefix
    @inlinable public static var family: UInt8 { 2 }
    @inlinable public static var byteCount: Int { 4 }
    public static var familyName: String { "IPv4" }
    @inlinable public static var zero: IPv4Address { IPv4Address(0) }

    @inlinable
    public init?(networkBytes: UnsafeRawBufferPointer) {
        guard networkBytes.count == 4 else { return nil }
        self.init(UInt32(bigEndian: networkBytes.loadUnaligned(as: UInt32.self)))
    }

    @inlinable
    public func withNetworkBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: value.bigEndian, body)
    }
}

extension IPv4Prefix: IPFamilyPrefix {
    @inlinable public static var maxLength: UInt8 { 32 }
    @inlinable public var hashBits: UInt64 { UInt64(address.value) << 8 | UInt64(length) }
}

extension IPv6Address: IPFamilyAddress {
    public typealias Prefix = IPv6Prefix
    @inlinable public static var family: UInt8 { 10 }
    @inlinable public static var byteCount: Int { 16 }
    public static var familyName: String { "IPv6" }
    @inlinable public static var zero: IPv6Address { IPv6Address(high: 0, low: 0) }

    @inlinable
    public init?(networkBytes: UnsafeRawBufferPointer) {
        guard networkBytes.count == 16 else { return nil }
        self.init(high: UInt64(bigEndian: networkBytes.loadUnaligned(as: UInt64.self)),
                  low: UInt64(bigEndian: networkBytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }

    @inlinable
    public func withNetworkBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: (high.bigEndian, low.bigEndian), body)
    }
}

extension IPv6Prefix: IPFamilyPrefix {
    @inlinable public static var maxLength: UInt8 { 128 }
    /// Multiplying by an odd constant is a bijection: canonical /64s never collide.
    @inlinable public var hashBits: UInt64 { address.high &* 0x9e37_79b9_7f4a_7c15 ^ address.low ^ UInt64(length) }
}
