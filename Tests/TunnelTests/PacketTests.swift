import Model
import Testing
@testable import Tunnel

/// A TCP/IPv4 packet built by hand: `payload` bytes after a 20-byte IP header and
/// a TCP header with `options` bytes of options, every checksum right.
func tcpPacket(payload: [UInt8], seq: UInt32 = 1000, flags: UInt8 = 0x18, options: [UInt8] = [],
               source: UInt32 = 0x0af4_0102, destination: UInt32 = 0x0af4_0202, ttl: UInt8 = 64, id: UInt16 = 7) -> [UInt8] {
    let tcpLength = 20 + options.count
    var bytes = [UInt8](repeating: 0, count: 20 + tcpLength + payload.count)
    bytes.withUnsafeMutableBytes { raw in
        let p = raw.baseAddress!
        p.storeBytes(of: 0x45, as: UInt8.self)
        IPv4Packet.setTotalLength(p, raw.count)
        p.storeBytes(of: id.bigEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: UInt16(0x4000).bigEndian, toByteOffset: 6, as: UInt16.self)   // DF
        p.storeBytes(of: ttl, toByteOffset: 8, as: UInt8.self)
        p.storeBytes(of: IPv4Packet.tcp, toByteOffset: 9, as: UInt8.self)
        p.storeBytes(of: source.bigEndian, toByteOffset: 12, as: UInt32.self)
        p.storeBytes(of: destination.bigEndian, toByteOffset: 16, as: UInt32.self)
        Checksum.setIPv4(p)
        let tcp = p + 20
        tcp.storeBytes(of: UInt16(40000).bigEndian, as: UInt16.self)
        tcp.storeBytes(of: UInt16(5201).bigEndian, toByteOffset: 2, as: UInt16.self)
        tcp.storeBytes(of: seq.bigEndian, toByteOffset: 4, as: UInt32.self)
        tcp.storeBytes(of: UInt32(777).bigEndian, toByteOffset: 8, as: UInt32.self)
        tcp.storeBytes(of: UInt8(tcpLength / 4) << 4, toByteOffset: 12, as: UInt8.self)
        tcp.storeBytes(of: flags, toByteOffset: 13, as: UInt8.self)
        tcp.storeBytes(of: UInt16(501).bigEndian, toByteOffset: 14, as: UInt16.self)
        for (i, b) in options.enumerated() { tcp.storeBytes(of: b, toByteOffset: 20 + i, as: UInt8.self) }
        for (i, b) in payload.enumerated() { tcp.storeBytes(of: b, toByteOffset: tcpLength + i, as: UInt8.self) }
        let sum = Checksum.sum(tcp, tcpLength + payload.count, Checksum.pseudo(p, protocol: IPv4Packet.tcp, length: tcpLength + payload.count))
        tcp.storeBytes(of: ~Checksum.fold(sum), toByteOffset: 16, as: UInt16.self)
    }
    return bytes
}

/// Whether the TCP checksum of an IPv4/TCP packet is right (the sum with the pseudo header is all ones).
func tcpChecksumValid(_ packet: UnsafeRawPointer, length: Int) -> Bool {
    let ip = IPv4Packet.headerLength(packet)
    return Checksum.fold(Checksum.sum(packet + ip, length - ip, Checksum.pseudo(packet, protocol: IPv4Packet.tcp, length: length - ip))) == 0xffff
}

