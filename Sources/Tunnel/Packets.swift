// The UDP backend's packet work, on raw bytes: checksums, splitting a TSO
// packet from the TUN device into MSS-sized packets, and merging consecutive
// TCP segments from the wire back into one GSO packet for the TUN device. Pure
// (no system calls), so the tests run it on synthetic packets without root.
//
// Sums are taken over 16-bit words loaded in the machine's order; the one's
// complement sum does not care (RFC 1071, "byte order independence"), as long
// as every word of one sum is loaded the same way and the result is stored the
// same way.

/// The virtio header a TUN device with `IFF_VNET_HDR` puts before each packet.
public struct VirtioHeader: Sendable, Equatable {
    public static let size = 10
    public static let needsChecksum: UInt8 = 1
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Little-endian fields, as the kernel's virtio header is on x86 and ARM.
    public init(_ p: UnsafeRawPointer) {
        flags = p.load(as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    public func write(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }
}

public enum Checksum {
    /// The one's complement sum of `count` bytes, not folded (a 64-bit
    /// accumulator of 32-bit words cannot overflow below 2^32 words).
    @inline(__always)
    public static func sum(_ p: UnsafeRawPointer, _ count: Int, _ initial: UInt64 = 0) -> UInt64 {
        var sum = initial
        var i = 0
        while i + 16 <= count {
            sum &+= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            sum &+= UInt64(p.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
            sum &+= UInt64(p.loadUnaligned(fromByteOffset: i + 8, as: UInt32.self))
            sum &+= UInt64(p.loadUnaligned(fromByteOffset: i + 12, as: UInt32.self))
            i += 16
        }
        while i + 4 <= count {
            sum &+= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            i += 4
        }
        if i + 2 <= count {
            sum &+= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i += 2
        }
        if i < count {
            // The last odd byte is the first of a word padded with zero, in network order.
            sum &+= UInt64(UInt16(littleEndian: UInt16(p.load(fromByteOffset: i, as: UInt8.self))))
        }
        return sum
    }

    /// Folds a sum to 16 bits (not complemented).
    @inline(__always)
    public static func fold(_ sum: UInt64) -> UInt16 {
        var s = sum
        s = (s & 0xffff_ffff) &+ (s >> 32)
        s = (s & 0xffff_ffff) &+ (s >> 32)
        s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s)
    }

    /// The pseudo header of TCP or UDP over IPv4 (source and destination as the
    /// IP header holds them, the protocol, the transport length).
    @inline(__always)
    public static func pseudo(_ ip: UnsafeRawPointer, protocol proto: UInt8, length: Int) -> UInt64 {
        UInt64(ip.loadUnaligned(fromByteOffset: 12, as: UInt32.self)) &+ UInt64(ip.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
            &+ UInt64(UInt16(proto).bigEndian) &+ UInt64(UInt16(truncatingIfNeeded: length).bigEndian)
    }

    /// Writes the IPv4 header checksum of the header at `ip`.
    @inline(__always)
    public static func setIPv4(_ ip: UnsafeMutableRawPointer) {
        let length = Int(ip.load(as: UInt8.self) & 0x0f) * 4
        ip.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)
        ip.storeBytes(of: ~fold(sum(ip, length)), toByteOffset: 10, as: UInt16.self)
    }

    /// Whether the IPv4 header checksum of the header at `ip` is right.
    public static func validIPv4(_ ip: UnsafeRawPointer) -> Bool {
        fold(sum(ip, Int(ip.load(as: UInt8.self) & 0x0f) * 4)) == 0xffff
    }
}

/// Field offsets and accessors of IPv4 and TCP headers.
public enum IPv4Packet {
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let icmp: UInt8 = 1

    @inline(__always) public static func headerLength(_ p: UnsafeRawPointer) -> Int { Int(p.load(as: UInt8.self) & 0x0f) * 4 }
    @inline(__always) public static func version(_ p: UnsafeRawPointer) -> UInt8 { p.load(as: UInt8.self) >> 4 }
    @inline(__always) public static func totalLength(_ p: UnsafeRawPointer) -> Int {
        Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
    }
    @inline(__always) public static func setTotalLength(_ p: UnsafeMutableRawPointer, _ length: Int) {
        p.storeBytes(of: UInt16(truncatingIfNeeded: length).bigEndian, toByteOffset: 2, as: UInt16.self)
    }
    @inline(__always) public static func ttl(_ p: UnsafeRawPointer) -> UInt8 { p.load(fromByteOffset: 8, as: UInt8.self) }
    @inline(__always) public static func proto(_ p: UnsafeRawPointer) -> UInt8 { p.load(fromByteOffset: 9, as: UInt8.self) }
    /// Source and destination as host-order values (10.244.1.2 = 0x0af40102).
    @inline(__always) public static func source(_ p: UnsafeRawPointer) -> UInt32 {
        UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
    }
    @inline(__always) public static func destination(_ p: UnsafeRawPointer) -> UInt32 {
        UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
    }
    /// Whether this is the first fragment (or no fragment): offset 0.
    @inline(__always) public static func isFirstFragment(_ p: UnsafeRawPointer) -> Bool {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)) & 0x1fff == 0
    }

