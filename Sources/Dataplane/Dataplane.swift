import CLibMnl
import CTunnelShim
import Model
import Netlink

#if canImport(Glibc)
import Glibc
#endif

/// The Dataplane module's error: a kernel refusal (with the object and the
/// kernel's text) or a state the agent will not touch.
public enum DataplaneError: Error, Sendable, Hashable, CustomStringConvertible {
    case netlink(NetlinkError)
    /// Something is in the way that the agent does not own.
    case conflict(String)
    /// A device or address the configuration names does not exist.
    case notFound(String)

    public var description: String {
        switch self {
        case .netlink(let error): error.description
        case .conflict(let text): text
        case .notFound(let text): text
        }
    }
}

/// One change the kernel refused, or that was skipped because what it depends on failed.
/// It carries no text: whoever shows the plan renders it with the plan's words
/// (`PlanOutput.describe(_:)` in Agent), so a failure reads like the plan line it failed.
/// Generic over the plane's family: `ChangeFailure` (IPv4), `ChangeFailure6`.
public struct ChangeFailureOf<A: IPFamilyAddress>: Sendable, Hashable, CustomStringConvertible {
    /// Why, typed: a caller decides on it (retry at once, back off, report).
    public enum Cause: Sendable, Hashable {
        /// The kernel answered this request with an error.
        case refused(NetlinkError)
        /// The exchange broke (a send or receive failed): whether it landed is unknown.
        case exchange(NetlinkError)
        /// Not sent: the device is missing, or a change it depends on failed.
        case skipped
    }

    public var change: ChangeOf<A>
    public var cause: Cause
    /// Why a skipped change was not sent (`its fdb entry for 0e:... failed`); nil otherwise.
    public var reason: String?

    /// For debugging; people see `PlanOutput.describe(_:)`.
    public var description: String { "\(change): \(cause)\(reason.map { ", \($0)" } ?? "")" }

    public init(change: ChangeOf<A>, cause: Cause, reason: String? = nil) {
        self.change = change
        self.cause = cause
        self.reason = reason
    }

    /// The errno, when the kernel or the socket gave one.
    public var code: Int32? {
        switch cause {
        case .refused(let error), .exchange(let error): error.code
        case .skipped: nil
        }
    }

    /// `EEXIST`, `ENOBUFS`, ...: the errno by name, when there is one.
    public var codeName: String? {
        switch cause {
        case .refused(let error), .exchange(let error): error.codeName
        case .skipped: nil
        }
    }

    /// Worth trying again at once: a broken exchange, or the kernel out of buffers
    /// or busy (ENOBUFS, ENOMEM, EBUSY, EAGAIN, EINTR). Anything else (EEXIST,
    /// EINVAL, ENETUNREACH, ...) will fail the same way until something changes.
    public var isTransient: Bool {
        switch cause {
        case .exchange: true
        case .refused(let error): [ENOBUFS, ENOMEM, EBUSY, EAGAIN, EINTR].contains(error.code)
        case .skipped: false
        }
    }
}

public typealias ChangeFailure = ChangeFailureOf<IPv4Address>
public typealias ChangeFailure6 = ChangeFailureOf<IPv6Address>

/// What applying a plan did.
public struct ApplyReportOf<A: IPFamilyAddress>: Sendable, Hashable {
    /// Netlink requests sent (each is one kernel write).
    public var writes = 0
    public var failures: [ChangeFailureOf<A>] = []
    /// The device index after the device changes, if the device exists.
    public var deviceIndex: Int32?

    public init() {}
}

public typealias ApplyReport = ApplyReportOf<IPv4Address>
public typealias ApplyReport6 = ApplyReportOf<IPv6Address>

/// The kernel as the reconciler sees it: a snapshot of what the agent owns, and
/// a way to apply changes. The real one talks netlink; tests may use a fake.
public protocol KernelDataplane: AnyObject {
    func snapshot(deviceName: String, proto: UInt8) throws(DataplaneError) -> KernelSnapshot
    func apply(_ changes: [Change], deviceName: String) -> ApplyReport
}

/// The real dataplane: typed kernel objects over one netlink socket.
public final class Dataplane: KernelDataplane {
    public let socket: NetlinkSocket
    /// Requests per sendmsg, in bytes.
    public var chunkBytes = NetlinkSocket.defaultChunkBytes

    /// A dataplane over a socket of its own.
    public convenience init() throws(DataplaneError) {
        let socket: NetlinkSocket
        do { socket = try NetlinkSocket() } catch { throw .netlink(error) }
        self.init(socket: socket)
    }

    /// A dataplane over `socket`, which may carry an interposer (tests inject
    /// failures there, under everything this type does).
    public init(socket: NetlinkSocket) {
        self.socket = socket
    }

    private func wrap<T>(_ body: () throws(NetlinkError) -> T) throws(DataplaneError) -> T {
        do { return try body() } catch { throw .netlink(error) }
    }

    // MARK: Links and addresses

    /// The link called `name`, or nil if there is none.
    public func link(named name: String) throws(DataplaneError) -> LinkState? {
        do {
            return try socket.request("get link \(name)", type: UInt16(RTM_GETLINK), build: { m in
                m.familyHeader(ifinfomsg.self) { $0.ifi_family = UInt8(AF_UNSPEC) }
                m.put(UInt16(IFLA_IFNAME), string: name)
            }, parse: Parse.link).first
        } catch where error.code == ENODEV {
            return nil
        } catch {
            throw .netlink(error)
        }
    }

