import CLibMnl
import Dataplane
import Foundation
import Model
@testable import Netlink
import Testing

/// Golden bytes for the IPv6 plane (dual stack, `flannel-v6.1`): every request
/// compared with what iproute2 6.1 sends for the same object. Captured on Linux
/// 6.18 with `strace -e trace=sendmsg -e write=3 <command>` in a scratch
/// namespace where eth0 had ifindex 3 (2001:2::1/64) and flannel-v6.1 ifindex 4.
/// Normalised as `GoldenRequestTests` does (sequence, port id, NLM_F_ACK).
@Suite("Requests: IPv6 golden bytes from iproute2")
struct GoldenIPv6RequestTests {
    static let device: Int32 = 4
    static let eth0: Int32 = 3
    static let mac2 = MACAddress("0a:01:00:00:00:02")!
    static let gw2 = IPv6Address("fd00:10:244:2::")!
    static let gw3 = IPv6Address("fd00:10:244:3::")!
    static let id: UInt32 = 4_133_027_842

    static let cases: [GoldenRequestTests.Case] = [
        .init(description: "ip link add flannel-v6.1 mtu 1430 address 0a:01:00:00:00:01 type vxlan id 1 local 2001:2::1 dev eth0 dstport 8472 nolearning",
              golden: """
        90000000100005060a4f0d6b00000000000000000000000000000000000000000800040096050000
        0a0001000a0100000001000011000300666c616e6e656c2d76362e310000000048001200
        0900010076786c616e000000380002000800030003000000080001000100000014001100
        20010002000000000000000000000001050007000000000006000f0021180000
        """,
              adjust: { golden in
                  // libmnl marks nests with NLA_F_NESTED, iproute2 does not (see GoldenRequestTests).
                  golden.replacingOccurrences(of: "48001200", with: "48001280").replacingOccurrences(of: "38000200", with: "38000280")
              }) { batch in
            Requests.createVXLAN(VXLANDevice(name: "flannel-v6.1", vni: 1, localIP: .zero, underlayIndex: eth0, underlayName: "eth0",
                                             port: 8472, learning: false, mtu: 1430, mac: MACAddress("0a:01:00:00:00:01")!,
                                             localIPv6: IPv6Address("2001:2::1")!), into: batch)
        },
        .init(description: "ip -6 addr replace fd00:10:244:1::/128 dev flannel-v6.1", golden: """
        4000000014000505144f0d6b000000000a8000000400000014000200fd00001002440001000000000000000014000100
        fd000010024400010000000000000000
        """) { batch in
            Requests.address(IPv6Prefix("fd00:10:244:1::/128")!, device: device, .replace, into: batch)
        },
        .init(description: "ip -6 addr del fd00:10:244:1::/128 dev flannel-v6.1", golden: """
        4000000015000500144f0d6b000000000a8000000400000014000200fd00001002440001000000000000000014000100
        fd000010024400010000000000000000
        """) { batch in
            Requests.address(IPv6Prefix("fd00:10:244:1::/128")!, device: device, .delete, into: batch)
        },
        .init(description: "bridge fdb replace 0a:01:00:00:00:02 dev flannel-v6.1 dst 2001:2::2 self permanent", golden: """
        3c0000001c000505154f0d6b000000000700000004000000c00002000a0002000a010000000200001400010020010002
        000000000000000000000002
        """) { batch in
            Requests.fdb(FDBEntry6(mac: mac2, dst: IPv6Address("2001:2::2")!), device: device, .replace, into: batch)
        },
        .init(description: "bridge fdb del 0a:01:00:00:00:02 dev flannel-v6.1 dst 2001:2::2 self", golden: """
        3c0000001d000500154f0d6b000000000700000004000000c00002000a0002000a010000000200001400010020010002
        000000000000000000000002
        """) { batch in
            Requests.fdb(FDBEntry6(mac: mac2, dst: IPv6Address("2001:2::2")!), device: device, .delete, into: batch)
        },
        .init(description: "ip -6 neigh replace fd00:10:244:2:: lladdr 0a:01:00:00:00:02 dev flannel-v6.1 nud permanent", golden: """
        3c0000001c000505154f0d6b000000000a000000040000008000000014000100fd000010024400020000000000000000
        0a0002000a01000000020000
        """) { batch in
            Requests.neighbor(Neighbor6(ip: gw2, mac: mac2), device: device, .replace, into: batch)
        },
        .init(description: "ip -6 neigh del fd00:10:244:2:: dev flannel-v6.1", golden: """
        300000001d000500154f0d6b000000000a000000040000008000000014000100fd000010024400020000000000000000
        """) { batch in
            Requests.neighbor(Neighbor6(ip: gw2, mac: mac2), device: device, .delete, into: batch)
        },
        .init(description: "ip -6 nexthop replace id 4133027842 via fd00:10:244:2:: dev flannel-v6.1 onlink proto 152", golden: """
        3c00000068000505294f0d6b000000000a0098000400000008000100020059f614000600fd0000100244000200000000
        000000000800050004000000
        """) { batch in
            Requests.nexthop(Nexthop6(id: id, gateway: gw2, onlink: true, proto: 152), device: device, .replace, into: batch)
        },
        // A nexthop is deleted by its id alone, whatever its family: the request is the IPv4 one.
        .init(description: "ip nexthop del id 4133027842", golden: """
        2000000069000500294f0d6b00000000000000000000000008000100020059f6
        """) { batch in
            Requests.nexthop(Nexthop6(id: id, gateway: gw2, onlink: true, proto: 152), device: device, .delete, into: batch)
        },
        // The agent's IPv6 routes carry metric 1024: what the kernel stores for metric 0.
        .init(description: "ip -6 route replace fd00:10:244:2::/64 metric 1024 nhid 4133027842 proto 152", golden: """
        4000000018000505294f0d6b000000000a400000fe9800010000000014000100fd000010024400020000000000000000
        080006000004000008001e00020059f6
        """) { batch in
            Requests.route(Route6(dst: IPv6Prefix("fd00:10:244:2::/64")!, gateway: gw2, nexthopID: id, proto: 152, priority: 1024),
                           device: device, .replace, into: batch)
        },
        .init(description: "ip -6 route replace fd00:10:244:3::/64 metric 1024 via fd00:10:244:3:: dev flannel-v6.1 onlink proto 152",
              golden: """
        5400000018000505294f0d6b000000000a400000fe9800010400000014000100fd000010024400030000000000000000
        080006000004000014000500fd0000100244000300000000000000000800040004000000
        """) { batch in
            Requests.route(Route6(dst: IPv6Prefix("fd00:10:244:3::/64")!, gateway: gw3, proto: 152, priority: 1024),
                           device: device, .replace, into: batch)
        },
        // `ip -6 route del` says scope universe where `ip route del` says nowhere.
        .init(description: "ip -6 route del fd00:10:244:3::/64 metric 1024 proto 152", golden: """
        3800000019000500294f0d6b000000000a400000fe9800000000000014000100fd000010024400030000000000000000
        0800060000040000
        """) { batch in
            Requests.route(Route6(dst: IPv6Prefix("fd00:10:244:3::/64")!, gateway: gw3, proto: 152, priority: 1024),
                           device: device, .delete, into: batch)
        },
    ]

    @Test("our IPv6 request is byte for byte what iproute2 sends", arguments: cases)
    func golden(_ c: GoldenRequestTests.Case) {
        let batch = Batch()
        c.build(batch)
        #expect(batch.count == 1)
        let ours = normalised(batch.bytes(of: 0))
        let theirs = normalised(hexBytes(c.adjust(c.golden.filter { $0.isHexDigit })))
        #expect(hexString(ours) == hexString(theirs))
    }
}
