import Foundation
import Model
import Reconcile

/// flannel's formats, spoken exactly: a node running flanneld and a node
/// running vxlan-agent share one cluster (same etcd keys, same JSON, same files).
public enum Flannel {
    public static let defaultPrefix = "/coreos.com/network"

    /// `<prefix>/config`: the network configuration (net-conf.json).
    public static func configKey(prefix: String) -> String { trimmed(prefix) + "/config" }
    /// `<prefix>/subnets/`: one key per lease.
    public static func subnetsPrefix(prefix: String) -> String { trimmed(prefix) + "/subnets/" }
    /// `<prefix>/subnets/10.244.1.0-24`; dual stack `10.244.1.0-24&fd00:10:244:1::-64`
    /// (flannel's `MakeSubnetKey`: the IPv6 address as Go writes it, `-`, its length).
    public static func leaseKey(prefix: String, subnet: IPv4Prefix, ipv6: IPv6Prefix? = nil) -> String {
        subnetsPrefix(prefix: prefix) + "\(subnet.network)-\(subnet.length)" + (ipv6.map { "&\($0.network)-\($0.length)" } ?? "")
    }

    /// An IPv6-only network's key, as flanneld writes it (`MakeSubnetKey` with the
    /// empty IPv4 subnet): `<prefix>/subnets/0.0.0.0-0&fd00:10:244:1::-64`.
    public static func leaseKey(prefix: String, ipv6Only subnet: IPv6Prefix) -> String {
        leaseKey(prefix: prefix, subnet: NodeRecord.noIPv4Subnet, ipv6: subnet)
    }

    /// The IPv6 subnet a key keeps from being allocated: the IPv6 part of a
    /// dual-stack or IPv6-only key, also when its IPv4 part does not parse.
    public static func heldIPv6Subnet(byLeaseKey key: String) -> IPv6Prefix? {
        if let subnets = subnets(ofLeaseKey: key) { return subnets.ipv6 }
        let name = lastSegment(key)
        guard let ampersand = name.utf8.lastIndex(of: UInt8(ascii: "&")) else { return nil }
        return ipv6Part(name[name.utf8.index(after: ampersand)...])
    }

    /// What a lease key names, in flannel's forms (`MakeSubnetKey`/`ParseSubnetKey`
    /// in flannel's pkg/subnet), read from the key's last segment: `10.244.13.0-24`;
    /// dual stack `10.244.13.0-24&fd00:10:244:d::-64`; IPv6 only
    /// `0.0.0.0-0&fd00:10:244:d::-64` (flannel's empty IPv4 subnet). nil for anything
    /// else. Host bits are kept as written (`isCanonical` tells).
    public static func subnets(ofLeaseKey key: String) -> LeaseKeySubnets? {
        subnets(ofName: lastSegment(key))
    }

    /// The IPv4 subnet of an IPv4 or dual-stack key, if canonical; nil for an
    /// IPv6-only key or one that names no subnet.
    public static func subnet(ofLeaseKey key: String) -> IPv4Prefix? {
        guard let subnet = subnets(ofLeaseKey: key)?.ipv4, subnet.isCanonical else { return nil }
        return subnet
    }

    /// The IPv4 subnet a key keeps from being allocated, whatever its value says
    /// (a lease whose value is broken still has a node behind it, or will have).
    /// Beyond our own parser it takes what flanneld's takes, and a little more:
    /// flannel's pattern is not anchored at the start (`…/subnets/x10.244.9.0-24`
    /// is 10.244.9.0/24 to flanneld), and the IPv4 part of a key whose IPv6 part is
    /// broken is kept here. Linear in the key's length, whatever the key. IPv6-only
    /// keys hold no IPv4 subnet.
    public static func heldSubnet(byLeaseKey key: String) -> IPv4Prefix? {
        if let subnets = subnets(ofLeaseKey: key) { return subnets.ipv4 }
        var name = lastSegment(key)
        if let ampersand = name.utf8.lastIndex(of: UInt8(ascii: "&")) { name = name[..<ampersand] }
        guard let dash = name.utf8.lastIndex(of: UInt8(ascii: "-")),
              let length = decimal(name[name.utf8.index(after: dash)...], max: 32) else { return nil }
        // The digits and dots before the length; their last four parts are the address.
        let run = name[..<dash].utf8.reversed().prefix { ($0 >= 48 && $0 <= 57) || $0 == 46 }
        let parts = String(decoding: run.reversed(), as: UTF8.self).split(separator: ".", omittingEmptySubsequences: false).suffix(4)
        guard parts.count == 4, let address = IPv4Address(parts.joined(separator: ".")) else { return nil }
        return address.value == 0 && length == 0 ? nil : IPv4Prefix(address, UInt8(length))
    }

    // A key is read by its UTF-8 bytes, not its Characters (a join reads 10,000
    // of them; grapheme breaking cost more than the rest). The same answers: the
    // separators are ASCII, and every part is read by a parser of ASCII digits,
    // dots or hex, so where a separator followed by a combining mark makes the
    // two readings part ways, both find no subnet. (Except `heldSubnet`, which
    // drops what follows the last '&': with a combining mark after it, it now
    // holds the subnet before it, as flanneld's pattern does.)

    static func lastSegment(_ key: String) -> Substring {
        guard let slash = key.utf8.lastIndex(of: UInt8(ascii: "/")) else { return key[...] }
        return key[key.utf8.index(after: slash)...]
    }

