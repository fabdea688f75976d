import Foundation
import Model
import Reconcile

/// One interface of the host as interface selection sees it.
public struct HostInterface: Sendable, Hashable {
    public var index: Int32
    public var name: String
    public var mtu: UInt32
    /// Its IPv4 addresses, in the kernel's order (the first is the primary).
    public var addresses: [IPv4Address]
    /// Its IPv6 addresses, in the kernel's order.
    public var ipv6Addresses: [IPv6InterfaceAddress]

    public init(index: Int32, name: String, mtu: UInt32, addresses: [IPv4Address], ipv6Addresses: [IPv6InterfaceAddress] = []) {
        self.index = index
        self.name = name
        self.mtu = mtu
        self.addresses = addresses
        self.ipv6Addresses = ipv6Addresses
    }

    /// The interface's IPv6 address for a dual-stack underlay, as flannel's
    /// `GetInterfaceIP6Addrs` picks it (the first global unicast address, unique
    /// local ones included), and stricter: never link-local (a VXLAN peer cannot
    /// reach it without a zone), and not a temporary (privacy) address, nor a
    /// deprecated or tentative one (it may go away, or not work yet). nil: none.
    public var globalIPv6: IPv6Address? {
        ipv6Addresses.first { entry in
            let a = entry.address
            return !(a.isLinkLocal || a.isLoopback || a.isMulticast || a.isUnspecified || a.isIPv4Mapped)
                && !entry.temporary && !entry.deprecated && !entry.tentative
        }?.address
    }
}

/// One IPv6 address of an interface, with the kernel's flags that matter for
/// choosing an underlay address (`ip -6 addr`: temporary, deprecated, tentative).
public struct IPv6InterfaceAddress: Sendable, Hashable {
    public var address: IPv6Address
    /// IFA_F_TEMPORARY: a privacy address, replaced every so often.
    public var temporary: Bool
    /// IFA_F_DEPRECATED: its preferred lifetime is over.
    public var deprecated: Bool
    /// IFA_F_TENTATIVE or IFA_F_DADFAILED: duplicate address detection not done, or failed.
    public var tentative: Bool

    public init(address: IPv6Address, temporary: Bool = false, deprecated: Bool = false, tentative: Bool = false) {
        self.address = address
        self.temporary = temporary
        self.deprecated = deprecated
        self.tentative = tentative
    }
}

/// What the host's kernel says, for interface selection: its interfaces, the
/// default route's interface, and a route lookup (`ip route get`).
public struct HostNetwork: Sendable {
    public var interfaces: [HostInterface]
    /// The interface index of the IPv4 default route (main table), if any.
    public var defaultRouteIndex: Int32?
    /// `ip route get <ip>`: the output interface's index and the preferred source.
    public var route: @Sendable (IPv4Address) -> (index: Int32, source: IPv4Address?)?

    public init(interfaces: [HostInterface], defaultRouteIndex: Int32?,
                route: @escaping @Sendable (IPv4Address) -> (index: Int32, source: IPv4Address?)?) {
        self.interfaces = interfaces
        self.defaultRouteIndex = defaultRouteIndex
        self.route = route
    }
}

/// How the underlay interface is chosen, as flanneld chooses it (flannel's
/// main.go and pkg/ipmatch `LookupExtIface`): each of `names` in order (an
/// interface name, or an address: the interface holding it), then each of
/// `regexes` (matched against every interface's IPv4 addresses first, then
/// against the names, then against the IPv6 addresses), then `canReach` (the interface `ip route get` picks for it). With
/// none of the three: the interface holding `publicIP` if given, else the default
/// route's. The address used is the one named, the regex matched, the route's
/// source, or else the interface's first IPv4 address.
public struct InterfaceSelection: Sendable, Hashable {
    public var names: [String]
    public var regexes: [String]
    public var canReach: String?
    public var publicIP: String?
    /// With none of the three and no `publicIP`: the interface holding this IPv6
    /// address (flanneld's --public-ipv6, what an IPv6-only node names).
    public var publicIPv6: String?

    public init(names: [String] = [], regexes: [String] = [], canReach: String? = nil, publicIP: String? = nil,
                publicIPv6: String? = nil) {
        self.names = names
        self.regexes = regexes
        self.canReach = canReach
        self.publicIP = publicIP
        self.publicIPv6 = publicIPv6
    }

    public var isEmpty: Bool { names.isEmpty && regexes.isEmpty && canReach == nil }

