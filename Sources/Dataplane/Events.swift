import CLibMnl
import Model
import Netlink

#if canImport(Glibc)
import Glibc
#endif

/// The netlink groups whose messages `KernelEvents.parse` understands.
public let kernelEventGroups: [UInt32] = [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE, RTNLGRP_NEXTHOP]
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

    public func parse(_ message: Message) -> KernelEvent? {
        let type = Int32(message.type)
        let own = ownPort != 0 && message.portID == ownPort
        let replace = message.flags & UInt16(NLM_F_REPLACE) != 0
        func event(_ subject: KernelEvent.Subject, deleted: Bool) -> KernelEvent {
            KernelEvent(subject, deleted: deleted, own: own, replace: replace)
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
            if let underlay, Int32(bitPattern: header.ifa_index) == underlay.index, header.ifa_family == UInt8(AF_INET) {
                return event(.device("address of the underlay \(underlay.name) \(type == Int32(RTM_DELADDR) ? "deleted" : "changed")"),
                             deleted: false)
            }
            guard let index = deviceIndex, Int32(bitPattern: header.ifa_index) == index else { return nil }
            return event(.device("address of \(deviceName) \(type == Int32(RTM_DELADDR) ? "deleted" : "changed")"),
                         deleted: type == Int32(RTM_DELADDR))
        case Int32(RTM_NEWNEIGH), Int32(RTM_DELNEIGH):
            guard let header = message.familyHeader(ndmsg.self), let index = deviceIndex, header.ndm_ifindex == index else { return nil }
            let deleted = type == Int32(RTM_DELNEIGH)
            if header.ndm_family == UInt8(AF_BRIDGE) {
                return Parse.fdb(message).map { event(.entry(.fdb($0.entry)), deleted: deleted) }
            }
            return Parse.neighbor(message).map { event(.entry(.neighbor($0.neighbor)), deleted: deleted) }
        case Int32(RTM_NEWROUTE), Int32(RTM_DELROUTE):
            guard let header = message.familyHeader(rtmsg.self), header.rtm_family == UInt8(AF_INET),
                  header.rtm_table == UInt8(RT_TABLE_MAIN.rawValue) || header.rtm_table == UInt8(RT_TABLE_COMPAT.rawValue),
                  let (table, route) = Parse.route(message), table == UInt32(RT_TABLE_MAIN.rawValue) else { return nil }
            return event(.entry(.route(route)), deleted: type == Int32(RTM_DELROUTE))
        case Int32(RTM_NEWNEXTHOP), Int32(RTM_DELNEXTHOP):
            guard let header = message.familyHeader(nhmsg.self), header.nh_protocol == proto,
                  let nexthop = Parse.nexthop(message), nexthop.group == nil else { return nil }
            return event(.entry(.nexthop(nexthop)), deleted: type == Int32(RTM_DELNEXTHOP))
        default:
            return nil
        }
    }
}