    static func subnets(ofName name: Substring) -> LeaseKeySubnets? {
        let ampersand = name.utf8.firstIndex(of: UInt8(ascii: "&"))
        guard let ipv4 = ipv4Part(name[..<(ampersand ?? name.endIndex)]) else { return nil }
        guard let ampersand else { return LeaseKeySubnets(ipv4: ipv4, ipv6: nil) }
        guard let ipv6 = ipv6Part(name[name.utf8.index(after: ampersand)...]) else { return nil }
        if ipv4.address.value == 0 && ipv4.length == 0 { return LeaseKeySubnets(ipv4: nil, ipv6: ipv6) }
        return LeaseKeySubnets(ipv4: ipv4, ipv6: ipv6)
    }

    /// `a.b.c.d-len`: flannel reads the length as a decimal (leading zeros allowed).
    static func ipv4Part(_ text: Substring) -> IPv4Prefix? {
        guard let dash = text.utf8.lastIndex(of: UInt8(ascii: "-")), let address = IPv4Address(text[..<dash]),
              let length = decimal(text[text.utf8.index(after: dash)...], max: 32) else { return nil }
        return IPv4Prefix(address, UInt8(length))
    }

    /// `fd00:10:244:d::-64`: flannel's pattern allows lower-case hex digits and colons
    /// only, and a length up to 127 (it parses it into 7 bits).
    static func ipv6Part(_ text: Substring) -> IPv6Prefix? {
        guard let dash = text.utf8.lastIndex(of: UInt8(ascii: "-")) else { return nil }
        let addressText = text[..<dash]
        let allowed = addressText.utf8.allSatisfy { ($0 >= 48 && $0 <= 58) || ($0 >= 97 && $0 <= 102) }
        guard allowed, let address = IPv6Address(addressText),
              let length = decimal(text[text.utf8.index(after: dash)...], max: 127) else { return nil }
        return IPv6Prefix(address, UInt8(length))
    }

    /// One to four ASCII digits, at most `max`.
    static func decimal(_ text: Substring, max: Int) -> Int? {
        var value = 0, count = 0
        for byte in text.utf8 {
            guard byte >= 48 && byte <= 57, count < 4 else { return nil }
            value = value * 10 + Int(byte - 48)
            count += 1
        }
        return count > 0 && value <= max ? value : nil
    }

    static func trimmed(_ prefix: String) -> String {
        var prefix = prefix
        while prefix.hasSuffix("/") { prefix.removeLast() }
        return prefix
    }

    /// Text from a lease (its key, a value echoed in a reason) made safe for a log
    /// line or a terminal: invisible characters escaped as every message of the
    /// agent escapes them (`\u0000`, Reconcile's `escaped`), and at most `limit`
    /// characters, the middle of a longer text elided (its end often says what is wrong).
    public static func printable(_ text: String, limit: Int = 256) -> String {
        let scalars = Array(text.unicodeScalars)
        func clean(_ part: ArraySlice<Unicode.Scalar>) -> String {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: part)
            return escaped(String(view), limit: .max, quotes: false)
        }
        guard scalars.count > limit else { return clean(scalars[...]) }
        let half = max(limit / 2, 1)
        return clean(scalars[..<half]) + "…(\(scalars.count) characters)…" + clean(scalars[(scalars.count - half)...])
    }

    static func hasControlCharacters(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || ($0.value >= 0x7f && $0.value < 0xa0) }
    }
}

/// The subnets a lease key names: IPv4, dual stack, or IPv6 only.
public struct LeaseKeySubnets: Sendable, Hashable {
    /// nil for an IPv6-only key.
    public var ipv4: IPv4Prefix?
    /// The IPv6 subnet of a dual-stack or IPv6-only key.
    public var ipv6: IPv6Prefix?

    public init(ipv4: IPv4Prefix?, ipv6: IPv6Prefix?) {
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }
}

/// What a flannel lease says about its node (`LeaseAttrs` with the vxlan
/// backend's `BackendData`).
public struct LeaseAttributes: Sendable, Hashable {
    public var publicIP: IPv4Address
    public var backendType: String
    public var vni: UInt32?
    /// The vxlan backend's VTEP MAC (`BackendData.VtepMAC`); nil for host-gw, which has no `BackendData`.
    public var vtepMAC: MACAddress?
    /// A dual-stack node's IPv6 underlay address (`PublicIPv6`).
    public var publicIPv6: IPv6Address?
    /// A dual-stack node's IPv6 VTEP (`BackendV6Data`), when it parses.
    public var backendV6: VTEP?

    /// A VTEP as `BackendData`/`BackendV6Data` describe it.
    public struct VTEP: Sendable, Hashable {
        public var vni: UInt32?
        public var vtepMAC: MACAddress

        public init(vni: UInt32?, vtepMAC: MACAddress) {
            self.vni = vni
            self.vtepMAC = vtepMAC
        }

        var json: String { "{" + (vni.map { "\"VNI\":\($0)," } ?? "") + "\"VtepMAC\":\"\(vtepMAC)\"}" }
    }

    public init(publicIP: IPv4Address, backendType: String = "vxlan", vni: UInt32?, vtepMAC: MACAddress?,
                publicIPv6: IPv6Address? = nil, backendV6: VTEP? = nil) {
        self.publicIP = publicIP
        self.backendType = backendType
        self.vni = vni
        self.vtepMAC = vtepMAC
        self.publicIPv6 = publicIPv6
        self.backendV6 = backendV6
    }