    public struct Choice: Sendable, Hashable {
        public var interface: HostInterface
        /// nil: the interface has no IPv4 address, only a global IPv6 one (an
        /// IPv6-only underlay: enough for an IPv6-only network, `EnableIPv4` false).
        public var address: IPv4Address?
        /// Dual stack: the interface's global IPv6 address (`HostInterface.globalIPv6`), if it has one.
        public var ipv6Address: IPv6Address? { interface.globalIPv6 }
    }

    /// The interface and address to use, or an error that says what was tried.
    public func choose(on host: HostNetwork) throws(FlanneldError) -> Choice {
        if isEmpty {
            do {
                if let publicIP { return try lookup(name: publicIP, on: host) }
                if let publicIPv6 { return try lookup(name: publicIPv6, on: host) }
                guard let index = host.defaultRouteIndex, let interface = host.interfaces.first(where: { $0.index == index }) else {
                    throw FlanneldError("no IPv4 default route: name the interface with --iface, --iface-regex or --iface-can-reach")
                }
                return try finish(interface, nil)
            } catch {
                throw FlanneldError("failed to find any valid interface to use: \(error)")
            }
        }
        var tried: [String] = []
        for name in names {
            do { return try lookup(name: name, on: host) } catch { tried.append("--iface \(name): \(error)") }
        }
        for pattern in regexes {
            do { return try lookup(regex: pattern, on: host) } catch { tried.append("--iface-regex \(pattern): \(error)") }
        }
        if let canReach {
            do {
                guard let ip = IPv4Address(canReach) else { throw FlanneldError("\(quoted(canReach)) is not an IPv4 address") }
                guard let route = host.route(ip), let interface = host.interfaces.first(where: { $0.index == route.index }) else {
                    throw FlanneldError("no route to \(ip)")
                }
                return try finish(interface, route.source)
            } catch {
                tried.append("--iface-can-reach \(canReach): \(error)")
            }
        }
        throw FlanneldError("failed to find interface to use that matches the interfaces and/or regexes provided (\(tried.joined(separator: "; ")))")
    }

    func lookup(name: String, on host: HostNetwork) throws(FlanneldError) -> Choice {
        if let ip = IPv4Address(name) {
            guard let interface = host.interfaces.first(where: { $0.addresses.contains(ip) }) else {
                throw FlanneldError("no interface holds \(ip)")
            }
            return try finish(interface, ip)
        }
        if let ip6 = IPv6Address(name) {
            guard let interface = host.interfaces.first(where: { $0.ipv6Addresses.contains { $0.address == ip6 } }) else {
                throw FlanneldError("no interface holds \(ip6)")
            }
            return try finish(interface, nil)
        }
        guard let interface = host.interfaces.first(where: { $0.name == name }) else {
            throw FlanneldError("no interface \(quoted(name))")
        }
        return try finish(interface, nil)
    }

    func lookup(regex pattern: String, on host: HostNetwork) throws(FlanneldError) -> Choice {
        let regex: Regex<AnyRegexOutput>
        do { regex = try Regex(pattern) } catch { throw FlanneldError("could not compile the regex \(quoted(pattern)): \(error)") }
        for interface in host.interfaces {
            if let ip = interface.addresses.first(where: { "\($0)".contains(regex) }) { return try finish(interface, ip) }
        }
        if let interface = host.interfaces.first(where: { $0.name.contains(regex) }) { return try finish(interface, nil) }
        // Last the IPv6 addresses (an IPv6-only underlay's; flanneld matches them for IPv6),
        // so that what matched before still does.
        for interface in host.interfaces where interface.ipv6Addresses.contains(where: { "\($0.address)".contains(regex) }) {
            return try finish(interface, nil)
        }
        let available = host.interfaces.map { "\($0.name):[\($0.addresses.map { "\($0)" }.joined(separator: " "))]" }
        throw FlanneldError("could not match pattern \(pattern) to any of the available network interfaces (\(available.joined(separator: ", ")))")
    }

    func finish(_ interface: HostInterface, _ address: IPv4Address?) throws(FlanneldError) -> Choice {
        let address = address ?? interface.addresses.first
        // An interface with a global IPv6 address and no IPv4 one serves an IPv6-only network.
        guard address != nil || interface.globalIPv6 != nil else {
            throw FlanneldError("failed to find IPv4 address for interface \(interface.name) (nor a global IPv6 address)")
        }
        guard interface.mtu > 0 else { throw FlanneldError("failed to determine MTU for \(interface.name)") }
        return Choice(interface: interface, address: address)
    }
}