    /// Every IPv4 address of the host: (interface index, prefix).
    public func addresses() throws(DataplaneError) -> [(index: Int32, prefix: IPv4Prefix)] {
        try wrap { () throws(NetlinkError) in
            try socket.dump("dump addresses", type: UInt16(RTM_GETADDR), build: { m in
                m.familyHeader(ifaddrmsg.self) { $0.ifa_family = UInt8(AF_INET) }
            }, parse: Parse.address)
        }
    }

    /// Every IPv6 address of the host: (interface index, prefix), link-local ones included.
    public func addresses6() throws(DataplaneError) -> [(index: Int32, prefix: IPv6Prefix)] {
        try wrap { () throws(NetlinkError) in
            try socket.dump("dump IPv6 addresses", type: UInt16(RTM_GETADDR), build: { m in
                m.familyHeader(ifaddrmsg.self) { $0.ifa_family = UInt8(AF_INET6) }
            }, parse: Parse.address6)
        }
    }

    /// The link with interface index `index`, or nil if there is none.
    public func link(index: Int32) throws(DataplaneError) -> LinkState? {
        do {
            return try socket.request("get link #\(index)", type: UInt16(RTM_GETLINK), build: { m in
                m.familyHeader(ifinfomsg.self) {
                    $0.ifi_family = UInt8(AF_UNSPEC)
                    $0.ifi_index = index
                }
            }, parse: Parse.link).first
        } catch where error.code == ENODEV {
            return nil
        } catch {
            throw .netlink(error)
        }
    }

    /// The link that holds `ip`, and its MTU: the VXLAN underlay. Pass the
    /// host's addresses when the caller has dumped them already.
    public func underlay(holding ip: IPv4Address,
                         addresses known: [(index: Int32, prefix: IPv4Prefix)]? = nil) throws(DataplaneError) -> LinkState {
        let all: [(index: Int32, prefix: IPv4Prefix)]
        if let known { all = known } else { all = try addresses() }
        return try underlay(holding: ip, in: all)
    }

    /// The link that holds the IPv6 address `ip`: the IPv6 device's underlay.
    public func underlay(holding ip: IPv6Address,
                         addresses known: [(index: Int32, prefix: IPv6Prefix)]? = nil) throws(DataplaneError) -> LinkState {
        let all: [(index: Int32, prefix: IPv6Prefix)]
        if let known { all = known } else { all = try addresses6() }
        return try underlay(holding: ip, in: all)
    }

    private func underlay<P: IPFamilyPrefix>(holding ip: P.Address, in all: [(index: Int32, prefix: P)]) throws(DataplaneError) -> LinkState {
        guard let index = all.first(where: { $0.prefix.address == ip })?.index else {
            throw .notFound("no interface holds \(ip): the VXLAN local address must be an address of this host")
        }
        guard let link = try link(index: index) else { throw .notFound("interface #\(index) holding \(ip) vanished") }
        return link
    }

    /// Whether the kernel has nexthop objects (Linux 5.3+). Only a definite
    /// answer is kept: a nexthop dump goes through (`snapshot`'s own dump is the
    /// probe, so a sync dumps the table once), or the kernel does not know the
    /// message (EOPNOTSUPP). Any other failure (a busy kernel, a broken
    /// exchange, a dump interrupted at every attempt) says nothing about the
    /// kernel: it answers true, is not kept, and the snapshot's own nexthop dump
    /// then meets the failure and fails the pass, instead of a daemon that keeps
    /// its dataplane choosing the classic layout for the rest of its life.
    public var supportsNexthops: Bool {
        if let nexthopSupport { return nexthopSupport }
        do {
            _ = try socket.dump("dump nexthops", type: UInt16(RTM_GETNEXTHOP), build: { m in
                m.familyHeader(nhmsg.self) { $0.nh_family = UInt8(AF_UNSPEC) }
            }, parse: { _ in nil as Int? })
            nexthopSupport = true
        } catch where error.code == EOPNOTSUPP {
            nexthopSupport = false
        } catch {
            return true
        }
        return nexthopSupport!
    }

    /// nil until a nexthop dump gave a definite answer.
    private var nexthopSupport: Bool?

    /// `snapshot` dumps routes on a second thread and socket while it dumps the
    /// other tables on this one (never when the socket has an interposer: the
    /// second socket would go around it).
    public var parallelDumps = true

    // MARK: Snapshot

    public func snapshot(deviceName: String, proto: UInt8) throws(DataplaneError) -> KernelSnapshot {
        try snapshot(deviceName: deviceName, proto: proto, hostAddresses: nil)
    }

    /// The snapshot, one dump per table. `hostAddresses`: the host's addresses when
    /// the caller has dumped them already (the device's are taken from there).
    /// The nexthop dump doubles as the probe of `supportsNexthops`: a kernel
    /// without nexthop objects refuses it, and the snapshot then has none.
    public func snapshot(deviceName: String, proto: UInt8, hostAddresses: [(index: Int32, prefix: IPv4Prefix)]?,
                         leftovers: [(name: String, kind: String)] = []) throws(DataplaneError) -> KernelSnapshot {
        try snapshotOf(deviceName: deviceName, proto: proto, hostAddresses: hostAddresses, leftovers: leftovers)
    }