    /// The lease of this node's own for `network`'s backend: vxlan's VTEP, or host-gw's nothing.
    /// Dual stack (`network.ipv6` and `publicIPv6` given), as flanneld writes it: vxlan adds
    /// `PublicIPv6` and `BackendV6Data` (the IPv6 device's VNI and VTEP MAC), host-gw
    /// `PublicIPv6` alone; udp carries IPv4 only and writes neither (flanneld's udp
    /// backend sets PublicIP alone, whatever the network).
    /// IPv6 only (`EnableIPv4` false), as flanneld writes it: PublicIP 0.0.0.0 (its
    /// empty address, whatever `publicIP` says), `PublicIPv6`, and for vxlan
    /// `BackendV6Data` alone (no BackendData).
    public static func own(publicIP: IPv4Address, publicIPv6: IPv6Address? = nil, network: NetworkConfig) -> LeaseAttributes {
        let ipv6 = network.ipv6 == nil ? nil : publicIPv6
        if !network.enableIPv4 {
            let none = IPv4Address(0)
            guard network.backendType == "vxlan" else {
                return LeaseAttributes(publicIP: none, backendType: network.backendType, vni: nil, vtepMAC: nil, publicIPv6: ipv6)
            }
            return LeaseAttributes(publicIP: none, vni: nil, vtepMAC: nil, publicIPv6: ipv6,
                                   backendV6: ipv6.map { VTEP(vni: network.vni, vtepMAC: .vtep(vni: network.vni, publicIPv6: $0)) })
        }
        switch network.backendType {
        case "host-gw": return LeaseAttributes(publicIP: publicIP, backendType: "host-gw", vni: nil, vtepMAC: nil, publicIPv6: ipv6)
        // flanneld's udp backend writes no BackendType at all.
        case "udp": return LeaseAttributes(publicIP: publicIP, backendType: "", vni: nil, vtepMAC: nil)
        default:
            return LeaseAttributes(publicIP: publicIP, vni: network.vni, vtepMAC: .vtep(vni: network.vni, publicIP: publicIP),
                                   publicIPv6: ipv6,
                                   backendV6: ipv6.map { VTEP(vni: network.vni, vtepMAC: .vtep(vni: network.vni, publicIPv6: $0)) })
        }
    }

    /// The JSON flanneld writes, field for field and in its order (`LeaseAttrs`:
    /// PublicIP, PublicIPv6, BackendType, BackendData, BackendV6Data if any; the
    /// last three are `omitempty`: host-gw writes no BackendData).
    public var json: String {
        "{\"PublicIP\":\"\(publicIP)\",\"PublicIPv6\":\(publicIPv6.map { "\"\($0)\"" } ?? "null")"
            + (backendType.isEmpty ? "" : ",\"BackendType\":\"\(backendType)\"")
            + (vtepMAC.map { ",\"BackendData\":\(VTEP(vni: vni, vtepMAC: $0).json)" } ?? "")
            + (backendV6.map { ",\"BackendV6Data\":\($0.json)" } ?? "") + "}"
    }

    /// Parses a lease value as flanneld's backend `backendType` reads it; the
    /// error names the key and the field. Like Go's decoder: a field's name
    /// matches in any case, the last of duplicate keys wins, unknown fields are
    /// ignored. A lease of another backend is not one this node can reach
    /// (flanneld ignores it: "ignoring non-vxlan subnet"). `backendType` nil: any
    /// backend's lease (what finds this node's own lease after a backend switch:
    /// flanneld reuses a lease by its PublicIP alone).
    ///
    /// `ipv6Only`: the lease of an IPv6-only network (`EnableIPv4` false), read as
    /// flanneld's IPv6-only node reads it: BackendData means nothing there and is
    /// not read (no VNI, no VtepMAC), PublicIP is flanneld's 0.0.0.0; the IPv6 half
    /// (`PublicIPv6`, `BackendV6Data`) is `Flannel.check`'s to judge.
    public static func parse(_ value: [UInt8], key: String, backendType want: String? = "vxlan",
                             ipv6Only: Bool = false) throws(ConfigError) -> LeaseAttributes {
        // The lease every vxlan node writes, read from its bytes; anything else (and
        // every error) is the general reader's.
        if want == "vxlan" || want == nil,
           let attributes = value.withUnsafeBufferPointer({ LeaseReader.attributes($0, ipv6Only: ipv6Only) }) { return attributes }
        return try parseFields(value, key: key, backendType: want, ipv6Only: ipv6Only)
    }

    /// `parse` through the general JSON reader: the answer for every value, and
    /// the only one for a value `LeaseReader` does not read.
    static func parseFields(_ value: [UInt8], key: String, backendType want: String? = "vxlan",
                            ipv6Only: Bool = false) throws(ConfigError) -> LeaseAttributes {
        // JSONFields reads it as Go's decoder does (`.flanneld`): names in any case,
        // the last of duplicate keys wins; a byte order mark or a trailing comma is invalid JSON.
        let fields = try JSONFields.parse(Data(value), source: key, dialect: .flanneld)
        guard let ip = try fields.ipv4("PublicIP") else { throw fields.error("PublicIP", "is required") }
        let ipv6Name = "PublicIPv6"
        var ipv6: IPv6Address?
        if let text = try fields.string(ipv6Name) {
            // Go's net.ParseIP: IPv6 text, or IPv4 (kept as ::ffff:a.b.c.d).
            guard let address = IPv6Address(text) ?? IPv4Address(text).flatMap({ IPv6Address("::ffff:\($0)") }) else {
                throw fields.error(ipv6Name, "\"\(text)\" is not an IPv6 address")
            }
            ipv6 = address
        }
        let typeName = "BackendType"
        let type = try fields.string(typeName)
        if want == "udp" {
            // flanneld's udp writes no BackendType (and reads none); a lease of
            // another backend has no UDP proxy behind its public IP.
            if let type, type != "udp" {
                throw fields.error(typeName, "\"\(type)\": a udp node reaches only udp leases (flanneld's have no BackendType)")
            }
        } else if let want {
            guard let type else {
                throw fields.error(typeName, "is missing: flanneld programs only leases with \"BackendType\": \"\(want)\"")
            }
            guard type == want else {
                throw fields.error(typeName, want == "vxlan" ? "\"\(type)\": only vxlan leases can be reached over VXLAN"
                                   : "\"\(type)\": only \(want) leases can be reached by \(want) routes (flanneld ignores the others)")
            }
        }
        var vtep: VTEP?
        let dataName = "BackendData"
        if type == "vxlan" && !ipv6Only {
            if want == nil {
                vtep = (try? fields.object(dataName)).flatMap { $0 }.flatMap { try? parseVTEP($0) }
            } else {
                guard let data = try fields.object(dataName) else { throw fields.error(dataName, "is required (VtepMAC)") }
                vtep = try parseVTEP(data)
            }
        }
        // BackendV6Data matters only to the IPv6 VTEP: a broken one does not cost the
        // IPv4 half (`Flannel.check` records why the IPv6 half is left out).
        let v6Data = try? fields.object("BackendV6Data")
        let v6 = v6Data.flatMap { data in try? parseVTEP(data) }
        return LeaseAttributes(publicIP: ip, backendType: type ?? "", vni: vtep?.vni, vtepMAC: vtep?.vtepMAC,
                               publicIPv6: ipv6, backendV6: v6)
    }

    static func parseVTEP(_ data: JSONFields) throws(ConfigError) -> VTEP {
        let macName = "VtepMAC"
        guard let macText = try data.string(macName) else { throw data.error(macName, "is required") }
        guard let mac = MACAddress(macText) else { throw data.error(macName, "\"\(macText)\" is not a MAC address") }
        let vni = try data.integer("VNI", in: 0...16_777_215).map { UInt32($0) }
        return VTEP(vni: vni, vtepMAC: mac)
    }
}

