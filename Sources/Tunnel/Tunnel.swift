import CTunnelShim
import Model
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The Tunnel module's error: a system call that failed while the tunnel was set up.
public struct TunnelError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var code: Int32

    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// Which peer holds each subnet of the network: what the data path routes by
/// and what it accepts from. Immutable; the control plane swaps in a new one.
public final class TunnelTable: Sendable {
    let network: UInt32
    let networkMask: UInt32
    let shift: UInt32
    /// Per subnet index: the public IP (host order) of the peer that holds it; 0: none.
    let slots: [UInt32]
    let peerIPs: Set<UInt32>
    let localNetwork: UInt32
    let localMask: UInt32
    public var peerCount: Int { peerIPs.count }

    /// `local`: this node's subnet (the only destination the tunnel delivers to).
    public init(network: IPv4Prefix, subnetLen: UInt8, local: IPv4Prefix, peers: [(subnet: IPv4Prefix, publicIP: IPv4Address)]) {
        self.network = network.network.value
        networkMask = network.length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(network.length))
        shift = 32 - UInt32(subnetLen)
        let bits = Int(subnetLen) - Int(network.length)
        var slots = [UInt32](repeating: 0, count: 1 << max(0, min(bits, 22)))
        var ips = Set<UInt32>()
        for (subnet, ip) in peers where network.contains(subnet.network) && subnet.length == subnetLen {
            let index = Int((subnet.network.value &- network.network.value) >> shift)
            guard index < slots.count else { continue }
            slots[index] = ip.value
            ips.insert(ip.value)
        }
        self.slots = slots
        peerIPs = ips
        localNetwork = local.network.value
        localMask = local.length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(local.length))
    }

    /// The public IP (host order) of the peer whose subnet holds `address`; 0: none.
    @inline(__always)
    public func peer(for address: UInt32) -> UInt32 {
        guard address & networkMask == network else { return 0 }
        let index = Int((address &- network) >> shift)
        return index < slots.count ? slots[index] : 0
    }

    @inline(__always) func isPeer(_ ip: UInt32) -> Bool { peerIPs.contains(ip) }
    @inline(__always) func isLocal(_ address: UInt32) -> Bool { address & localMask == localNetwork }
}

/// What the tunnel counted since it started.
public struct TunnelStatistics: Sendable, Hashable {
    public var txPackets: UInt64 = 0, txBytes: UInt64 = 0, rxPackets: UInt64 = 0, rxBytes: UInt64 = 0
    /// Dropped packets by reason.
    public var drops: [Drop: UInt64] = [:]
    /// Writes to the TUN device that carried several packets merged into one.
    public var mergedWrites: UInt64 = 0

    public init(txPackets: UInt64 = 0, txBytes: UInt64 = 0, rxPackets: UInt64 = 0, rxBytes: UInt64 = 0) {
        self.txPackets = txPackets
        self.txBytes = txBytes
        self.rxPackets = rxPackets
        self.rxBytes = rxBytes
    }

    public enum Drop: String, Sendable, CaseIterable {
        /// tx: no lease holds the destination's subnet (answered with ICMP network unreachable).
        case noRoute = "no_route"
        /// the TTL ran out (flannel decrements it on each side).
        case ttl
        /// too short, not IPv4, a bad header length or checksum, a length that does not match the datagram.
        case malformed
        /// rx: a datagram from an address that holds no lease.
        case unknownSender = "unknown_sender"
        /// rx: from a peer, but the inner source is not in that peer's subnet.
        case spoofedSource = "spoofed_source"
        /// rx: the inner destination is not in this node's subnet.
        case wrongDestination = "wrong_destination"
        /// tx: a segmentation the tunnel does not do (only TCP over IPv4 is offloaded to it).
        case unsupportedOffload = "unsupported_offload"
        /// a send to the peer or a write to the TUN device failed.
        case sendFailed = "send_failed"
        case writeFailed = "write_failed"
    }
}

/// One queue's counters: written by its two threads, read by anyone.
final class QueueCounters: Sendable {
    let txPackets = Atomic<UInt64>(0), txBytes = Atomic<UInt64>(0), rxPackets = Atomic<UInt64>(0), rxBytes = Atomic<UInt64>(0)
    let merged = Atomic<UInt64>(0)
    let noRoute = Atomic<UInt64>(0), ttl = Atomic<UInt64>(0), malformed = Atomic<UInt64>(0), unknownSender = Atomic<UInt64>(0)
    let spoofedSource = Atomic<UInt64>(0), wrongDestination = Atomic<UInt64>(0), unsupportedOffload = Atomic<UInt64>(0)
    let sendFailed = Atomic<UInt64>(0), writeFailed = Atomic<UInt64>(0)

