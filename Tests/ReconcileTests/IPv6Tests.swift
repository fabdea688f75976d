import Foundation
import Model
import Testing

/// inet_pton(3)'s answer, as the reference.
private func pton(_ text: String) -> [UInt8]? {
    var storage = in6_addr()
    guard text.withCString({ inet_pton(AF_INET6, $0, &storage) }) == 1 else { return nil }
    return withUnsafeBytes(of: storage) { Array($0) }
}

/// inet_ntop(3)'s text for 16 bytes, except that glibc writes a deprecated
/// IPv4-compatible address (`::c612:1`) as `::198.18.0.1`, and flannel (Go's
/// net.IP.String) writes it in hex: the expectation is Go's there.
private func ntop(_ bytes: [UInt8]) -> String {
    if bytes[0..<12].allSatisfy({ $0 == 0 }) && (bytes[12] != 0 || bytes[13] != 0) {
        let g6 = UInt16(bytes[12]) << 8 | UInt16(bytes[13]), g7 = UInt16(bytes[14]) << 8 | UInt16(bytes[15])
        return "::" + String(g6, radix: 16) + ":" + String(g7, radix: 16)
    }
    return libcNtop(bytes)
}

private func libcNtop(_ bytes: [UInt8]) -> String {
    var storage = in6_addr()
    withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: bytes) }
    var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    _ = inet_ntop(AF_INET6, &storage, &buffer, socklen_t(buffer.count))
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

@Suite("IPv6 addresses and prefixes: read as inet_pton reads them, written as inet_ntop writes them")
struct IPv6Tests {
    @Test("edge cases agree with inet_pton, and the text is inet_ntop's", arguments: [
        "::", "::1", "1::", "fd00::3", "FD00:10:244:1::", "fe80::1:2", "2001:db8::1:0:0:1", "2001:db8:0:0:1:0:0:1",
        "0:0:0:0:0:0:0:0", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "::ffff:198.18.0.1", "::198.18.0.1",
        "64:ff9b::198.18.0.1", "1:2:3:4:5:6:1.2.3.4", "0001:0002::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        // refused by both
        "", ":", ":::", "1:::2", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", ":1::", "1::2:", "g::",
        "fd00::3%eth0", "[fd00::3]", "fd00::3/64", "1.2.3.4", "::1.2.3", "::1.2.3.4.5", "1:2:3:4:5:6:7:1.2.3.4", " ::1",
        "::01.2.3.4", "::256.0.0.0",
    ])
    func agreesWithInetPton(text: String) {
        let reference = pton(text)
        let parsed = IPv6Address(text)
        #expect(parsed?.bytes == reference, "\(text)")
        if let parsed, let reference {
            #expect(parsed.description == ntop(reference))
            #expect(IPv6Address(parsed.description) == parsed, "the text reads back")
        }
    }

    @Test("random addresses with zero runs: bytes and text agree with the C library")
    func randomAgree() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5_000 {
            let groups: [UInt16] = (0..<8).map { _ in
                Int.random(in: 0..<3, using: &generator) == 0 ? UInt16.random(in: 0...0xffff, using: &generator) : 0
            }
            let bytes = groups.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
            let address = IPv6Address(bytes: bytes)!
            #expect(address.description == ntop(bytes))
            #expect(IPv6Address(address.description)?.bytes == bytes)
            let full = groups.map { String($0, radix: 16) }.joined(separator: ":")
            #expect(IPv6Address(full) == address)
        }
    }

    @Test("prefixes: network, containment, the mask across the halves")
    func prefixes() throws {
        let p = try #require(IPv6Prefix("fd00:10:244::/56"))
        #expect(p.isCanonical && p.length == 56)
        #expect(p.contains(IPv6Address("fd00:10:244:d::1")!))
        #expect(!p.contains(IPv6Address("fd00:10:245::1")!))
        #expect(p.contains(IPv6Prefix("fd00:10:244:d::/64")!))
        #expect(!IPv6Prefix("fd00:10:244:d::1/64")!.isCanonical)
        #expect(IPv6Prefix("fd00:10:244:d::1/64")!.network == IPv6Address("fd00:10:244:d::"))
        #expect(IPv6Prefix("fd00::1/127")!.last == IPv6Address("fd00::1"))
        #expect(IPv6Prefix("fd00::/0")!.contains(IPv6Address("2001:db8::1")!))
        #expect(IPv6Prefix("fd00::1/128")!.contains(IPv6Address("fd00::1")!))
        #expect(!IPv6Prefix("fd00::1/128")!.contains(IPv6Address("fd00::2")!))
        #expect(IPv6Prefix("fd00::/64")!.description == "fd00::/64")
        for bad in ["fd00::/129", "fd00::/", "fd00::", "fd00::/064", "fd00::/6a", "x/64"] {
            #expect(IPv6Prefix(bad) == nil, "\(bad)")
        }
    }
}
