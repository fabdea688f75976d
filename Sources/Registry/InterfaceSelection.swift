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

    public init(index: Int32, name: String, mtu: UInt32, addresses: [IPv4Address]) {
        self.index = index
        self.name = name
        self.mtu = mtu
        self.addresses = addresses
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
/// `regexes` (matched against every interface's addresses first, then against
/// the names), then `canReach` (the interface `ip route get` picks for it). With
/// none of the three: the interface holding `publicIP` if given, else the default
/// route's. The address used is the one named, the regex matched, the route's
/// source, or else the interface's first IPv4 address.
public struct InterfaceSelection: Sendable, Hashable {
    public var names: [String]
    public var regexes: [String]
    public var canReach: String?
    public var publicIP: String?

    public init(names: [String] = [], regexes: [String] = [], canReach: String? = nil, publicIP: String? = nil) {
        self.names = names
        self.regexes = regexes
        self.canReach = canReach
        self.publicIP = publicIP
    }

    public var isEmpty: Bool { names.isEmpty && regexes.isEmpty && canReach == nil }

    public struct Choice: Sendable, Hashable {
        public var interface: HostInterface
        public var address: IPv4Address
    }

    /// The interface and address to use, or an error that says what was tried.
    public func choose(on host: HostNetwork) throws(FlanneldError) -> Choice {
        if isEmpty {
            do {
                if let publicIP { return try lookup(name: publicIP, on: host) }
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
        let available = host.interfaces.map { "\($0.name):[\($0.addresses.map { "\($0)" }.joined(separator: " "))]" }
        throw FlanneldError("could not match pattern \(pattern) to any of the available network interfaces (\(available.joined(separator: ", ")))")
    }

    func finish(_ interface: HostInterface, _ address: IPv4Address?) throws(FlanneldError) -> Choice {
        guard let address = address ?? interface.addresses.first else {
            throw FlanneldError("failed to find IPv4 address for interface \(interface.name)")
        }
        guard interface.mtu > 0 else { throw FlanneldError("failed to determine MTU for \(interface.name)") }
        return Choice(interface: interface, address: address)
    }
}