    /// The IPv6 plane's snapshot (`flannel-v6.<VNI>`): the device, its IPv6
    /// addresses but the kernel's own link-local one, its permanent neighbors (NDP's
    /// own entries, REACHABLE, STALE, router..., are the kernel's), its FDB entries
    /// (IPv6 remotes), the IPv6 nexthops of `proto`, the main table's IPv6 routes of
    /// `proto` or on the device but the kernel's own there (proto kernel: fe80::/64
    /// and each address's own route; multicast and local routes live in table
    /// local), the other IPv6 routes as foreign, and who else uses our nexthops.
    /// `hostAddresses`: the host's IPv6 addresses when the caller has dumped them.
    public func snapshot6(deviceName: String, proto: UInt8,
                          hostAddresses: [(index: Int32, prefix: IPv6Prefix)]? = nil) throws(DataplaneError) -> KernelSnapshot6 {
        try snapshotOf(deviceName: deviceName, proto: proto, hostAddresses: hostAddresses, leftovers: [])
    }

    static let fe80 = IPv6Prefix(IPv6Address(high: 0xfe80_0000_0000_0000, low: 0), 64)

    func snapshotOf<A: IPFamilyAddress>(deviceName: String, proto: UInt8, hostAddresses: [(index: Int32, prefix: A.Prefix)]?,
                                        leftovers: [(name: String, kind: String)]) throws(DataplaneError) -> KernelSnapshotOf<A> {
        let isIPv6 = A.family == UInt8(AF_INET6)
        var snapshot = KernelSnapshotOf<A>()
        let device = try link(named: deviceName)
        snapshot.device = device
        // Only a VXLAN or TUN device can be the agent's: what is on a device of
        // another kind that has the name is not read (the diff refuses such a device).
        let index = device?.kind == "vxlan" || device?.kind == "tun" ? device?.index : nil
        for (name, kind) in leftovers {
            if let link = try self.link(named: name), link.kind == kind { snapshot.leftovers.append(link) }
        }
        // The route dump (the largest: every route of every table) runs on a
        // thread of its own with its own socket while this one dumps the rest:
        // the kernel fills dump replies in the receiving thread, so on two cores
        // the snapshot takes the longer half, not the sum.
        let routeDump = parallelDumps && socket.interposer == nil ? RouteDump<A>.start(sameNamespaceAs: socket.fileDescriptor) : nil
        defer { routeDump?.join() }
        try wrap { () throws(NetlinkError) in
            if let index {
                if let hostAddresses {
                    snapshot.addresses = hostAddresses.compactMap { $0.index == index ? $0.prefix : nil }
                } else {
                    snapshot.addresses = try socket.dump("dump addresses of \(deviceName)", type: UInt16(RTM_GETADDR), build: { m in
                        m.familyHeader(ifaddrmsg.self) {
                            $0.ifa_family = A.family
                            $0.ifa_index = UInt32(bitPattern: index)
                        }
                    }, parse: { (Parse.addressOf($0) as (index: Int32, prefix: A.Prefix)?).flatMap { $0.index == index ? $0.prefix : nil } })
                }
                // The kernel gives the IPv6 device a link-local address of its own.
                if isIPv6 { snapshot.addresses.removeAll { ($0 as? IPv6Prefix)?.address.isLinkLocal == true } }
                // Neighbors and FDB entries are the VXLAN device's; on udp's TUN device the
                // kernel keeps a NOARP neighbor of its own (0.0.0.0), which is not the agent's.
                if device?.kind == "vxlan" {
                    snapshot.neighbors = try socket.dump("dump neighbors of \(deviceName)", type: UInt16(RTM_GETNEIGH), build: { m in
                        m.familyHeader(ndmsg.self) { $0.ndm_family = A.family }
                        m.put(UInt16(NDA_IFINDEX), u32: UInt32(bitPattern: index))
                    }, parse: { message -> NeighborOf<A>? in
                        guard let (at, neighbor) = Parse.neighborOf(message) as (index: Int32, neighbor: NeighborOf<A>)?,
                              at == index else { return nil }
                        // NDP makes entries of its own (REACHABLE, STALE, FAILED, routers): not the agent's.
                        return isIPv6 && !neighbor.permanent ? nil : neighbor
                    })
                    snapshot.fdb = try socket.dump("dump fdb of \(deviceName)", type: UInt16(RTM_GETNEIGH), build: { m in
                        m.familyHeader(ndmsg.self) { $0.ndm_family = UInt8(AF_BRIDGE) }
                    }, parse: { (Parse.fdbOf($0) as (index: Int32, entry: FDBEntryOf<A>)?).flatMap { $0.index == index ? $0.entry : nil } })
                }
            }
            var groups: [NexthopOf<A>] = []
            if nexthopSupport != false {
                func dumpNexthops() throws(NetlinkError) -> [NexthopOf<A>] {
                    try socket.dump("dump nexthops", type: UInt16(RTM_GETNEXTHOP), build: { m in
                        m.familyHeader(nhmsg.self) { $0.nh_family = UInt8(AF_UNSPEC) }
                    }, parse: { message -> NexthopOf<A>? in
                        guard let nexthop = Parse.nexthopOf(message) as NexthopOf<A>? else { return nil }
                        if nexthop.proto == proto && nexthop.group == nil { return nexthop }
                        if nexthop.group != nil { groups.append(nexthop) }
                        return nil
                    })
                }
                if nexthopSupport == true {
                    snapshot.nexthops = try dumpNexthops()
                } else {
                    // The first nexthop dump is the probe: a kernel without nexthop
                    // objects has no handler for it (EOPNOTSUPP). Any other failure
                    // says nothing about the kernel: the dump is tried once more (as
                    // a probe of its own and the snapshot's dump used to be), and a
                    // second failure fails the snapshot, as it does for other tables.
                    do throws(NetlinkError) {
                        snapshot.nexthops = try dumpNexthops()
                        nexthopSupport = true
                    } catch where error.code == EOPNOTSUPP {
                        groups = []
                        nexthopSupport = false
                    } catch {
                        groups = []
                        snapshot.nexthops = try dumpNexthops()
                        nexthopSupport = true
                    }
                }
            }
            let routes: [RouteOf<A>], otherTables: [(UInt32, RouteOf<A>)]
            if let routeDump {
                (routes, otherTables) = try routeDump.result(orDumpOn: socket)
            } else {
                (routes, otherTables) = try RouteDump<A>.routes(socket)
            }
            for route in routes {
                if route.proto == proto || (index != nil && route.deviceIndex == index) {
                    if isIPv6, index != nil, route.deviceIndex == index, route.proto == UInt8(RTPROT_KERNEL),
                       Self.isKernelOwn(route.dst, addresses: snapshot.addresses) { continue }
                    snapshot.routes.append(route)
                } else {
                    snapshot.foreignRoutes.append(route)
                }
            }
            snapshot.nexthopUsers = Self.nexthopUsers(ours: snapshot.nexthops, groups: groups,
                                                      foreignRoutes: snapshot.foreignRoutes, otherTables: otherTables)
        }
        return snapshot
    }