/// One lease read from the registry: its subnet and attributes, or why it is unusable.
public struct Lease: Sendable, Hashable {
    public var key: String
    public var subnet: IPv4Prefix
    /// The IPv6 subnet of a dual-stack key.
    public var ipv6Subnet: IPv6Prefix?
    public var attributes: LeaseAttributes
    /// The etcd lease the key is attached to (0: none).
    public var etcdLease: Int64
    /// Dual stack: the peer's IPv6 half, as `Flannel.check` found it usable in a
    /// dual-stack network (nil in an IPv4-only network, or when it is not usable).
    public var ipv6: NodeRecord.IPv6Half?
    /// Dual stack: why the lease's IPv6 half is left out while its IPv4 half is
    /// programmed (no IPv6 subnet in the key, no PublicIPv6, a broken BackendV6Data...).
    public var ipv6Skipped: String?

    public init(key: String, subnet: IPv4Prefix, ipv6Subnet: IPv6Prefix? = nil, attributes: LeaseAttributes, etcdLease: Int64 = 0) {
        self.key = key
        self.subnet = subnet
        self.ipv6Subnet = ipv6Subnet
        self.attributes = attributes
        self.etcdLease = etcdLease
    }

    /// Parses one key of `<prefix>/subnets/`; the error names the key. A
    /// dual-stack key gives both subnets (`Flannel.check` decides whether the IPv6
    /// half is used). `ipv6Only` (a network with `EnableIPv4` false): the key must be
    /// flanneld's IPv6-only form `0.0.0.0-0&<ipv6>-<len>` (its `subnet` is then
    /// `NodeRecord.noIPv4Subnet`); otherwise an IPv6-only key is refused.
    public static func parse(key: String, value: [UInt8], etcdLease: Int64 = 0,
                             backendType: String? = "vxlan", ipv6Only: Bool = false) throws(ConfigError) -> Lease {
        guard let subnets = Flannel.subnets(ofLeaseKey: key) else {
            throw ConfigError(source: key, field: "", message: "the key does not name a subnet "
                              + "(expected .../subnets/a.b.c.d-len, or a.b.c.d-len&ipv6-len for dual stack)")
        }
        if ipv6Only {
            guard subnets.ipv4 == nil, let ipv6 = subnets.ipv6 else {
                let named = subnets.ipv4.map { "\($0)" } ?? ""
                throw ConfigError(source: key, field: "", message: subnets.ipv6 == nil
                    ? "an IPv4 lease (\(named)) in an IPv6-only network (EnableIPv4 false): it names no IPv6 subnet "
                        + "(an IPv6-only node's key is 0.0.0.0-0&<ipv6>-<len>)"
                    : "a dual-stack lease (\(named)) in an IPv6-only network (EnableIPv4 false): "
                        + "an IPv6-only node's key is 0.0.0.0-0&<ipv6>-<len>")
            }
            return Lease(key: key, subnet: NodeRecord.noIPv4Subnet, ipv6Subnet: ipv6,
                         attributes: try LeaseAttributes.parse(value, key: key, backendType: backendType, ipv6Only: true),
                         etcdLease: etcdLease)
        }
        guard let subnet = subnets.ipv4 else {
            throw ConfigError(source: key, field: "", message: "an IPv6-only lease (\(subnets.ipv6.map { "\($0)" } ?? "")) "
                              + "in a network with IPv4 (EnableIPv4 is true): it names no IPv4 subnet")
        }
        guard subnet.isCanonical else {
            throw ConfigError(source: key, field: "", message: "the key names \(subnet), which is not a subnet "
                              + "(host bits set; its subnet is \(subnet.network)/\(subnet.length))")
        }
        return Lease(key: key, subnet: subnet, ipv6Subnet: subnets.ipv6, attributes: try LeaseAttributes.parse(value, key: key, backendType: backendType),
                     etcdLease: etcdLease)
    }