    /// Whether `length` bytes at `p` are one IPv4 packet a peer may send: version
    /// 4, a header of 20 to 60 bytes that fits, a total length equal to the
    /// datagram's, a right header checksum.
    @inline(__always)
    public static func isValid(_ p: UnsafeRawPointer, length: Int) -> Bool {
        guard length >= 20, version(p) == 4 else { return false }
        let header = headerLength(p)
        return header >= 20 && header <= length && totalLength(p) == length && Checksum.validIPv4(p)
    }

    /// Decrements the TTL with the header checksum updated (RFC 1624), as
    /// flannel's proxy does on each side; false (nothing changed) when the TTL
    /// would reach zero: the packet is dropped.
    @inline(__always)
    public static func decrementTTL(_ p: UnsafeMutableRawPointer) -> Bool {
        let ttl = p.load(fromByteOffset: 8, as: UInt8.self)
        guard ttl > 1 else { return false }
        p.storeBytes(of: ttl - 1, toByteOffset: 8, as: UInt8.self)
        // HC' = ~(~HC + ~m + m'), m the 16-bit word holding TTL (high byte) and protocol.
        let old = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
        var sum = UInt32(~old) &+ UInt32(~(UInt16(ttl) << 8) & 0xffff) &+ UInt32(UInt16(ttl - 1) << 8)
        sum = (sum & 0xffff) &+ (sum >> 16)
        sum = (sum & 0xffff) &+ (sum >> 16)
        p.storeBytes(of: (~UInt16(truncatingIfNeeded: sum)).bigEndian, toByteOffset: 10, as: UInt16.self)
        return true
    }
}

/// Splits TSO packets into the MSS-sized packets the wire carries.
public enum Segmenter {
    /// The most a send with UDP_SEGMENT may carry (an IPv4 datagram's limit
    /// minus its IP and UDP headers), and the most segments in one send.
    public static let maxSendBytes = 65_507
    public static let maxSegments = 64

    /// Completes a CHECKSUM_PARTIAL packet: the checksum field at
    /// `start + offset` holds the pseudo-header sum; the sum from `start` to the end is its checksum.
    @inline(__always)
    public static func completeChecksum(_ packet: UnsafeMutableRawPointer, length: Int, start: Int, offset: Int) -> Bool {
        guard start + offset + 2 <= length else { return false }
        let value = ~Checksum.fold(Checksum.sum(packet + start, length - start))
        packet.storeBytes(of: value, toByteOffset: start + offset, as: UInt16.self)
        return true
    }

    /// Splits the IPv4/TCP packet at `packet` (`length` bytes, TTL already
    /// handled) into segments of `mss` payload bytes each, laid out back to back
    /// at `out` (headers repeated, IP ids counted up, sequence numbers advanced,
    /// FIN and PSH on the last segment only, CWR on the first only, every
    /// checksum computed). Returns the bytes written and the size of a full
    /// segment (the last may be shorter), or nil if the packet is not TCP over
    /// IPv4 or does not fit `capacity`.
    public static func split(_ packet: UnsafeRawPointer, length: Int, mss: Int, into out: UnsafeMutableRawPointer,
                             capacity: Int) -> (bytes: Int, segment: Int)? {
        guard length >= 40, IPv4Packet.version(packet) == 4, IPv4Packet.proto(packet) == IPv4Packet.tcp, mss > 0 else { return nil }
        let ipLength = IPv4Packet.headerLength(packet)
        guard ipLength >= 20, ipLength + 20 <= length else { return nil }
        let tcpLength = Int(packet.load(fromByteOffset: ipLength + 12, as: UInt8.self) >> 4) * 4
        let headers = ipLength + tcpLength
        guard tcpLength >= 20, headers <= length else { return nil }
        let payload = length - headers
        let count = max(1, (payload + mss - 1) / mss)
        guard count * headers + payload <= capacity else { return nil }
        let id = UInt16(bigEndian: packet.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        let seq = UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: ipLength + 4, as: UInt32.self))
        let flags = packet.load(fromByteOffset: ipLength + 13, as: UInt8.self)
        var written = 0
        for index in 0..<count {
            let start = index * mss
            let size = min(mss, payload - start)
            let segment = out + written
            segment.copyMemory(from: packet, byteCount: headers)
            (segment + headers).copyMemory(from: packet + headers + start, byteCount: size)
            // IP: length, id, checksum.
            IPv4Packet.setTotalLength(segment, headers + size)
            segment.storeBytes(of: (id &+ UInt16(truncatingIfNeeded: index)).bigEndian, toByteOffset: 4, as: UInt16.self)
            Checksum.setIPv4(segment)
            // TCP: sequence, flags, checksum.
            let tcp = segment + ipLength
            tcp.storeBytes(of: (seq &+ UInt32(truncatingIfNeeded: start)).bigEndian, toByteOffset: 4, as: UInt32.self)
            var f = flags
            if index != count - 1 { f &= ~0x09 }   // FIN, PSH: the last segment's
            if index != 0 { f &= ~0x80 }           // CWR: the first's
            tcp.storeBytes(of: f, toByteOffset: 13, as: UInt8.self)
            tcp.storeBytes(of: 0, toByteOffset: 16, as: UInt16.self)
            let sum = Checksum.sum(tcp, tcpLength + size, Checksum.pseudo(segment, protocol: IPv4Packet.tcp, length: tcpLength + size))
            tcp.storeBytes(of: ~Checksum.fold(sum), toByteOffset: 16, as: UInt16.self)
            written += headers + size
        }
        return (written, headers + min(mss, payload))
    }
}