    /// A route the kernel makes on the IPv6 device itself: fe80::/64 (its
    /// link-local address), or an address's own route (the /128 for a /128).
    static func isKernelOwn<P: IPFamilyPrefix>(_ dst: P, addresses: [P]) -> Bool {
        if let dst = dst as? IPv6Prefix, dst == fe80 { return true }
        return addresses.contains { P($0.network, $0.length) == dst }
    }

    /// Which of our nexthops something else uses, and the first such user.
    static func nexthopUsers<A: IPFamilyAddress>(ours: [NexthopOf<A>], groups: [NexthopOf<A>], foreignRoutes: [RouteOf<A>],
                                                 otherTables: [(UInt32, RouteOf<A>)]) -> [UInt32: String] {
        let ids = Set(ours.map(\.id))
        guard !ids.isEmpty else { return [:] }
        var users: [UInt32: String] = [:]
        func note(_ id: UInt32, _ user: @autoclosure () -> String) {
            if ids.contains(id) && users[id] == nil { users[id] = user() }
        }
        for group in groups { for member in group.group ?? [] { note(member, "nexthop group id \(group.id) proto \(Renderer.protocolName(group.proto))") } }
        for route in foreignRoutes { if let id = route.nexthopID { note(id, "route \(route.dst) proto \(Renderer.protocolName(route.proto))") } }
        for (table, route) in otherTables {
            if let id = route.nexthopID { note(id, "route \(route.dst) table \(table) proto \(Renderer.protocolName(route.proto))") }
        }
        return users
    }

    // MARK: Apply

    /// Applies `changes` as batched netlink in the order DESIGN.md gives:
    /// 1. routes, then nexthops, that are removed (before the device changes, so a
    ///    device recreate does not have the kernel walk them);
    /// 2. the device: delete, recreate, create, update;
    /// 3. its addresses (new, then stale), then adds and replaces: FDB, neighbor, nexthop, route;
    /// 4. removed neighbors and FDB entries.
    /// A failed FDB entry skips the neighbors that use its MAC, a failed neighbor
    /// the nexthops and routes via its address, a failed nexthop its routes.
    public func apply(_ changes: [Change], deviceName: String) -> ApplyReport {
        applyOf(changes, deviceName: deviceName)
    }

    /// The IPv6 plane's changes (`flannel-v6.<VNI>`), in the same phases and with
    /// the same reporting. A created IPv6 device (`localIPv6` set) gets
    /// `accept_ra` 0, as flanneld sets it: router advertisements on the overlay
    /// must not give the node addresses or routes.
    public func apply(_ changes: [Change6], deviceName: String) -> ApplyReport6 {
        applyOf(changes, deviceName: deviceName)
    }