    /// The node as the reconciler sees it: named by its public IP (flannel
    /// leases carry no node name), with the key as its origin.
    /// An IPv6-only lease (checked: `ipv6` set) is `NodeRecord.ipv6Only`, named by its PublicIPv6.
    public var record: NodeRecord {
        if isIPv6Only, let ipv6 { return .ipv6Only(name: "\(ipv6.publicIP)", ipv6: ipv6, origin: key) }
        return NodeRecord(name: "\(attributes.publicIP)", publicIP: attributes.publicIP, subnet: subnet,
                          vtepMAC: attributes.vtepMAC, origin: key, ipv6: ipv6)
    }

    /// The key is flanneld's IPv6-only form (`0.0.0.0-0&<ipv6>-<len>`).
    public var isIPv6Only: Bool { subnet == NodeRecord.noIPv4Subnet && ipv6Subnet != nil }
}

/// One key under `<prefix>/subnets/` as the registry holds it.
public struct LeaseEntry: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]
    /// The etcd lease the key is attached to (0: none).
    public var etcdLease: Int64
    /// The revision of the key's last change (etcd's mod_revision; 0: unknown).
    public var revision: Int64

    public init(key: String, value: [UInt8], etcdLease: Int64 = 0, revision: Int64 = 0) {
        self.key = key
        self.value = value
        self.etcdLease = etcdLease
        self.revision = revision
    }
}

/// A lease left out of the cluster view, and why.
public struct SkippedLease: Error, Sendable, Hashable, CustomStringConvertible {
    public var key: String
    public var reason: String

    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }

    /// `lease <key>: <reason>; skipped`, control characters escaped, long values cut.
    public var description: String { "lease \(Flannel.printable(key)): \(Flannel.printable(reason, limit: 512)); skipped" }
}

/// Dual stack: a lease whose IPv4 half is programmed and whose IPv6 half is
/// left out, and why.
public struct SkippedIPv6Half: Error, Sendable, Hashable, CustomStringConvertible {
    public var key: String
    public var reason: String

    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }

    /// `lease <key>: <reason>; its IPv6 half is skipped (IPv4 is programmed)`, escaped as SkippedLease is.
    public var description: String {
        "lease \(Flannel.printable(key)): \(Flannel.printable(reason, limit: 512)); its IPv6 half is skipped (IPv4 is programmed)"
    }
}

/// The cluster as the leases describe it, and the leases that could not be used.
public struct LeaseView: Sendable, Hashable {
    public var view: ClusterView
    public var skipped: [SkippedLease]
    /// Dual stack: peers kept for IPv4 whose IPv6 half is left out.
    public var skippedIPv6: [SkippedIPv6Half] = []
}

/// Why a one-shot command cannot tell which lease is this node's.
public enum OwnLeaseError: Error, Sendable, Hashable {
    /// No usable lease has this node's public IP.
    case noLease
    /// Several do, and the previous subnet (subnet.env) names none of them.
    case several(keys: [String])
}

extension Flannel {
    /// A lease checked on its own against the network: it parses, and its VNI (if
    /// it says one) is the network's. The one check every command applies.
    public static func check(_ entry: LeaseEntry, network: NetworkConfig) -> Result<Lease, SkippedLease> {
        if hasControlCharacters(entry.key) {
            return .failure(SkippedLease(key: entry.key, reason: "the key contains control characters"))
        }
        do {
            let lease = try Lease.parse(key: entry.key, value: entry.value, etcdLease: entry.etcdLease,
                                        backendType: network.backendType, ipv6Only: !network.enableIPv4)
            if let vni = lease.attributes.vni, vni != network.vni {
                return .failure(SkippedLease(key: entry.key, reason: "BackendData.VNI: \(vni), but the network uses VNI \(network.vni)"))
            }
            var checked = lease
            switch ipv6Half(of: lease, value: entry.value, network: network) {
            case .none: break
            case .some(.success(let half)): checked.ipv6 = half
            // IPv6 only: the IPv6 half is all the lease has.
            case .some(.failure(let skipped)) where !network.enableIPv4: return .failure(SkippedLease(key: entry.key, reason: skipped.reason))
            case .some(.failure(let skipped)): checked.ipv6Skipped = skipped.reason
            }
            return .success(checked)
        } catch {
            return .failure(SkippedLease(key: entry.key, reason: error.field.isEmpty ? error.message : "\(error.field): \(error.message)"))
        }
    }

    /// A lease's IPv6 half in a dual-stack network, or why it is left out (its IPv4
    /// half is programmed either way: a dual-stack node whose IPv6 side is broken
    /// still reaches, and is reached, over IPv4). nil when the network is IPv4 only
    /// or the backend is udp (flannel's udp carries IPv4 only).
    static func ipv6Half(of lease: Lease, value: [UInt8], network: NetworkConfig) -> Result<NodeRecord.IPv6Half, SkippedIPv6Half>? {
        guard let ipv6 = network.ipv6, network.backendType != "udp" else { return nil }
        func skip(_ reason: String) -> Result<NodeRecord.IPv6Half, SkippedIPv6Half> { .failure(SkippedIPv6Half(key: lease.key, reason: reason)) }
        guard let subnet = lease.ipv6Subnet else {
            return skip("the key names no IPv6 subnet (an IPv4-only lease in a dual-stack network)")
        }
        guard subnet.isCanonical else {
            return skip("the key's IPv6 part \(subnet) is not a subnet (host bits set; its subnet is \(subnet.network)/\(subnet.length))")
        }
        guard subnet.length == ipv6.subnetLen, ipv6.network.contains(subnet) else {
            return skip("the key's IPv6 subnet \(subnet) is not a /\(ipv6.subnetLen) inside the IPv6 network \(ipv6.network)")
        }
        guard let address = lease.attributes.publicIPv6 else {
            return skip("PublicIPv6: is missing (null): a node of a network with IPv6 says its IPv6 underlay address there")
        }
        if address.isUnspecified || address.isLoopback || address.isMulticast || address.isLinkLocal || address.isIPv4Mapped {
            return skip("PublicIPv6: \(address) is not a global unicast address a peer can send to")
        }
        if ipv6.network.contains(address) {
            return skip("PublicIPv6: \(address) is inside the IPv6 pod network \(ipv6.network): its packets would be routed back into the overlay")
        }
        guard network.backendType == "vxlan" else { return .success(NodeRecord.IPv6Half(subnet: subnet, publicIP: address)) }
        guard let vtep = lease.attributes.backendV6 else { return skip(backendV6Problem(value, key: lease.key)) }
        if let vni = vtep.vni, vni != network.vni {
            return skip("BackendV6Data.VNI: \(vni), but the network uses VNI \(network.vni)")
        }
        return .success(NodeRecord.IPv6Half(subnet: subnet, publicIP: address, vtepMAC: vtep.vtepMAC))
    }

