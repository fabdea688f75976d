import CLibMnl
import Foundation
import Netlink
import Synchronization

/// Listens to the kernel's link, address, neighbor, route and nexthop events
/// (netlink multicast) and reports those that touch what the agent owns: its
/// device (by index or name), entries on it, routes and nexthops of its
/// protocol. Runs on a thread of its own; `report` is called from it.
///
/// The agent's own writes come back as events too; the daemon's coalescing,
/// diff-based reconcile turns them into one pass with zero writes.
public final class KernelMonitor: Sendable {
    let deviceName: String
    let proto: UInt8
    /// The device's current interface index (it changes when the device is recreated).
    let deviceIndex = Mutex<Int32?>(nil)
    let stopped = Atomic<Bool>(false)

    public init(deviceName: String, proto: UInt8) {
        self.deviceName = deviceName
        self.proto = proto
    }

    public func setDeviceIndex(_ index: Int32?) { deviceIndex.withLock { $0 = index } }

    /// Subscribes, then starts the thread. Subscribing before the caller's
    /// first dump means no change falls between the dump and the listening.
    public func start(report: @escaping @Sendable (String) -> Void) throws {
        let socket = try NetlinkSocket()
        for group in [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE, RTNLGRP_NEXTHOP] {
            try socket.subscribe(group: group.rawValue)
        }
        let box = SocketBox(socket)
        let thread = Thread { [self] in
            self.loop(box.socket, report: report)
        }
        thread.name = "kernel-monitor"
        thread.start()
    }

    public func stop() { stopped.store(true, ordering: .releasing) }

    func loop(_ socket: NetlinkSocket, report: @Sendable (String) -> Void) {
        while !stopped.load(ordering: .acquiring) {
            var reason: String?
            do {
                _ = try socket.receiveEvents(timeoutMilliseconds: 250) { message in
                    if reason == nil { reason = self.classify(message) }
                }
            } catch where error.code == ENOBUFS {
                // Events were lost: only a full comparison can tell what changed.
                reason = "kernel events lost (ENOBUFS)"
            } catch {
                reason = "kernel monitor: \(error)"
                Thread.sleep(forTimeInterval: 0.5)
            }
            if let reason { report(reason) }
        }
    }

    /// What a message says about our state, or nil if it is not ours.
    func classify(_ message: Message) -> String? {
        let index = deviceIndex.withLock { $0 }
        let deleted: Bool
        switch Int32(message.type) {
        case Int32(RTM_NEWLINK), Int32(RTM_DELLINK):
            guard let header = message.familyHeader(ifinfomsg.self) else { return nil }
            deleted = Int32(message.type) == Int32(RTM_DELLINK)
            let name = message.withAttributes(afterHeader: MemoryLayout<ifinfomsg>.size, maxType: UInt16(IFLA_IFNAME)) {
                $0[UInt16(IFLA_IFNAME)]?.string
            } ?? nil
            guard header.ifi_index == index || name == deviceName else { return nil }
            return deleted ? "device \(deviceName) deleted" : "device \(deviceName) changed"
        case Int32(RTM_NEWADDR), Int32(RTM_DELADDR):
            guard let header = message.familyHeader(ifaddrmsg.self), Int32(bitPattern: header.ifa_index) == index else { return nil }
            return "address of \(deviceName) changed"
        case Int32(RTM_NEWNEIGH), Int32(RTM_DELNEIGH):
            guard let header = message.familyHeader(ndmsg.self), header.ndm_ifindex == index else { return nil }
            let kind = header.ndm_family == UInt8(AF_BRIDGE) ? "fdb entry" : "neighbor"
            return Int32(message.type) == Int32(RTM_DELNEIGH) ? "\(kind) on \(deviceName) deleted" : "\(kind) on \(deviceName) changed"
        case Int32(RTM_NEWROUTE), Int32(RTM_DELROUTE):
            guard let header = message.familyHeader(rtmsg.self), header.rtm_family == UInt8(AF_INET) else { return nil }
            let oif = message.withAttributes(afterHeader: MemoryLayout<rtmsg>.size, maxType: UInt16(RTA_OIF.rawValue)) {
                $0[UInt16(RTA_OIF.rawValue)]?.u32.map { Int32(bitPattern: $0) }
            } ?? nil
            guard header.rtm_protocol == proto || (oif != nil && oif == index) else { return nil }
            return Int32(message.type) == Int32(RTM_DELROUTE) ? "route deleted" : "route changed"
        case Int32(RTM_NEWNEXTHOP), Int32(RTM_DELNEXTHOP):
            guard let header = message.familyHeader(nhmsg.self), header.nh_protocol == proto else { return nil }
            return Int32(message.type) == Int32(RTM_DELNEXTHOP) ? "nexthop deleted" : "nexthop changed"
        default:
            return nil
        }
    }
}

/// Hands the socket to the monitor thread (it is used there only).
final class SocketBox: @unchecked Sendable {
    let socket: NetlinkSocket
    init(_ socket: NetlinkSocket) { self.socket = socket }
}