    func applyOf<A: IPFamilyAddress>(_ changes: [ChangeOf<A>], deviceName: String) -> ApplyReportOf<A> {
        var report = ApplyReportOf<A>()
        var phases = Phases<A>(changes)

        var deviceIndex: Int32? = phases.knownDeviceIndex
        // 1. Removed routes and nexthops.
        send(phases.removedRoutes.map { .remove(.route($0)) } + phases.removedNexthops.map { .remove(.nexthop($0)) },
             device: deviceIndex ?? 0, report: &report)

        // 2. The device.
        for change in phases.device {
            let batch = Batch(expectedMessages: 2)
            switch change {
            case .createTUN(let new):
                report.writes += 2
                if let failure = createTUN(new) { report.failures.append(ChangeFailureOf(change: change, cause: .refused(failure))) }
                continue
            case .updateTUN(let old, let new):
                Requests.updateLink(index: old.index, mtu: old.mtu == new.mtu ? nil : new.mtu, mac: nil, up: false, into: batch)
            case .deleteDevice(let link):
                Requests.deleteLink(index: link.index, into: batch)
            case .recreateDevice(let old, let new):
                Requests.deleteLink(index: old.index, into: batch)
                Requests.createVXLAN(new, into: batch)
            case .createDevice(let new):
                Requests.createVXLAN(new, into: batch)
            case .updateDevice(let old, let new):
                Requests.updateLink(index: old.index, mtu: old.mtu == new.mtu ? nil : new.mtu,
                                    mac: old.mac == new.mac ? nil : new.mac, up: false, into: batch)
            default:
                continue
            }
            report.writes += batch.count
            do {
                let failures = try socket.send(batch, chunkBytes: chunkBytes)
                if let failure = failures.first {
                    report.failures.append(ChangeFailureOf(change: change, cause: .refused(failure.error)))
                } else if case .createDevice(let new) = change, new.localIPv6 != nil, let failure = Self.disableAcceptRA(new.name) {
                    report.failures.append(ChangeFailureOf(change: change, cause: .refused(failure)))
                } else if case .recreateDevice(_, let new) = change, new.localIPv6 != nil, let failure = Self.disableAcceptRA(new.name) {
                    report.failures.append(ChangeFailureOf(change: change, cause: .refused(failure)))
                }
            } catch {
                report.failures.append(ChangeFailureOf(change: change, cause: .exchange(error)))
            }
        }
        if phases.needsDevice {
            var missing: String?
            do {
                if let link = try link(named: deviceName) {
                    deviceIndex = link.index
                    if !link.isUp {
                        let batch = Batch(expectedMessages: 1)
                        Requests.updateLink(index: link.index, mtu: nil, mac: nil, up: true, into: batch)
                        report.writes += 1
                        do {
                            if let failure = try socket.send(batch).first { throw failure.error }
                        } catch {
                            missing = (error as? NetlinkError)?.about("set link \(deviceName) up").description ?? "\(error)"
                        }
                    }
                } else {
                    missing = "device \(deviceName) does not exist"
                }
            } catch {
                missing = "\(error)"
            }
            if let missing {
                // What needs the device is skipped; entries on other devices
                // (DirectRouting's routes on the underlay) are still written.
                report.failures += phases.deviceEntryChanges.map { ChangeFailureOf(change: $0, cause: .skipped, reason: missing) }
                phases.dropDeviceEntries()
                deviceIndex = nil
            }
        }
        report.deviceIndex = deviceIndex
        // Entries on the agent's device are gone from the phases when it is missing.
        let index = deviceIndex ?? 0

        // 3. Adds and replaces, in dependency order, skipping dependents of failures.
        var failedMACs = Set<MACAddress>(), failedGateways = Set<A>(), failedNexthops = Set<UInt32>()
        // Addresses: the new one, then the stale ones, before anything else. After
        // a renumbering this node's old VTEP address may be a peer's gateway now,
        // and the kernel refuses a nexthop via a local address ("Nexthop has
        // invalid gateway"). The new one goes first: removing a device's last IPv4
        // address makes the kernel flush its neighbors, permanent ones included.
        send(phases.addedAddresses.map { .add(.address($0)) } + phases.removed(.address).map { .remove($0) },
             device: index, report: &report)
        var failed = send(phases.upserts(.fdb), device: index, report: &report)
        for case .fdb(let e) in failed { failedMACs.insert(e.mac) }

        let neighbors = skipping(phases.upserts(.neighbor), report: &report) { entry in
            if case .neighbor(let n) = entry, failedMACs.contains(n.mac) {
                // Skipped is as good as failed for what goes via it.
                failedGateways.insert(n.ip)
                return "its fdb entry for \(n.mac) failed"
            }
            return nil
        }
        failed = send(neighbors, device: index, report: &report)
        for case .neighbor(let n) in failed { failedGateways.insert(n.ip) }

        let nexthops = skipping(phases.upserts(.nexthop), report: &report) { entry in
            if case .nexthop(let n) = entry, let gateway = n.gateway, failedGateways.contains(gateway) {
                failedNexthops.insert(n.id)
                return "its neighbor \(gateway) failed"
            }
            return nil
        }
        failed = send(nexthops, device: index, report: &report)
        for case .nexthop(let n) in failed { failedNexthops.insert(n.id) }

        let routes = skipping(phases.upserts(.route), report: &report) { entry in
            guard case .route(let r) = entry else { return nil }
            // The neighbor first: when it failed, its nexthop was skipped too, and the neighbor is the cause.
            if let gateway = r.gateway, failedGateways.contains(gateway) { return "its neighbor \(gateway) failed" }
            if let id = r.nexthopID, failedNexthops.contains(id) { return "its nexthop \(id) failed" }
            return nil
        }
        send(routes, device: index, report: &report)

        // 4. Removed neighbors and FDB entries.
        send(phases.removed(.neighbor).map { .remove($0) } + phases.removed(.fdb).map { .remove($0) },
             device: index, report: &report)
        return report
    }