/// Merges consecutive TCP segments of one flow (as one UDP GRO read brings
/// them: a TSO packet the sender split) into one GSO packet for the TUN
/// device, so the kernel takes 64 KiB in one write instead of 45 packets.
/// Anything else passes through alone. Not thread-safe: one per receive thread.
public struct Coalescer {
    /// Where merged packets are built: a virtio header, then the packet.
    let buffer: UnsafeMutableRawPointer
    let capacity: Int
    /// The group being built: its bytes at `buffer + VirtioHeader.size`.
    var length = 0
    var segments = 0
    var mss = 0
    var ipLength = 0
    var tcpLength = 0
    var nextSeq: UInt32 = 0

    public init(buffer: UnsafeMutableRawPointer, capacity: Int) {
        self.buffer = buffer
        self.capacity = capacity
    }

    public var isEmpty: Bool { segments == 0 }

    /// Offers a packet (valid IPv4, TTL handled). true: taken into the group;
    /// false: the caller must `flush` the group first, then offer it again (a
    /// packet that is not mergeable at all is refused by an empty group too:
    /// the caller writes it alone).
    public mutating func offer(_ packet: UnsafeRawPointer, length packetLength: Int) -> Bool {
        guard IPv4Packet.proto(packet) == IPv4Packet.tcp, IPv4Packet.isFirstFragment(packet),
              packet.load(fromByteOffset: 6, as: UInt8.self) & 0x20 == 0 else { return false }   // no MF
        let ip = IPv4Packet.headerLength(packet)
        guard ip == 20, packetLength >= ip + 20 else { return false }
        let tcp = Int(packet.load(fromByteOffset: ip + 12, as: UInt8.self) >> 4) * 4
        guard tcp >= 20, ip + tcp <= packetLength else { return false }
        let payload = packetLength - ip - tcp
        let flags = packet.load(fromByteOffset: ip + 13, as: UInt8.self)
        // Only ACK and PSH: SYN, FIN, RST, URG, ECE, CWR end or start something the receiver must see alone.
        guard payload > 0, flags & ~0x18 == 0, flags & 0x10 != 0 else { return false }
        let seq = UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: ip + 4, as: UInt32.self))
        let group = buffer + VirtioHeader.size
        if segments == 0 {
            guard VirtioHeader.size + packetLength <= capacity else { return false }
            group.copyMemory(from: packet, byteCount: packetLength)
            length = packetLength
            segments = 1
            mss = payload
            ipLength = ip
            tcpLength = tcp
            nextSeq = seq &+ UInt32(payload)
            return true
        }
        // The same flow, right after the last segment, no larger than the first,
        // the group's last segment full, the same headers otherwise (addresses,
        // ports, ack, window, options, TOS, DF, TTL).
        let lastFull = (length - ipLength - tcpLength) == segments * mss
        guard tcp == tcpLength, seq == nextSeq, payload <= mss, lastFull,
              VirtioHeader.size + length + payload <= capacity, length + payload <= 65_535,
              group.load(fromByteOffset: ip + 13, as: UInt8.self) & 0x08 == 0,      // the group has no PSH yet
              memcmpEqual(group + 12, packet + 12, 8),                              // addresses
              memcmpEqual(group + 1, packet + 1, 1),                                // TOS
              memcmpEqual(group + 8, packet + 8, 1),                                // TTL
              group.load(fromByteOffset: 6, as: UInt8.self) & 0x40 == packet.load(fromByteOffset: 6, as: UInt8.self) & 0x40,
              memcmpEqual(group + ip, packet + ip, 4),                              // ports
              memcmpEqual(group + ip + 8, packet + ip + 8, 4),                      // ack
              memcmpEqual(group + ip + 14, packet + ip + 14, 2),                    // window
              memcmpEqual(group + ip + 20, packet + ip + 20, tcp - 20)              // options
        else { return false }
        (group + length).copyMemory(from: packet + ip + tcp, byteCount: payload)
        length += payload
        segments += 1
        nextSeq = seq &+ UInt32(payload)
        if flags & 0x08 != 0 { group.storeBytes(of: group.load(fromByteOffset: ip + 13, as: UInt8.self) | 0x08, toByteOffset: ip + 13, as: UInt8.self) }
        return true
    }

    /// Ends the group: the bytes to write to the TUN device (virtio header and
    /// packet) at `buffer`, and their length. One segment goes as it came.
    public mutating func flush() -> Int {
        guard segments > 0 else { return 0 }
        let group = buffer + VirtioHeader.size
        var header = VirtioHeader()
        if segments > 1 {
            IPv4Packet.setTotalLength(group, length)
            Checksum.setIPv4(group)
            // CHECKSUM_PARTIAL: the checksum field holds the pseudo header's sum; the kernel completes it.
            let transport = length - ipLength
            group.storeBytes(of: Checksum.fold(Checksum.pseudo(group, protocol: IPv4Packet.tcp, length: transport)),
                             toByteOffset: ipLength + 16, as: UInt16.self)
            header = VirtioHeader(flags: VirtioHeader.needsChecksum, gsoType: VirtioHeader.gsoTCPv4,
                                  headerLength: UInt16(ipLength + tcpLength), gsoSize: UInt16(mss),
                                  checksumStart: UInt16(ipLength), checksumOffset: 16)
        }
        header.write(to: buffer)
        let total = VirtioHeader.size + length
        segments = 0
        length = 0
        return total
    }
}