    @inline(__always) func drop(_ reason: TunnelStatistics.Drop, _ count: UInt64 = 1) {
        switch reason {
        case .noRoute: noRoute.wrappingAdd(count, ordering: .relaxed)
        case .ttl: ttl.wrappingAdd(count, ordering: .relaxed)
        case .malformed: malformed.wrappingAdd(count, ordering: .relaxed)
        case .unknownSender: unknownSender.wrappingAdd(count, ordering: .relaxed)
        case .spoofedSource: spoofedSource.wrappingAdd(count, ordering: .relaxed)
        case .wrongDestination: wrongDestination.wrappingAdd(count, ordering: .relaxed)
        case .unsupportedOffload: unsupportedOffload.wrappingAdd(count, ordering: .relaxed)
        case .sendFailed: sendFailed.wrappingAdd(count, ordering: .relaxed)
        case .writeFailed: writeFailed.wrappingAdd(count, ordering: .relaxed)
        }
    }

    func drops(_ reason: TunnelStatistics.Drop) -> UInt64 {
        switch reason {
        case .noRoute: noRoute.load(ordering: .relaxed)
        case .ttl: ttl.load(ordering: .relaxed)
        case .malformed: malformed.load(ordering: .relaxed)
        case .unknownSender: unknownSender.load(ordering: .relaxed)
        case .spoofedSource: spoofedSource.load(ordering: .relaxed)
        case .wrongDestination: wrongDestination.load(ordering: .relaxed)
        case .unsupportedOffload: unsupportedOffload.load(ordering: .relaxed)
        case .sendFailed: sendFailed.load(ordering: .relaxed)
        case .writeFailed: writeFailed.load(ordering: .relaxed)
        }
    }
}

/// The settings of a tunnel.
public struct TunnelSettings: Sendable {
    /// The TUN device (flannel0), made by the control plane with the flags the queues attach with.
    public var device: String
    /// The address and port the UDP sockets bind to, and peers are sent to (flannel: the port is the cluster's).
    public var localIP: IPv4Address
    public var port: UInt16
    /// The tunnel's own address (this node's subnet address): the source of its ICMP errors.
    public var tunnelAddress: IPv4Address
    /// Queues: a TUN queue, a UDP socket (SO_REUSEPORT), a sending and a receiving thread each.
    public var queues: Int
    public var socketBuffer: Int

    public init(device: String, localIP: IPv4Address, port: UInt16, tunnelAddress: IPv4Address, queues: Int = 1,
                socketBuffer: Int = 8 << 20) {
        self.device = device
        self.localIP = localIP
        self.port = port
        self.tunnelAddress = tunnelAddress
        self.queues = max(1, queues)
        self.socketBuffer = socketBuffer
    }
}

/// flannel's UDP backend's data path, done fast: packets the kernel routes into
/// the TUN device are sent to the peer that holds their destination's subnet,
/// one IP packet per UDP datagram (flanneld's wire format), and datagrams from
/// peers are written into the TUN device. The kernel hands over TSO packets of
/// up to 64 KiB (`IFF_VNET_HDR`, `TUN_F_TSO4`), which are split here and sent
/// with one `sendmsg` (`UDP_SEGMENT`); datagrams arrive coalesced (`UDP_GRO`)
/// and consecutive TCP segments are merged back into one write. Each queue has
/// a thread per direction, its own buffers (allocated once) and its own
/// counters; no allocation, lock or Swift concurrency per packet (the table is
/// read once per read).
public final class Tunnel: Sendable {
    public let settings: TunnelSettings
    let table: Mutex<TunnelTable>
    let stopping = Atomic<Bool>(false)
    let tunFDs: [Int32]
    let udpFDs: [Int32]
    let counters: [QueueCounters]
    let threads = Mutex<[pthread_t]>([])

    /// Attaches the queues to the TUN device and binds the sockets (nothing runs until `start`).
    public init(settings: TunnelSettings, table: TunnelTable) throws(TunnelError) {
        self.settings = settings
        self.table = Mutex(table)
        var tuns: [Int32] = [], udps: [Int32] = []
        func closeAll() { for fd in tuns + udps { close(fd) } }
        let offload = vxa_tun_f_csum() | vxa_tun_f_tso4() | vxa_tun_f_tso6() | vxa_tun_f_tso_ecn()
        for _ in 0..<settings.queues {
            let tun = vxa_tun_open(settings.device, offload)
            guard tun >= 0 else {
                closeAll()
                throw TunnelError(operation: "attach a queue to the TUN device \(settings.device)", code: -tun)
            }
            tuns.append(tun)
            let udp = vxa_udp_open(settings.localIP.value.bigEndian, settings.port.bigEndian, Int32(settings.socketBuffer), 1)
            guard udp >= 0 else {
                closeAll()
                throw TunnelError(operation: "bind UDP \(settings.localIP):\(settings.port)", code: -udp)
            }
            udps.append(udp)
        }
        tunFDs = tuns
        udpFDs = udps
        counters = tuns.map { _ in QueueCounters() }
    }