    /// Why a value's BackendV6Data gave no VTEP (rare: read again for the message).
    static func backendV6Problem(_ value: [UInt8], key: String) -> String {
        do {
            let fields = try JSONFields.parse(Data(value), source: key, dialect: .flanneld)
            guard let data = try fields.object("BackendV6Data") else {
                return "BackendV6Data: is missing: a dual-stack vxlan node says its IPv6 VTEP's VtepMAC there"
            }
            _ = try LeaseAttributes.parseVTEP(data)
            return "BackendV6Data: not read"
        } catch {
            return error.field.isEmpty ? error.message : "\(error.field): \(error.message)"
        }
    }

    /// The cluster view from every lease under `<prefix>/subnets/`, the same for
    /// the daemon and the one-shot commands: this node is `own` (the key it holds,
    /// whatever that key's value says now), every other lease that passes
    /// `check(_:network:)` is a peer (the reconciler then checks each peer against
    /// this host: its public IP, its subnet, duplicates), the rest are skipped with
    /// a reason naming the key.
    public static func clusterView(network: NetworkConfig, leases: [LeaseEntry], node: String, publicIP: IPv4Address,
                                   publicIPv6: IPv6Address? = nil, own: (key: String, subnet: IPv4Prefix)) -> LeaseView {
        clusterView(network: network, leases: leases, node: node, publicIP: publicIP, publicIPv6: publicIPv6, own: own) {
            check($0, network: network)
        }
    }

    /// The same, with `checked` giving `check(_:network:)`'s result for a lease (the
    /// daemon keeps them by key and revision: an event does not parse every lease again).
    /// Dual stack: this node's IPv6 half is its key's IPv6 subnet and `publicIPv6`.
    public static func clusterView(network: NetworkConfig, leases: [LeaseEntry], node: String, publicIP: IPv4Address,
                                   publicIPv6: IPv6Address? = nil, own: (key: String, subnet: IPv4Prefix),
                                   checked: (LeaseEntry) -> Result<Lease, SkippedLease>) -> LeaseView {
        var peers: [NodeRecord] = []
        var skipped: [SkippedLease] = []
        var skippedIPv6: [SkippedIPv6Half] = []
        for entry in leases.sorted(by: { $0.key < $1.key }) where entry.key != own.key {
            switch checked(entry) {
            case .success(let lease):
                peers.append(lease.record)
                if let reason = lease.ipv6Skipped { skippedIPv6.append(SkippedIPv6Half(key: entry.key, reason: reason)) }
            case .failure(let reason): skipped.append(reason)
            }
        }
        var local = NodeRecord(name: node, publicIP: publicIP, subnet: own.subnet,
                               vtepMAC: .vtep(vni: network.vni, publicIP: publicIP), origin: own.key)
        if !network.enableIPv4 {
            // IPv6 only: flannel's empty IPv4 half (`publicIP` is not read), the key's IPv6 subnet.
            local = NodeRecord(name: node, publicIP: IPv4Address(0), subnet: NodeRecord.noIPv4Subnet, origin: own.key)
        }
        if network.ipv6 != nil, network.backendType != "udp", let publicIPv6, let subnet = subnets(ofLeaseKey: own.key)?.ipv6 {
            local.ipv6 = NodeRecord.IPv6Half(subnet: subnet, publicIP: publicIPv6,
                                             vtepMAC: network.backendType == "vxlan" ? .vtep(vni: network.vni, publicIPv6: publicIPv6) : nil)
        }
        return LeaseView(view: ClusterView(network: network, local: local, peers: peers), skipped: skipped, skippedIPv6: skippedIPv6)
    }

    /// Every /SubnetLen between SubnetMin and SubnetMax that no held subnet
    /// overlaps. A held prefix that is not inside the network (`0.0.0.0-0`, a
    /// supernet of it) names no node's subnet and keeps nothing.
    /// None in an IPv6-only network.
    public static func freeSubnets(network: NetworkConfig, held: [IPv4Prefix]) -> [IPv4Prefix] {
        guard network.enableIPv4 else { return [] }
        let length = network.subnetLen
        let subnetMask = IPv4Prefix(IPv4Address(0), length).mask
        var taken: Set<UInt32> = []
        var wide: [IPv4Prefix] = []
        for prefix in held where prefix.length > network.network.length && network.network.contains(prefix.address) {
            if prefix.length >= length {
                taken.insert(prefix.address.value & subnetMask)
            } else {
                wide.append(prefix)
            }
        }
        let step = UInt32(1) << (32 - UInt32(length))
        var result: [IPv4Prefix] = []
        var value = network.subnetMin.value
        while value <= network.subnetMax.value {
            let subnet = IPv4Prefix(IPv4Address(value), length)
            if !taken.contains(value) && !wide.contains(where: { $0.overlaps(subnet) }) { result.append(subnet) }
            let (next, overflow) = value.addingReportingOverflow(step)
            if overflow { break }
            value = next
        }
        return result
    }