@inline(__always)
func memcmpEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int) -> Bool {
    var i = 0
    while i + 4 <= count {
        if a.loadUnaligned(fromByteOffset: i, as: UInt32.self) != b.loadUnaligned(fromByteOffset: i, as: UInt32.self) { return false }
        i += 4
    }
    while i < count {
        if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
        i += 1
    }
    return true
}

/// flannel's answer to a packet for a subnet no lease holds: ICMP "network
/// unreachable" back to its sender, from the tunnel's address, TTL 8; none for a
/// fragment after the first or an ICMP error (RFC 1122 3.2.2). flannel's proxy
/// sends none for any ICMP, so a ping to a subnet nobody holds just times out:
/// here it is told, as a router would tell it.
public enum Unreachable {
    /// Writes the ICMP packet for `offender` into `out` (room for 20 + 8 + 60 + 8
    /// bytes); returns its length, or nil when none is due.
    public static func build(for offender: UnsafeRawPointer, length: Int, from source: UInt32, into out: UnsafeMutableRawPointer) -> Int? {
        guard length >= 20 else { return nil }
        let offenderHeader = IPv4Packet.headerLength(offender)
        guard offenderHeader >= 20, offenderHeader <= 60, length >= offenderHeader, IPv4Packet.isFirstFragment(offender) else { return nil }
        if IPv4Packet.proto(offender) == IPv4Packet.icmp {
            // Errors: destination unreachable, source quench, redirect, time exceeded, parameter problem.
            guard length > offenderHeader else { return nil }
            let type = offender.load(fromByteOffset: offenderHeader, as: UInt8.self)
            if [3, 4, 5, 11, 12].contains(type) { return nil }
        }
        let quoted = min(length, offenderHeader + 8)
        let total = 20 + 8 + quoted
        out.initializeMemory(as: UInt8.self, repeating: 0, count: 28)
        out.storeBytes(of: 0x45, as: UInt8.self)
        IPv4Packet.setTotalLength(out, total)
        out.storeBytes(of: 8, toByteOffset: 8, as: UInt8.self)
        out.storeBytes(of: IPv4Packet.icmp, toByteOffset: 9, as: UInt8.self)
        out.storeBytes(of: source.bigEndian, toByteOffset: 12, as: UInt32.self)
        out.storeBytes(of: offender.loadUnaligned(fromByteOffset: 12, as: UInt32.self), toByteOffset: 16, as: UInt32.self)
        Checksum.setIPv4(out)
        out.storeBytes(of: 3, toByteOffset: 20, as: UInt8.self)   // destination unreachable
        out.storeBytes(of: 0, toByteOffset: 21, as: UInt8.self)   // network unreachable
        (out + 28).copyMemory(from: offender, byteCount: quoted)
        out.storeBytes(of: ~Checksum.fold(Checksum.sum(out + 20, 8 + quoted)), toByteOffset: 22, as: UInt16.self)
        return total
    }
}