func be16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 { UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
func be32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 { UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }

@Suite("the udp backend's packet work: checksums, splitting TSO packets, merging segments")
struct PacketTests {
    @Test("the IPv4 header checksum of RFC 1071's classic example, and odd lengths summed as network order pads them")
    func checksums() {
        var header: [UInt8] = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
                               0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7]
        header.withUnsafeMutableBytes { Checksum.setIPv4($0.baseAddress!) }
        #expect(header[10] == 0xb8 && header[11] == 0x61)
        #expect(header.withUnsafeBytes { Checksum.validIPv4($0.baseAddress!) })
        // Three bytes 01 02 03 are the words 0102 and 0300.
        let odd: [UInt8] = [0x01, 0x02, 0x03]
        let folded = odd.withUnsafeBytes { Checksum.fold(Checksum.sum($0.baseAddress!, 3)) }
        #expect(UInt16(bigEndian: folded) == 0x0402)
    }

    @Test("TTL decrement keeps the header checksum right, and refuses to reach zero", arguments: [UInt8(255), 64, 2, 1])
    func ttl(start: UInt8) {
        var packet = tcpPacket(payload: [1, 2, 3], ttl: start)
        let decremented = packet.withUnsafeMutableBytes { IPv4Packet.decrementTTL($0.baseAddress!) }
        #expect(decremented == (start > 1))
        #expect(packet[8] == (start > 1 ? start - 1 : start))
        #expect(packet.withUnsafeBytes { Checksum.validIPv4($0.baseAddress!) })
    }

    @Test("a TSO packet splits into MSS segments with every checksum right; merged again, it is the same packet",
          arguments: [(10_000, 1448), (1448 * 45, 1448), (100, 1448), (1449, 1448)])
    func splitAndMerge(size: Int, mss: Int) throws {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let options: [UInt8] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]   // NOP NOP timestamps
        let original = tcpPacket(payload: payload, seq: 0xffff_fff0, flags: 0x18, options: options)
        let out = UnsafeMutableRawPointer.allocate(byteCount: 2 * 65_536, alignment: 16)
        defer { out.deallocate() }
        let (bytes, segment) = try #require(original.withUnsafeBytes {
            Segmenter.split($0.baseAddress!, length: $0.count, mss: mss, into: out, capacity: 2 * 65_536)
        })
        let count = (size + mss - 1) / mss
        #expect(segment == 52 + min(mss, size))
        #expect(bytes == count * 52 + size)
        var rebuilt: [UInt8] = []
        var offset = 0
        let merge = UnsafeMutableRawPointer.allocate(byteCount: VirtioHeader.size + 65_536, alignment: 16)
        defer { merge.deallocate() }
        var coalescer = Coalescer(buffer: merge, capacity: VirtioHeader.size + 65_536)
        for index in 0..<count {
            let p = out + offset
            let length = IPv4Packet.totalLength(p)
            #expect(length == (index < count - 1 ? segment : bytes - offset))
            #expect(Checksum.validIPv4(p))
            #expect(tcpChecksumValid(p, length: length), "segment \(index)")
            #expect(be32(p, 24) == 0xffff_fff0 &+ UInt32(index * mss), "sequence of segment \(index)")
            #expect(be16(p, 4) == 7 &+ UInt16(index), "IP id of segment \(index)")
            #expect(p.load(fromByteOffset: 33, as: UInt8.self) == (index == count - 1 ? 0x18 : 0x10), "flags of segment \(index)")
            rebuilt += Array(UnsafeRawBufferPointer(start: p + 52, count: length - 52))
            let taken = coalescer.offer(p, length: length)
            #expect(taken, "segment \(index) merged")
            offset += length
        }
        #expect(rebuilt == payload)
        let written = coalescer.flush()
        #expect(written == VirtioHeader.size + original.count)
        let header = VirtioHeader(merge)
        let merged = merge + VirtioHeader.size
        if count > 1 {
            #expect(header == VirtioHeader(flags: VirtioHeader.needsChecksum, gsoType: VirtioHeader.gsoTCPv4, headerLength: 52,
                                           gsoSize: UInt16(mss), checksumStart: 20, checksumOffset: 16))
            // CHECKSUM_PARTIAL: the field holds the pseudo header's sum; completing it gives the original's checksum.
            #expect(Segmenter.completeChecksum(merged, length: original.count, start: 20, offset: 16))
        } else {
            #expect(header == VirtioHeader())
        }
        #expect(Array(UnsafeRawBufferPointer(start: merged, count: original.count)) == original)
    }

    @Test("segments that do not follow each other, of another flow, or with SYN/FIN/RST are not merged")
    func refusals() {
        let merge = UnsafeMutableRawPointer.allocate(byteCount: VirtioHeader.size + 65_536, alignment: 16)
        defer { merge.deallocate() }
        var coalescer = Coalescer(buffer: merge, capacity: VirtioHeader.size + 65_536)
        let payload = [UInt8](repeating: 9, count: 100)
        func offer(_ packet: [UInt8]) -> Bool {
            packet.withUnsafeBytes { raw in coalescer.offer(raw.baseAddress!, length: raw.count) }
        }
        #expect(offer(tcpPacket(payload: payload, seq: 0, flags: 0x10)))
        #expect(!offer(tcpPacket(payload: payload, seq: 150, flags: 0x10)), "a gap")
        #expect(!offer(tcpPacket(payload: payload, seq: 100, flags: 0x10, source: 0x0af4_0103)), "another flow")
        #expect(!offer(tcpPacket(payload: payload, seq: 100, flags: 0x11)), "FIN")
        #expect(!offer(tcpPacket(payload: payload + payload, seq: 100, flags: 0x10)), "larger than the first")
        #expect(offer(tcpPacket(payload: payload, seq: 100, flags: 0x18)), "PSH ends the group")
        #expect(!offer(tcpPacket(payload: payload, seq: 200, flags: 0x10)), "after PSH")
        #expect(coalescer.flush() == VirtioHeader.size + 20 + 20 + 200)
        var empty = Coalescer(buffer: merge, capacity: VirtioHeader.size + 65_536)
        let syn = tcpPacket(payload: payload, seq: 0, flags: 0x02), ack = tcpPacket(payload: [], seq: 0, flags: 0x10)
        let tookSYN = syn.withUnsafeBytes { empty.offer($0.baseAddress!, length: $0.count) }
        let tookACK = ack.withUnsafeBytes { empty.offer($0.baseAddress!, length: $0.count) }
        #expect(!tookSYN, "SYN")
        #expect(!tookACK, "a bare ACK")
    }

    @Test("no route: ICMP network unreachable back to the sender, as flannel's proxy writes it; never about an ICMP error")
    func unreachable() throws {
        let offender = tcpPacket(payload: [UInt8](repeating: 1, count: 50))
        var out = [UInt8](repeating: 0, count: 128)
        let length = try #require(offender.withUnsafeBytes { o in
            out.withUnsafeMutableBytes { Unreachable.build(for: o.baseAddress!, length: o.count, from: 0x0af4_0100, into: $0.baseAddress!) }
        })
        #expect(length == 20 + 8 + 20 + 8)
        out.withUnsafeBytes { raw in
            let p = raw.baseAddress!
            #expect(Checksum.validIPv4(p))
            #expect(IPv4Packet.ttl(p) == 8 && IPv4Packet.proto(p) == IPv4Packet.icmp)
            #expect(IPv4Packet.source(p) == 0x0af4_0100 && IPv4Packet.destination(p) == 0x0af4_0102)
            #expect(p.load(fromByteOffset: 20, as: UInt8.self) == 3 && p.load(fromByteOffset: 21, as: UInt8.self) == 0)
            #expect(Checksum.fold(Checksum.sum(p + 20, length - 20)) == 0xffff)
            #expect(Array(raw[28..<56]) == Array(offender[0..<28]))
        }
        var icmp = offender
        icmp[9] = IPv4Packet.icmp
        for (type, answered) in [(UInt8(8), true), (0, true), (3, false), (11, false), (12, false), (4, false), (5, false)] {
            icmp[20] = type
            let built = icmp.withUnsafeBytes { o in out.withUnsafeMutableBytes { Unreachable.build(for: o.baseAddress!, length: o.count, from: 1, into: $0.baseAddress!) } }
            #expect((built != nil) == answered, "ICMP type \(type)")
        }
    }

    @Test("the peer table: a subnet's holder by any address in it; nothing outside the network or for a free subnet")
    func table() {
        let table = TunnelTable(network: IPv4Prefix("10.244.0.0/16")!, subnetLen: 24, local: IPv4Prefix("10.244.1.0/24")!,
                                peers: [(IPv4Prefix("10.244.2.0/24")!, IPv4Address("198.18.0.2")!),
                                        (IPv4Prefix("10.244.255.0/24")!, IPv4Address("198.18.0.9")!)])
        #expect(table.peer(for: IPv4Address("10.244.2.77")!.value) == IPv4Address("198.18.0.2")!.value)
        #expect(table.peer(for: IPv4Address("10.244.255.255")!.value) == IPv4Address("198.18.0.9")!.value)
        #expect(table.peer(for: IPv4Address("10.244.3.1")!.value) == 0)
        #expect(table.peer(for: IPv4Address("10.245.2.1")!.value) == 0)
        #expect(table.isPeer(IPv4Address("198.18.0.9")!.value) && !table.isPeer(IPv4Address("198.18.0.3")!.value))
        #expect(table.isLocal(IPv4Address("10.244.1.200")!.value) && !table.isLocal(IPv4Address("10.244.2.1")!.value))
    }
}
