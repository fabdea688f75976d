// libFuzzer target: the udp backend's packet work on bytes from the network and
// from the kernel. The input is `mss(2 bytes) data`: the data, cut where a
// peer's GRO batch would be cut (every `mss + 40` bytes), goes through the
// receive path's checks and the coalescer, as `Tunnel.receive` does; the whole
// data goes through the segmenter as a TSO packet with that MSS, and through the
// ICMP builder. Merged packets must carry exactly the payload bytes offered, and
// every segment of a split must have a right IP checksum.


@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 2 else { return 0 }
    let mss = Int(start.load(as: UInt8.self)) << 8 | Int(start.load(fromByteOffset: 1, as: UInt8.self))
    let data = UnsafeMutableRawPointer.allocate(byteCount: max(count - 2, 1), alignment: 16)
    defer { data.deallocate() }
    data.copyMemory(from: start + 2, byteCount: count - 2)
    let length = count - 2

    // Receive: datagrams of mss + 40 bytes each (a GRO batch), checked, then merged.
    let capacity = VirtioHeader.size + 65_536
    let merge = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    defer { merge.deallocate() }
    var coalescer = Coalescer(buffer: merge, capacity: capacity)
    var offered = 0, written = 0
    func flush() {
        let size = coalescer.flush()
        if size > 0 { written += size - VirtioHeader.size }
    }
    let step = max(20, mss + 40)
    var offset = 0
    while offset < length {
        let packet = data + offset
        let size = min(step, length - offset)
        offset += size
        guard IPv4Packet.isValid(packet, length: size), IPv4Packet.decrementTTL(packet) else { continue }
        precondition(Checksum.validIPv4(packet), "a TTL decrement broke the header checksum")
        if coalescer.offer(packet, length: size) { offered += size; continue }
        flush()
        if coalescer.offer(packet, length: size) { offered += size }
    }
    flush()
    // A merge keeps one set of headers for all its segments: never more bytes out than in.
    precondition(written <= offered, "merged \(offered) bytes into \(written)")

    // Send: the data as one TSO packet with this MSS.
    let outCapacity = 2 * 65_536
    let out = UnsafeMutableRawPointer.allocate(byteCount: outCapacity, alignment: 16)
    defer { out.deallocate() }
    data.copyMemory(from: start + 2, byteCount: length)
    if let (bytes, segment) = Segmenter.split(data, length: length, mss: mss, into: out, capacity: outCapacity) {
        precondition(segment > 0 && bytes >= segment && bytes <= outCapacity, "split: \(bytes) bytes of \(segment)")
        var at = 0
        while at < bytes {
            let size = min(segment, bytes - at)
            precondition(Checksum.validIPv4(out + at) && IPv4Packet.totalLength(out + at) == size, "a bad segment at \(at)")
            at += size
        }
    }
    _ = Unreachable.build(for: data, length: length, from: 0x0af4_0100, into: out)
    if length > 0 { _ = Segmenter.completeChecksum(data, length: length, start: Int(start.load(as: UInt8.self)) % max(length, 1),
                                                    offset: 16) }
    return 0
}