    private func skipping<A: IPFamilyAddress>(_ changes: [ChangeOf<A>], report: inout ApplyReportOf<A>,
                                              reason: (EntryOf<A>) -> String?) -> [ChangeOf<A>] {
        changes.filter { change in
            guard let entry = change.target, let why = reason(entry) else { return true }
            report.failures.append(ChangeFailureOf(change: change, cause: .skipped, reason: why))
            return false
        }
    }

    /// Sends entry changes as one batch; returns the entries that failed.
    @discardableResult
    private func send<A: IPFamilyAddress>(_ changes: [ChangeOf<A>], device: Int32, report: inout ApplyReportOf<A>) -> [EntryOf<A>] {
        guard !changes.isEmpty else { return [] }
        let batch = Batch(expectedMessages: changes.count)
        for change in changes {
            switch change {
            case .add(let entry), .replace(_, let entry): Self.request(entry, device: device, .replace, into: batch)
            case .remove(let entry): Self.request(entry, device: device, .delete, into: batch)
            default: preconditionFailure("device change in an entry batch")
            }
        }
        report.writes += batch.count
        do {
            let failures = try socket.send(batch, chunkBytes: chunkBytes).filter { failure in
                // A neighbor that is gone already is what its removal wants: the
                // kernel drops a neighbor whose address became local (this node
                // took the subnet its peer had), so its delete finds nothing.
                if case .remove(.neighbor) = changes[failure.index], failure.error.code == ENOENT { return false }
                return true
            }
            return failures.map { failure in
                let change = changes[failure.index]
                report.failures.append(ChangeFailureOf(change: change, cause: .refused(failure.error)))
                return change.target!
            }
        } catch {
            // The exchange broke: which requests landed is unknown; report them all.
            report.failures += changes.map { ChangeFailureOf(change: $0, cause: .exchange(error)) }
            return changes.compactMap(\.target)
        }
    }

    /// `device`: the agent's device, for entries that name no device of their own.
    /// Makes the udp backend's TUN device: persistent, with the flags its data
    /// path's queues attach with, its MTU, up, and `accept_local` (the tunnel's
    /// ICMP errors come from this node's own address on it, which the kernel
    /// would otherwise drop as a martian). nil, or the failure.
    func createTUN(_ device: TUNDevice) -> NetlinkError? {
        let operation = "add \(Renderer(deviceName: device.name, proto: 0).describe(device))"
        let fd = vxa_tun_open(device.name, 0)
        guard fd >= 0 else { return NetlinkError(operation: operation, code: -fd) }
        let persisted = vxa_tun_set_persist(fd, 1)
        close(fd)
        guard persisted == 0 else { return NetlinkError(operation: operation + " (persist)", code: -persisted) }
        do {
            guard let link = try link(named: device.name) else { return NetlinkError(operation: operation, code: ENODEV) }
            let batch = Batch(expectedMessages: 1)
            Requests.updateLink(index: link.index, mtu: device.mtu, mac: nil, up: true, into: batch)
            if let failure = try socket.send(batch).first { return failure.error.about("set link \(device.name) mtu \(device.mtu) up") }
        } catch let error as DataplaneError {
            if case .netlink(let error) = error { return error }
            return NetlinkError(operation: operation, code: EIO)
        } catch let error as NetlinkError {
            return error
        } catch {
            return NetlinkError(operation: operation, code: EIO)
        }
        return Self.setAcceptLocal(device.name)
    }

    /// `net.ipv4.conf.DEV.accept_local = 1` in the namespace of the calling thread.
    static func setAcceptLocal(_ name: String) -> NetlinkError? {
        let path = "/proc/sys/net/ipv4/conf/\(name)/accept_local"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return NetlinkError(operation: "write \(path)", code: errno) }
        defer { close(fd) }
        return write(fd, "1", 1) == 1 ? nil : NetlinkError(operation: "write \(path)", code: errno)
    }

    /// `net.ipv6.conf.DEV.accept_ra = 0` in the namespace of the calling thread,
    /// as flanneld sets it on its devices (`newVXLANDevice`): the overlay must not
    /// configure the node from router advertisements.
    static func disableAcceptRA(_ name: String) -> NetlinkError? {
        let path = "/proc/sys/net/ipv6/conf/\(name)/accept_ra"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return NetlinkError(operation: "write \(path)", code: errno) }
        defer { close(fd) }
        return write(fd, "0", 1) == 1 ? nil : NetlinkError(operation: "write \(path)", code: errno)
    }

    /// The device's `accept_ra` (0 off, 1 on, 2 even when forwarding), as the calling
    /// thread's namespace has it; nil when the device has no IPv6 configuration.
    public static func acceptRA(_ name: String) -> Int? {
        let path = "/proc/sys/net/ipv6/conf/\(name)/accept_ra"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 8)
        let count = read(fd, &bytes, bytes.count)
        guard count > 0 else { return nil }
        return Int(String(decoding: bytes[..<count].prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self))
    }

    /// Whether `accept_local` is on for the device (what `createTUN` sets; a snapshot reads it).
    public static func acceptLocal(_ name: String) -> Bool {
        let path = "/proc/sys/net/ipv4/conf/\(name)/accept_local"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var byte: UInt8 = 0
        return read(fd, &byte, 1) == 1 && byte == UInt8(ascii: "1")
    }

    static func request<A: IPFamilyAddress>(_ entry: EntryOf<A>, device: Int32, _ operation: Requests.Operation, into batch: Batch) {
        switch entry {
        case .address(let prefix): Requests.addressOf(prefix, device: device, operation, into: batch)
        case .fdb(let fdb): Requests.fdbOf(fdb, device: device, operation, into: batch)
        case .neighbor(let neighbor): Requests.neighborOf(neighbor, device: device, operation, into: batch)
        case .nexthop(let nexthop): Requests.nexthopOf(nexthop, device: nexthop.deviceIndex ?? device, operation, into: batch)
        case .route(let route): Requests.routeOf(route, device: route.deviceIndex ?? device, operation, into: batch)
        }
    }
}