    /// A subnet this node may hold (flannel's `isSubnetConfigCompat`): a /SubnetLen
    /// of the network between SubnetMin and SubnetMax. None in an IPv6-only network.
    public static func isOwnable(_ subnet: IPv4Prefix, in network: NetworkConfig) -> Bool {
        network.enableIPv4 && subnet.isCanonical && subnet.length == network.subnetLen && network.network.contains(subnet)
            && network.subnetMin <= subnet.network && subnet.network <= network.subnetMax
    }

    /// The IPv6 part of a key this node may hold (flannel's `isIPv6SubnetConfigCompat`):
    /// none in an IPv4-only network; in a dual-stack one, a /IPv6SubnetLen of IPv6Network
    /// between IPv6SubnetMin and IPv6SubnetMax.
    public static func isOwnable(ipv6 subnet: IPv6Prefix?, in network: NetworkConfig) -> Bool {
        guard let ipv6 = network.ipv6 else { return subnet == nil }
        guard let subnet else { return false }
        return subnet.isCanonical && subnet.length == ipv6.subnetLen && ipv6.network.contains(subnet)
            && ipv6.subnetMin <= subnet.network && subnet.network <= ipv6.subnetMax
    }

    /// Free /IPv6SubnetLen subnets of a dual-stack network, from IPv6SubnetMin up,
    /// at most `limit` of them (flannel picks at random among the first 100): an
    /// IPv6 network holds far too many to list. `held`: the IPv6 parts of every key.
    public static func freeIPv6Subnets(network: NetworkConfig, held: [IPv6Prefix], limit: Int = 100) -> [IPv6Prefix] {
        guard let ipv6 = network.ipv6 else { return [] }
        let length = ipv6.subnetLen
        let size = NetworkConfig.IPv6Part.size(length)
        var taken: Set<UInt128> = []
        var wide: [IPv6Prefix] = []
        for prefix in held where prefix.length > ipv6.network.length && ipv6.network.contains(prefix.address) {
            if prefix.length >= length {
                taken.insert(IPv6Prefix(prefix.address, length).network.uint128)
            } else {
                wide.append(prefix)
            }
        }
        var result: [IPv6Prefix] = []
        var value = ipv6.subnetMin.uint128
        let last = ipv6.subnetMax.uint128
        while value <= last && result.count < limit {
            let subnet = IPv6Prefix(IPv6Address(uint128: value), length)
            if let cover = wide.first(where: { $0.overlaps(subnet) }) {
                // Past the wide prefix at once (it may hold millions of subnets).
                let (next, overflow) = cover.last.uint128.addingReportingOverflow(1)
                if overflow { break }
                value = max(next, value &+ size)
                continue
            }
            if !taken.contains(value) { result.append(subnet) }
            let (next, overflow) = value.addingReportingOverflow(size)
            if overflow || size == 0 { break }
            value = next
        }
        return result
    }

    /// This node's lease for a command that does not hold one itself (`sync`,
    /// `diff`): the lease the daemon would keep (`isOwnable`) with this node's
    /// public IP; with several (someone else claims this IP too), the one for
    /// `previousSubnet`, the subnet the daemon last wrote to subnet.env.
    /// IPv6 only (`EnableIPv4` false): the lease with this node's `publicIPv6`
    /// (every IPv6-only lease's PublicIP is 0.0.0.0), and `previousIPv6Subnet`
    /// (subnet.env's FLANNEL_IPV6_SUBNET) among several; `publicIP` is not read.
    public static func ownLease(among leases: [LeaseEntry], network: NetworkConfig, publicIP: IPv4Address,
                                previousSubnet: IPv4Prefix?, publicIPv6: IPv6Address? = nil,
                                previousIPv6Subnet: IPv6Prefix? = nil) throws(OwnLeaseError) -> Lease {
        let ipv6Only = !network.enableIPv4
        if ipv6Only && publicIPv6 == nil { throw .noLease }
        let candidates = leases.sorted(by: { $0.key < $1.key }).compactMap { entry -> Lease? in
            guard case .success(let lease) = check(entry, network: network) else { return nil }
            if ipv6Only {
                guard lease.attributes.publicIPv6 == publicIPv6, isOwnable(ipv6: lease.ipv6Subnet, in: network) else { return nil }
                return lease
            }
            guard lease.attributes.publicIP == publicIP,
                  isOwnable(lease.subnet, in: network), isOwnable(ipv6: lease.ipv6Subnet, in: network) else { return nil }
            return lease
        }
        if ipv6Only {
            if let previousIPv6Subnet, let lease = candidates.first(where: { $0.ipv6Subnet == previousIPv6Subnet }) { return lease }
        } else if let previousSubnet, let lease = candidates.first(where: { $0.subnet == previousSubnet }) { return lease }
        guard let first = candidates.first else { throw .noLease }
        guard candidates.count == 1 else { throw .several(keys: candidates.map(\.key)) }
        return first
    }
}

/// `/run/flannel/subnet.env`, as flanneld writes it and CNI's flannel plugin reads it.
public struct SubnetEnv: Sendable, Hashable {
    public var network: IPv4Prefix
    /// This node's subnet (the file holds its first usable address: `10.244.1.1/24`).
    public var subnet: IPv4Prefix
    public var mtu: UInt32
    public var ipMasq: Bool
    /// Dual stack: the IPv6 pod network (`FLANNEL_IPV6_NETWORK`).
    public var ipv6Network: IPv6Prefix?
    /// Dual stack: this node's IPv6 subnet (`FLANNEL_IPV6_SUBNET`, its first usable address: `fd00:10:244:1::1/64`).
    public var ipv6Subnet: IPv6Prefix?