    /// The peers from now on: a peer that leaves stops receiving (and being accepted) with the next packet.
    public func update(_ table: TunnelTable) { self.table.withLock { $0 = table } }

    /// Starts a sending and a receiving thread per queue.
    public func start() {
        for queue in 0..<tunFDs.count {
            spawn { tunnel in tunnel.send(queue: queue) }
            spawn { tunnel in tunnel.receive(queue: queue) }
        }
    }

    private func spawn(_ body: @escaping @Sendable (Tunnel) -> Void) {
        final class Context: @unchecked Sendable {
            // @unchecked: handed to the new thread once, never shared.
            let tunnel: Tunnel
            let body: @Sendable (Tunnel) -> Void
            init(_ tunnel: Tunnel, _ body: @escaping @Sendable (Tunnel) -> Void) { self.tunnel = tunnel; self.body = body }
        }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(Context(self, body)).toOpaque()
        let status = pthread_create(&thread, nil, { raw in
            let context = Unmanaged<Context>.fromOpaque(raw!).takeRetainedValue()
            context.body(context.tunnel)
            return nil
        }, context)
        if status == 0 {
            threads.withLock { $0.append(thread) }
        } else {
            Unmanaged<Context>.fromOpaque(context).release()
        }
    }

    /// Stops the threads (each notices within a quarter second), waits for them, closes the queues and sockets.
    public func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for thread in threads.withLock({ $0 }) { pthread_join(thread, nil) }
        for fd in tunFDs + udpFDs { close(fd) }
    }

    public var statistics: TunnelStatistics {
        var s = TunnelStatistics()
        for c in counters {
            s.txPackets += c.txPackets.load(ordering: .relaxed)
            s.txBytes += c.txBytes.load(ordering: .relaxed)
            s.rxPackets += c.rxPackets.load(ordering: .relaxed)
            s.rxBytes += c.rxBytes.load(ordering: .relaxed)
            s.mergedWrites += c.merged.load(ordering: .relaxed)
            for reason in TunnelStatistics.Drop.allCases { s.drops[reason, default: 0] += c.drops(reason) }
        }
        return s
    }

    // MARK: TUN -> UDP

    func send(queue: Int) {
        let tun = tunFDs[queue], udp = udpFDs[queue], counters = counters[queue]
        let port = settings.port.bigEndian
        let source = settings.tunnelAddress.value
        let inCapacity = VirtioHeader.size + 65_536
        let outCapacity = 2 * 65_536
        let input = UnsafeMutableRawPointer.allocate(byteCount: inCapacity, alignment: 16)
        let output = UnsafeMutableRawPointer.allocate(byteCount: outCapacity, alignment: 16)
        defer {
            input.deallocate()
            output.deallocate()
        }
        while !stopping.load(ordering: .relaxed) {
            let n = vxa_tun_read(tun, input, inCapacity, 250)
            guard n > 0 else {
                // The device went (deleted under the queue: the control plane makes it again
                // and restarts the tunnel): wait, do not spin.
                if n < 0 && n != -Int(EAGAIN) { usleep(10_000) }
                continue
            }
            let packet = input + VirtioHeader.size
            let length = n - VirtioHeader.size
            guard length >= 20, IPv4Packet.version(packet) == 4, IPv4Packet.headerLength(packet) >= 20,
                  IPv4Packet.headerLength(packet) <= length else {
                counters.drop(.malformed)
                continue
            }
            let header = VirtioHeader(input)
            let table = self.table.withLock { $0 }
            let peer = table.peer(for: IPv4Packet.destination(packet))
            guard peer != 0 else {
                counters.drop(.noRoute)
                if let size = Unreachable.build(for: packet, length: length, from: source, into: output + VirtioHeader.size) {
                    VirtioHeader().write(to: output)
                    _ = vxa_tun_write(tun, output, VirtioHeader.size + size)
                }
                continue
            }
            guard IPv4Packet.decrementTTL(packet) else {
                counters.drop(.ttl)
                continue
            }
            let address = peer.bigEndian
            let gso = header.gsoType & ~VirtioHeader.gsoECN
            if gso == VirtioHeader.gsoTCPv4 && Int(header.gsoSize) > 0 {
                guard let (bytes, segment) = Segmenter.split(packet, length: length, mss: Int(header.gsoSize), into: output,
                                                            capacity: outCapacity) else {
                    counters.drop(.malformed)
                    continue
                }
                // As many whole segments per send as UDP_SEGMENT takes.
                let perSend = max(1, min(Segmenter.maxSegments, Segmenter.maxSendBytes / segment)) * segment
                var offset = 0
                var sent: UInt64 = 0
                while offset < bytes {
                    let chunk = min(perSend, bytes - offset)
                    let result = vxa_udp_send(udp, output + offset, chunk, address, port, UInt16(segment))
                    if result < 0 { counters.drop(.sendFailed, UInt64((chunk + segment - 1) / segment)) } else { sent += UInt64((chunk + segment - 1) / segment) }
                    offset += chunk
                }
                counters.txPackets.wrappingAdd(sent, ordering: .relaxed)
                counters.txBytes.wrappingAdd(UInt64(bytes), ordering: .relaxed)
            } else if gso == VirtioHeader.gsoNone {
                if header.flags & VirtioHeader.needsChecksum != 0,
                   !Segmenter.completeChecksum(packet, length: length, start: Int(header.checksumStart), offset: Int(header.checksumOffset)) {
                    counters.drop(.malformed)
                    continue
                }
                if vxa_udp_send(udp, packet, length, address, port, 0) < 0 {
                    counters.drop(.sendFailed)
                } else {
                    counters.txPackets.wrappingAdd(1, ordering: .relaxed)
                    counters.txBytes.wrappingAdd(UInt64(length), ordering: .relaxed)
                }
            } else {
                counters.drop(.unsupportedOffload)
            }
        }
    }

    // MARK: UDP -> TUN

    func receive(queue: Int) {
        let tun = tunFDs[queue], udp = udpFDs[queue], counters = counters[queue]
        let capacity = 65_536 + 64
        let input = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        let mergeCapacity = VirtioHeader.size + 65_536
        let merge = UnsafeMutableRawPointer.allocate(byteCount: mergeCapacity, alignment: 16)
        let plain = UnsafeMutableRawPointer.allocate(byteCount: VirtioHeader.size, alignment: 16)
        defer {
            input.deallocate()
            merge.deallocate()
            plain.deallocate()
        }
        VirtioHeader().write(to: plain)
        var coalescer = Coalescer(buffer: merge, capacity: mergeCapacity)
        var address: UInt32 = 0, port: UInt16 = 0, segment: UInt16 = 0
        func flush() {
            let segments = coalescer.segments
            let size = coalescer.flush()
            guard size > 0 else { return }
            if vxa_tun_write(tun, merge, size) < 0 {
                counters.drop(.writeFailed, UInt64(segments))
            } else if segments > 1 {
                counters.merged.wrappingAdd(1, ordering: .relaxed)
            }
        }
        while !stopping.load(ordering: .relaxed) {
            let n = vxa_udp_recv(udp, input, capacity, &address, &port, &segment, 250)
            guard n > 0 else {
                if n < 0 && n != -Int(EAGAIN) { usleep(10_000) }
                continue
            }
            let sender = UInt32(bigEndian: address)
            let table = self.table.withLock { $0 }
            let step = max(1, Int(segment))
            var offset = 0
            var packets: UInt64 = 0
            while offset < n {
                let packet = input + offset
                let length = min(step, n - offset)
                offset += length
                guard IPv4Packet.isValid(packet, length: length) else {
                    counters.drop(.malformed)
                    continue
                }
                guard table.peer(for: IPv4Packet.source(packet)) == sender else {
                    counters.drop(table.isPeer(sender) ? .spoofedSource : .unknownSender)
                    continue
                }
                guard table.isLocal(IPv4Packet.destination(packet)) else {
                    counters.drop(.wrongDestination)
                    continue
                }
                guard IPv4Packet.decrementTTL(packet) else {
                    counters.drop(.ttl)
                    continue
                }
                packets += 1
                counters.rxBytes.wrappingAdd(UInt64(length), ordering: .relaxed)
                if coalescer.offer(packet, length: length) { continue }
                flush()
                if coalescer.offer(packet, length: length) { continue }
                if vxa_tun_write2(tun, plain, VirtioHeader.size, packet, length) < 0 { counters.drop(.writeFailed) }
            }
            flush()
            counters.rxPackets.wrappingAdd(packets, ordering: .relaxed)
        }
    }
}