/// A plan sorted into the phases `Dataplane.apply` runs.
struct Phases<A: IPFamilyAddress> {
    var device: [ChangeOf<A>] = []
    /// Every change of the plan, in its order (the entry changes that need the
    /// device are looked for here, only when it is missing).
    let changes: [ChangeOf<A>]
    /// Adds and replaces by kind of entry (`Kind.rawValue`), each in the plan's
    /// order. Sized by a count first: at 10,000 peers a cold sync's 40,003
    /// changes were appended to growing arrays, then filtered once per kind
    /// (copies, and page faults of each new buffer).
    var upsertsByKind: [[ChangeOf<A>]]
    var removes: [EntryOf<A>] = []
    var knownDeviceIndex: Int32?
    var deviceWillExist = false
    /// The entry changes that need the device were dropped (`dropDeviceEntries`).
    var deviceEntriesDropped = false

    init(_ changes: [ChangeOf<A>]) {
        self.changes = changes
        var counts = [Int](repeating: 0, count: Kind.count)
        var removals = 0
        for change in changes {
            switch change {
            case .add(let entry), .replace(_, let entry): counts[Self.kind(entry).rawValue] += 1
            case .remove: removals += 1
            default: break
            }
        }
        upsertsByKind = counts.map { count in
            var bucket: [ChangeOf<A>] = []
            bucket.reserveCapacity(count)
            return bucket
        }
        removes.reserveCapacity(removals)
        for change in changes {
            switch change {
            case .createDevice, .createTUN:
                device.append(change)
                deviceWillExist = true
            case .updateTUN(let old, _):
                device.append(change)
                knownDeviceIndex = old.index
                deviceWillExist = true
            case .recreateDevice(let old, _), .updateDevice(let old, _):
                device.append(change)
                knownDeviceIndex = old.index
                deviceWillExist = true
            case .deleteDevice:
                // The agent's device that goes, or a leftover of another backend:
                // either way no device of the agent's is known after it.
                device.append(change)
            case .add(let entry), .replace(_, let entry):
                upsertsByKind[Self.kind(entry).rawValue].append(change)
            case .remove(let entry):
                removes.append(entry)
            }
        }
    }

    /// Only removals, entries on other devices and maybe a device delete: nothing needs the device afterwards.
    var needsDevice: Bool { deviceWillExist || !deviceEntryChanges.isEmpty }

    /// The entry changes that need the agent's device, in the plan's order: its
    /// addresses, FDB entries and neighbors, and routes and nexthops that name
    /// no other device (removals of routes and nexthops name none).
    var deviceEntryChanges: [ChangeOf<A>] {
        guard !deviceEntriesDropped else { return [] }
        return changes.filter { change in
            switch change {
            case .remove(.route), .remove(.nexthop): false
            case .add(let entry), .replace(_, let entry), .remove(let entry): Self.onDevice(entry)
            default: false
            }
        }
    }

    /// Leaves out the changes that need the agent's device.
    mutating func dropDeviceEntries() {
        for kind in upsertsByKind.indices {
            upsertsByKind[kind].removeAll { change in
                switch change {
                case .add(let entry), .replace(_, let entry): Self.onDevice(entry)
                default: false
                }
            }
        }
        removes.removeAll { entry in
            switch entry {
            case .route, .nexthop: false
            default: Self.onDevice(entry)
            }
        }
        deviceEntriesDropped = true
    }

    /// Whether an entry is written on the agent's device (not on one it names itself).
    static func onDevice(_ entry: EntryOf<A>) -> Bool {
        switch entry {
        case .address, .fdb, .neighbor: true
        case .nexthop(let n): n.deviceIndex == nil
        case .route(let r): r.deviceIndex == nil
        }
    }

    var removedRoutes: [RouteOf<A>] { removes.compactMap { if case .route(let r) = $0 { r } else { nil } } }
    var removedNexthops: [NexthopOf<A>] { removes.compactMap { if case .nexthop(let n) = $0 { n } else { nil } } }
    var addedAddresses: [A.Prefix] {
        upserts(.address).compactMap { if case .add(.address(let a)) = $0 { a } else { nil } }
    }

