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
    /// Dual stack and IPv6-only: the IPv6 device's events, handed over beside
    /// the IPv4 device's (the daemon keeps a picture of each plane).
    let parser6: Mutex<KernelEvents?>
    let stopped = Atomic<Bool>(false)

    public init(deviceName: String, proto: UInt8, ownPort: UInt32) {
        parser = Mutex(KernelEvents(deviceName: deviceName, deviceIndex: nil, proto: proto, ownPort: ownPort))
        parser6 = Mutex(nil)
    }

    /// Also listens to the IPv6 device `deviceName6` (dual stack); call before `start`.
    public init(deviceName: String, deviceName6: String, proto: UInt8, ownPort: UInt32) {
        parser = Mutex(KernelEvents(deviceName: deviceName, deviceIndex: nil, proto: proto, ownPort: ownPort))
        parser6 = Mutex(KernelEvents(deviceName: deviceName6, deviceIndex: nil, proto: proto, ownPort: ownPort))
    }

    /// The IPv6 device's interface index and underlay (dual stack).
    public func setIPv6(deviceIndex: Int32?, underlay: (index: Int32, name: String)?) {
        parser6.withLock {
            $0?.deviceIndex = deviceIndex
            $0?.underlay = underlay
        }
    }

    /// The device's current interface index (it changes when the device is recreated).
    public func setDeviceIndex(_ index: Int32?) { parser.withLock { $0.deviceIndex = index } }

    /// The underlay (its address and state changes send the daemon to a full pass).
    public func setUnderlay(index: Int32, name: String) { parser.withLock { $0.underlay = (index, name) } }

    /// Subscribes, then starts the thread. Subscribing before the caller's
    /// first dump means no change falls between the dump and the listening.
    /// `events` gets each batch: the IPv4 device's events and the IPv6 device's.
    public func start(events: @escaping @Sendable ([KernelEvent], [KernelEvent6]) -> Void,
                      lost: @escaping @Sendable (String) -> Void) throws {
        let socket = try NetlinkSocket()
        let dual = parser6.withLock { $0 != nil }
        for group in Set(kernelEventGroups + (dual ? kernelEventGroups6 : [])).sorted() { try socket.subscribe(group: group) }
        let box = SocketBox(socket)
        let thread = Thread { [self] in
            self.loop(box.socket, events: events, lost: lost)
        }
        thread.name = "kernel-monitor"
        thread.start()
    }

    public func stop() { stopped.store(true, ordering: .releasing) }

    func loop(_ socket: NetlinkSocket, events: @Sendable ([KernelEvent], [KernelEvent6]) -> Void,
              lost: @Sendable (String) -> Void) {
        var batch: [KernelEvent] = []
        var batch6: [KernelEvent6] = []
        while !stopped.load(ordering: .acquiring) {
            do {
                // One receive reads what one datagram holds; take every datagram
                // already queued before handing the batch over.
                var timeout: Int32 = 250
                while try socket.receiveEvents(timeoutMilliseconds: timeout, { message in
                    // The parser is read for each message: the device index it filters
                    // by changes when the reconciler creates the device, maybe while
                    // this thread waits for the next event.
                    if let event = self.parser.withLock({ $0.parse(message) }) {
                        batch.append(event)
                    } else if let event = self.parser6.withLock({ $0?.parse6(message) }) {
                        batch6.append(event)
                    }
                }) {
                    timeout = 0
                    if batch.count + batch6.count >= 4_096 { break }
                }
            } catch where error.code == ENOBUFS {
                batch = []
                batch6 = []
                lost("kernel events lost (ENOBUFS)")
                continue
            } catch {
                batch = []
                batch6 = []
                lost("kernel monitor: \(error)")
                Thread.sleep(forTimeInterval: 0.5)
                continue
            }
            if !batch.isEmpty || !batch6.isEmpty {
                events(batch, batch6)
                batch = []
                batch6 = []
            }
        }
    }
}

/// Hands the socket to the monitor thread (it is used there only).
final class SocketBox: @unchecked Sendable {
    let socket: NetlinkSocket
    init(_ socket: NetlinkSocket) { self.socket = socket }
}