    /// IPv6 only (`EnableIPv4` false): no FLANNEL_NETWORK and FLANNEL_SUBNET lines,
    /// as flanneld writes it. Default: true unless `network` and `subnet` are both
    /// flannel's empty 0.0.0.0/0 (what an IPv6-only network and node hold) and the
    /// IPv6 pair is given.
    public var enableIPv4: Bool

    public init(network: IPv4Prefix, subnet: IPv4Prefix, mtu: UInt32, ipMasq: Bool,
                ipv6Network: IPv6Prefix? = nil, ipv6Subnet: IPv6Prefix? = nil, enableIPv4: Bool? = nil) {
        self.network = network
        self.subnet = subnet
        self.mtu = mtu
        self.ipMasq = ipMasq
        self.ipv6Network = ipv6Network
        self.ipv6Subnet = ipv6Subnet
        self.enableIPv4 = enableIPv4 ?? !(network == NodeRecord.noIPv4Subnet && subnet == NodeRecord.noIPv4Subnet
                                           && ipv6Network != nil && ipv6Subnet != nil)
    }

    /// An IPv6-only node's file.
    public static func ipv6Only(ipv6Network: IPv6Prefix, ipv6Subnet: IPv6Prefix, mtu: UInt32, ipMasq: Bool) -> SubnetEnv {
        SubnetEnv(network: NodeRecord.noIPv4Subnet, subnet: NodeRecord.noIPv4Subnet, mtu: mtu, ipMasq: ipMasq,
                  ipv6Network: ipv6Network, ipv6Subnet: ipv6Subnet, enableIPv4: false)
    }

    /// flanneld's `WriteSubnetFile`: the IPv4 pair (unless IPv6 only), the IPv6 pair (dual stack, IPv6 only), MTU, IPMASQ.
    public var text: String {
        var text = !enableIPv4 ? ""
            : "FLANNEL_NETWORK=\(network)\nFLANNEL_SUBNET=\(IPv4Address(subnet.network.value &+ 1))/\(subnet.length)\n"
        if let ipv6Network, let ipv6Subnet {
            let first = IPv6Address(uint128: ipv6Subnet.network.uint128 &+ 1)
            text += "FLANNEL_IPV6_NETWORK=\(ipv6Network)\nFLANNEL_IPV6_SUBNET=\(first)/\(ipv6Subnet.length)\n"
        }
        return text + "FLANNEL_MTU=\(mtu)\nFLANNEL_IPMASQ=\(ipMasq)\n"
    }

    /// The IPv6 subnet a previous run wrote (`FLANNEL_IPV6_SUBNET`), if the file says one.
    public static func previousIPv6Subnet(in text: String) -> IPv6Prefix? {
        for line in text.split(separator: "\n") where line.hasPrefix("FLANNEL_IPV6_SUBNET=") {
            guard let prefix = IPv6Prefix(line.dropFirst("FLANNEL_IPV6_SUBNET=".count)) else { return nil }
            return IPv6Prefix(prefix.network, prefix.length)
        }
        return nil
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
    /// Dual stack: this node's IPv6 subnet, a second host-local range (gateway: its first address).
    public var ipv6Subnet: IPv6Prefix?

    /// IPv6 only: one host-local range, the IPv6 one. Default: true unless `subnet`
    /// is flannel's empty 0.0.0.0/0 (an IPv6-only node's) and `ipv6Subnet` is given.
    public var enableIPv4: Bool

    public init(name: String = "vxlan-agent", bridge: String = "cni0", network: IPv4Prefix, subnet: IPv4Prefix, mtu: UInt32,
                ipv6Subnet: IPv6Prefix? = nil, enableIPv4: Bool? = nil) {
        self.name = name
        self.bridge = bridge
        self.network = network
        self.subnet = subnet
        self.mtu = mtu
        self.ipv6Subnet = ipv6Subnet
        self.enableIPv4 = enableIPv4 ?? !(subnet == NodeRecord.noIPv4Subnet && ipv6Subnet != nil)
    }

    /// An IPv6-only node's configuration list.
    public static func ipv6Only(name: String = "vxlan-agent", bridge: String = "cni0", ipv6Subnet: IPv6Prefix, mtu: UInt32) -> CNIConfig {
        CNIConfig(name: name, bridge: bridge, network: NodeRecord.noIPv4Subnet, subnet: NodeRecord.noIPv4Subnet, mtu: mtu,
                  ipv6Subnet: ipv6Subnet, enableIPv4: false)
    }

    /// One host-local range per family (as flannel's CNI plugin delegates in dual
    /// stack: `ranges` with two entries), each with its gateway on the bridge. The
    /// bridge plugin's `isDefaultGateway` routes both families: it adds a default
    /// route for every address it assigns (0.0.0.0/0 and ::/0), each via its gateway.
    public var text: String {
        let gateway = IPv4Address(subnet.network.value &+ 1)
        var parts: [String] = []
        if enableIPv4 { parts.append("[{\"subnet\": \"\(subnet)\", \"gateway\": \"\(gateway)\"}]") }
        if let ipv6Subnet {
            parts.append("[{\"subnet\": \"\(ipv6Subnet.network)/\(ipv6Subnet.length)\", "
                         + "\"gateway\": \"\(IPv6Address(uint128: ipv6Subnet.network.uint128 &+ 1))\"}]")
        }
        let ranges = parts.joined(separator: ", ")
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
                "ranges": [\(ranges)]
              }
            }
          ]
        }

        """
    }
}