    /// The kinds of entry a phase takes. Not key paths: a key path into the
    /// generic `EntryOf` is projected through the runtime (generic metadata,
    /// value witnesses) for every entry, even specialized: a cold IPv4 sync at
    /// 10,000 peers spent 48-57 ms of user CPU with them, 37-45 ms with this.
    enum Kind: Int { case address, fdb, neighbor, nexthop, route
        static var count: Int { 5 }
    }

    @inline(__always)
    static func kind(_ entry: EntryOf<A>) -> Kind {
        switch entry {
        case .address: .address
        case .fdb: .fdb
        case .neighbor: .neighbor
        case .nexthop: .nexthop
        case .route: .route
        }
    }

    func upserts(_ kind: Kind) -> [ChangeOf<A>] { upsertsByKind[kind.rawValue] }

    func removed(_ kind: Kind) -> [EntryOf<A>] {
        removes.filter { Self.kind($0) == kind }
    }
}

/// The route dump of a snapshot, on a thread of its own with a socket of its
/// own (a netlink socket serves one dump at a time), opened in the network
/// namespace of the dataplane's socket (a namespace is per thread). The thread
/// writes `outcome` once; `join` (pthread_join) orders that before any read.
final class RouteDump<A: IPFamilyAddress>: @unchecked Sendable {
    /// nil: the thread could not enter the namespace; the caller dumps inline.
    private var outcome: Result<([RouteOf<A>], [(UInt32, RouteOf<A>)]), NetlinkError>?
    private var thread: NamespaceThread?

    private init() {}

    /// Starts the dump; nil if the namespace or a thread is not to be had (the
    /// caller dumps inline).
    static func start(sameNamespaceAs socket: Int32) -> RouteDump? {
        let dump = RouteDump()
        guard let thread = NamespaceThread.start(sameNamespaceAs: socket, {
            dump.outcome = Result { () throws(NetlinkError) in try RouteDump.routes(try NetlinkSocket()) }
        }) else { return nil }
        dump.thread = thread
        return dump
    }

    func join() { thread?.join() }

    /// Waits for the dump: the main table's routes, and those of other tables
    /// that use a nexthop (dumped on `socket` if the thread could not).
    func result(orDumpOn socket: NetlinkSocket) throws(NetlinkError) -> ([RouteOf<A>], [(UInt32, RouteOf<A>)]) {
        join()
        guard let outcome else { return try Self.routes(socket) }
        return try outcome.get()
    }

    /// Dumps the routes of family `A` on `socket`.
    static func routes(_ socket: NetlinkSocket) throws(NetlinkError) -> ([RouteOf<A>], [(UInt32, RouteOf<A>)]) {
        let main = UInt32(RT_TABLE_MAIN.rawValue)
        var otherTables: [(UInt32, RouteOf<A>)] = []
        let routes = try socket.dump("dump routes", type: UInt16(RTM_GETROUTE), build: { m in
            m.familyHeader(rtmsg.self) { $0.rtm_family = A.family }
        }, parse: { message -> RouteOf<A>? in
            guard let (table, route) = Parse.routeOf(message) as (table: UInt32, route: RouteOf<A>)? else { return nil }
            guard table == main else {
                if route.nexthopID != nil { otherTables.append((table, route)) }
                return nil
            }
            return route
        })
        return (routes, otherTables)
    }
}

/// A thread that enters the network namespace of a socket and runs `body`
/// there. `join` waits for it (once; later calls return at once).
final class NamespaceThread: @unchecked Sendable {
    // @unchecked: `thread` is written before the thread starts and read by join;
    // `body` runs on the thread alone.
    private var thread = pthread_t()
    private let namespace: Int32
    private let body: () -> Void
    private var joined = false

    private init(namespace: Int32, body: @escaping () -> Void) {
        self.namespace = namespace
        self.body = body
    }

    /// Starts the thread; nil if the namespace or a thread is not to be had.
    /// `body` does not run when the thread cannot enter the namespace.
    static func start(sameNamespaceAs socket: Int32, _ body: @escaping () -> Void) -> NamespaceThread? {
        let namespace = ioctl(socket, 0x894C /* SIOCGSKNS */)
        guard namespace >= 0 else { return nil }
        let thread = NamespaceThread(namespace: namespace, body: body)
        let context = Unmanaged.passRetained(thread).toOpaque()
        let status = pthread_create(&thread.thread, nil, { raw in
            let thread = Unmanaged<NamespaceThread>.fromOpaque(raw!).takeRetainedValue()
            guard enterNetworkNamespace(thread.namespace) else { return nil }
            thread.body()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<NamespaceThread>.fromOpaque(context).release()
            close(namespace)
            return nil
        }
        return thread
    }

    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
        close(namespace)
    }
}

/// setns(fd, CLONE_NEWNET) for the calling thread. Glibc declares setns only
/// under _GNU_SOURCE, which Swift's Glibc module does not define: look it up.
private func enterNetworkNamespace(_ fd: Int32) -> Bool {
    typealias SetNS = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { return false }
    return unsafeBitCast(symbol, to: SetNS.self)(fd, 0x4000_0000 /* CLONE_NEWNET */) == 0
}
