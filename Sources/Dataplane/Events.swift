import CLibMnl
import Model
import Netlink

#if canImport(Glibc)
import Glibc
#endif

/// The netlink groups whose messages `KernelEvents.parse` understands.
public let kernelEventGroups: [UInt32] = [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE, RTNLGRP_NEXTHOP]
    .map(\.rawValue)

/// The netlink groups whose messages `KernelEvents.parse6` understands (the
/// IPv6 device's): links, IPv6 addresses, neighbors and FDB entries (one group
/// for every family), IPv6 routes, nexthops.
public let kernelEventGroups6: [UInt32] = [RTNLGRP_LINK, RTNLGRP_IPV6_IFADDR, RTNLGRP_NEIGH, RTNLGRP_IPV6_ROUTE, RTNLGRP_NEXTHOP]
    .map(\.rawValue)

/// Turns a netlink notification into a `KernelEvent`, or nil when it cannot
/// concern the agent. Pure, like `Parse`: the monitor thread calls it for every
/// message, so it decides on the family header before it parses attributes.
public struct KernelEvents: Sendable {
    /// The agent's device name, and its index once it exists.
    public var deviceName: String
    public var deviceIndex: Int32?
    /// The underlay: its addresses and state decide the device's local address
    /// and which peers are on this host's segment (host-gw, DirectRouting).
    public var underlay: (index: Int32, name: String)?
    /// The agent's route and nexthop protocol.
    public var proto: UInt8
    /// The port id of the socket the agent writes with: its own changes come back stamped with it.
    public var ownPort: UInt32

    public init(deviceName: String, deviceIndex: Int32?, proto: UInt8, ownPort: UInt32) {
        self.deviceName = deviceName
        self.deviceIndex = deviceIndex
        self.proto = proto
        self.ownPort = ownPort
    }

    /// The event for the IPv4 device (`flannel.<VNI>`).
    public func parse(_ message: Message) -> KernelEvent? { parseOf(message) }

    /// The event for the IPv6 device (`flannel-v6.<VNI>`; `deviceName` is its
    /// name): IPv6 routes, NDP neighbors, FDB entries with IPv6 remotes, IPv6
    /// nexthops; the underlay's IPv6 addresses. NDP's own entries (not
    /// permanent) are the kernel's, not the agent's: they are no event.
    public func parse6(_ message: Message) -> KernelEvent6? { parseOf(message) }

    @inline(__always)
    func parseOf<A: IPFamilyAddress>(_ message: Message) -> KernelEventOf<A>? {
        let isIPv6 = A.family == UInt8(AF_INET6)
        let type = Int32(message.type)
        let own = ownPort != 0 && message.portID == ownPort
        let replace = message.flags & UInt16(NLM_F_REPLACE) != 0
        func event(_ subject: KernelEventOf<A>.Subject, deleted: Bool) -> KernelEventOf<A> {
            KernelEventOf(subject, deleted: deleted, own: own, replace: replace)
        }
        switch type {
        case Int32(RTM_NEWLINK), Int32(RTM_DELLINK):
            guard let header = message.familyHeader(ifinfomsg.self) else { return nil }
            let deleted = type == Int32(RTM_DELLINK)
            if let underlay, header.ifi_index == underlay.index {
                // Its state, MTU or addresses may have changed; statistics-only updates are not sent.
                return event(.device(deleted ? "underlay \(underlay.name) deleted" : "underlay \(underlay.name) changed"), deleted: false)
            }
            if header.ifi_index != deviceIndex || deviceIndex == nil {
                let name = message.withAttributes(afterHeader: MemoryLayout<ifinfomsg>.size, maxType: UInt16(IFLA_IFNAME)) {
                    $0[UInt16(IFLA_IFNAME)]?.string
                } ?? nil
                guard name == deviceName else { return nil }
            }
            return event(.device(deleted ? "device \(deviceName) deleted" : "device \(deviceName) changed"), deleted: deleted)
        case Int32(RTM_NEWADDR), Int32(RTM_DELADDR):
            guard let header = message.familyHeader(ifaddrmsg.self) else { return nil }
            if let underlay, Int32(bitPattern: header.ifa_index) == underlay.index, header.ifa_family == A.family {
                return event(.device("address of the underlay \(underlay.name) \(type == Int32(RTM_DELADDR) ? "deleted" : "changed")"),
                             deleted: false)
            }
            guard let index = deviceIndex, Int32(bitPattern: header.ifa_index) == index else { return nil }
            // The kernel's own link-local address comes and goes with the IPv6 device: not the agent's.
            if isIPv6, header.ifa_family == UInt8(AF_INET6), let (_, prefix) = Parse.address6(message), prefix.address.isLinkLocal {
                return nil
            }
            return event(.device("address of \(deviceName) \(type == Int32(RTM_DELADDR) ? "deleted" : "changed")"),
                         deleted: type == Int32(RTM_DELADDR))
        case Int32(RTM_NEWNEIGH), Int32(RTM_DELNEIGH):
            guard let header = message.familyHeader(ndmsg.self), let index = deviceIndex, header.ndm_ifindex == index else { return nil }
            let deleted = type == Int32(RTM_DELNEIGH)
            if header.ndm_family == UInt8(AF_BRIDGE) {
                return (Parse.fdbOf(message) as (index: Int32, entry: FDBEntryOf<A>)?).map { event(.entry(.fdb($0.entry)), deleted: deleted) }
            }
            guard let (_, neighbor) = Parse.neighborOf(message) as (index: Int32, neighbor: NeighborOf<A>)? else { return nil }
            // NDP makes and ages entries of its own on the IPv6 device (REACHABLE,
            // STALE, INCOMPLETE...): only permanent ones are the agent's. Every
            // deletion is passed on: the kernel reports a deleted permanent entry
            // as FAILED (measured), and one NDP dropped changes nothing in the diff.
            if isIPv6 && !neighbor.permanent && !deleted { return nil }
            return event(.entry(.neighbor(neighbor)), deleted: deleted)
        case Int32(RTM_NEWROUTE), Int32(RTM_DELROUTE):
            guard let header = message.familyHeader(rtmsg.self), header.rtm_family == A.family,
                  header.rtm_table == UInt8(RT_TABLE_MAIN.rawValue) || header.rtm_table == UInt8(RT_TABLE_COMPAT.rawValue),
                  let (table, route) = Parse.routeOf(message) as (table: UInt32, route: RouteOf<A>)?,
                  table == UInt32(RT_TABLE_MAIN.rawValue) else { return nil }
            // The kernel's routes of the IPv6 device (fe80::/64, its address's own route) are not the agent's.
            if isIPv6, route.proto == UInt8(RTPROT_KERNEL), route.deviceIndex == deviceIndex { return nil }
            return event(.entry(.route(route)), deleted: type == Int32(RTM_DELROUTE))
        case Int32(RTM_NEWNEXTHOP), Int32(RTM_DELNEXTHOP):
            guard let header = message.familyHeader(nhmsg.self), header.nh_protocol == proto,
                  let nexthop = Parse.nexthopOf(message) as NexthopOf<A>?, nexthop.group == nil else { return nil }
            return event(.entry(.nexthop(nexthop)), deleted: type == Int32(RTM_DELNEXTHOP))
        default:
            return nil
        }
    }
}
