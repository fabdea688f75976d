import CLibMnl
import Dataplane
import Foundation
import Model
import Netlink
import Synchronization

/// Listens to the kernel's link, address, neighbor, route and nexthop events
/// (netlink multicast) on a thread of its own, turns those that touch what the
/// agent owns into typed `KernelEvent`s, and hands them over in batches: the
/// socket is drained as fast as the kernel fills it, whatever the reconciler is
/// doing, so a burst of the agent's own writes does not overflow it. When it
/// overflows anyway (ENOBUFS), events were lost and `lost` is called: only a
/// full pass can tell what changed.
public final class KernelMonitor: Sendable {
    let parser: Mutex<KernelEvents>
    let stopped = Atomic<Bool>(false)

    public init(deviceName: String, proto: UInt8, ownPort: UInt32) {
        parser = Mutex(KernelEvents(deviceName: deviceName, deviceIndex: nil, proto: proto, ownPort: ownPort))
    }

    /// The device's current interface index (it changes when the device is recreated).
    public func setDeviceIndex(_ index: Int32?) { parser.withLock { $0.deviceIndex = index } }

    /// The underlay (its address and state changes send the daemon to a full pass).
    public func setUnderlay(index: Int32, name: String) { parser.withLock { $0.underlay = (index, name) } }

    /// Subscribes, then starts the thread. Subscribing before the caller's
    /// first dump means no change falls between the dump and the listening.
    public func start(events: @escaping @Sendable ([KernelEvent]) -> Void,
                      lost: @escaping @Sendable (String) -> Void) throws {
        let socket = try NetlinkSocket()
        for group in kernelEventGroups { try socket.subscribe(group: group) }
        let box = SocketBox(socket)
        let thread = Thread { [self] in
            self.loop(box.socket, events: events, lost: lost)
        }
        thread.name = "kernel-monitor"
        thread.start()
    }

    public func stop() { stopped.store(true, ordering: .releasing) }

    func loop(_ socket: NetlinkSocket, events: @Sendable ([KernelEvent]) -> Void, lost: @Sendable (String) -> Void) {
        var batch: [KernelEvent] = []
        while !stopped.load(ordering: .acquiring) {
            do {
                // One receive reads what one datagram holds; take every datagram
                // already queued before handing the batch over.
                var timeout: Int32 = 250
                while try socket.receiveEvents(timeoutMilliseconds: timeout, { message in
                    // The parser is read for each message: the device index it filters
                    // by changes when the reconciler creates the device, maybe while
                    // this thread waits for the next event.
                    if let event = self.parser.withLock({ $0.parse(message) }) { batch.append(event) }
                }) {
                    timeout = 0
                    if batch.count >= 4_096 { break }
                }
            } catch where error.code == ENOBUFS {
                batch = []
                lost("kernel events lost (ENOBUFS)")
                continue
            } catch {
                batch = []
                lost("kernel monitor: \(error)")
                Thread.sleep(forTimeInterval: 0.5)
                continue
            }
            if !batch.isEmpty {
                events(batch)
                batch = []
            }
        }
    }
}

/// Hands the socket to the monitor thread (it is used there only).
final class SocketBox: @unchecked Sendable {
    let socket: NetlinkSocket
    init(_ socket: NetlinkSocket) { self.socket = socket }
}
