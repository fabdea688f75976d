import Foundation
import Model
@testable import Reconcile
import Testing

/// A dual-stack cluster: IPv4 as `Fixture`'s, IPv6 pod network fd00:10:244::/56
/// with /64 subnets (`fd00:10:244:N::/64`), IPv6 underlay 2001:2::N.
enum Fixture6 {
    static let network = IPv6Prefix("fd00:10:244::/56")!
    static let index: Int32 = 8
    static let renderer = Renderer(deviceName: "flannel-v6.1", proto: AgentSettings.defaultProtocol, deviceIndex: index)

    static func half(_ n: UInt8, ip: String? = nil, subnet: String? = nil, mac: String? = nil) -> NodeRecord.IPv6Half {
        NodeRecord.IPv6Half(subnet: IPv6Prefix(subnet ?? "fd00:10:244:\(String(n, radix: 16))::/64")!,
                            publicIP: IPv6Address(ip ?? "2001:2::\(String(n, radix: 16))")!, vtepMAC: mac.flatMap { MACAddress($0) })
    }

    static func node(_ n: UInt8, ipv6: NodeRecord.IPv6Half? = nil) -> NodeRecord {
        var node = Fixture.node(n)
        node.ipv6 = ipv6 ?? half(n)
        return node
    }

    static func view(peers: [NodeRecord], local: NodeRecord = node(1)) -> ClusterView {
        ClusterView(network: Fixture.network, local: local, peers: peers)
    }

    static func desired(_ peers: [NodeRecord], layout: RouteLayout = .nexthop,
                        host: HostFacts = HostFacts(underlay: Fixture.underlay)) throws -> DesiredState6 {
        try DesiredState6(view: view(peers: peers), network: network, host: host, settings: AgentSettings(layout: layout))
    }

    /// The snapshot of a kernel that holds exactly `desired`, plus what the
    /// kernel adds to every IPv6 device by itself (link-local address and route).
    static func kernel(holding desired: DesiredState6) -> KernelSnapshot6 {
        let link = desired.device.map { d in LinkState(index: index, name: d.name, kind: "vxlan", mtu: d.mtu, mac: d.mac, isUp: true, vxlan: d) }
        var snapshot = KernelSnapshot6(
            device: link, addresses: (desired.address.map { [$0] } ?? []) + [IPv6Prefix("fe80::801:ff:fe00:1/64")!],
            fdb: desired.fdb, neighbors: desired.neighbors,
            nexthops: desired.nexthops.map { var n = $0; n.deviceIndex = n.deviceIndex ?? index; return n },
            routes: desired.routes.map { var r = $0; if r.nexthopID == nil { r.deviceIndex = r.deviceIndex ?? index }; return r })
        snapshot.routes.append(Route6(dst: IPv6Prefix("fe80::/64")!, gateway: nil, onlink: false, proto: 2, priority: 256,
                                      deviceIndex: index))
        if let address = desired.address {
            snapshot.routes.append(Route6(dst: address, gateway: nil, onlink: false, proto: 2, priority: 256, deviceIndex: index))
        }
        return snapshot
    }

    static func lines(_ plan: Plan6) -> [String] { plan.changes.map(renderer.describe) }
}

@Suite("Dual stack: the IPv6 plane's desired state")
struct DesiredState6Tests {
    @Test("flannel-v6.<VNI> on the underlay, MTU - 70, VTEP /128, and per peer neighbor, fdb, nexthop and a metric 1024 route")
    func plane() throws {
        let desired = try Fixture6.desired([Fixture6.node(2), Fixture6.node(3)])
        let device = try #require(desired.device)
        #expect(device.name == "flannel-v6.1")
        #expect(device.localIPv6 == IPv6Address("2001:2::1"))
        #expect(device.localIP == .zero)
        #expect(device.underlayIndex == Fixture.underlay.index)
        #expect(device.mtu == 1430)
        #expect(device.mac == MACAddress("0a:01:00:00:00:01"))
        #expect(device.port == 8472 && !device.learning)
        #expect(desired.mtu == 1430)
        #expect(desired.address == IPv6Prefix("fd00:10:244:1::/128"))
        #expect(desired.peers.map(\.name) == ["node-2", "node-3"])
        #expect(desired.skipped.isEmpty)
        #expect(desired.fdb == [FDBEntry6(mac: MACAddress("0a:01:00:00:00:02")!, dst: IPv6Address("2001:2::2")!),
                                FDBEntry6(mac: MACAddress("0a:01:00:00:00:03")!, dst: IPv6Address("2001:2::3")!)])
        #expect(desired.neighbors.first == Neighbor6(ip: IPv6Address("fd00:10:244:2::")!, mac: MACAddress("0a:01:00:00:00:02")!))
        #expect(desired.nexthops.map(\.id) == [AgentSettings.nexthopIDBase6 + 2, AgentSettings.nexthopIDBase6 + 3])
        #expect(desired.nexthops.allSatisfy { $0.onlink && $0.proto == 152 && $0.deviceIndex == nil })
        let route = try #require(desired.routes.first)
        #expect(route == Route6(dst: IPv6Prefix("fd00:10:244:2::/64")!, gateway: IPv6Address("fd00:10:244:2::")!,
                                nexthopID: AgentSettings.nexthopIDBase6 + 2, onlink: true, proto: 152, priority: 1024))
    }

    @Test("the IPv4 plane of a dual-stack view is the IPv4-only view's")
    func ipv4Untouched() throws {
        let peers = [Fixture6.node(2), Fixture6.node(3)]
        let dual = DesiredState(view: Fixture6.view(peers: peers), host: HostFacts(underlay: Fixture.underlay), settings: AgentSettings())
        let plain = Fixture.desired([Fixture.node(2), Fixture.node(3)])
        #expect(dual.device == plain.device)
        #expect(dual.fdb == plain.fdb && dual.neighbors == plain.neighbors && dual.nexthops == plain.nexthops && dual.routes == plain.routes)
    }

    @Test("an explicit device name, an explicit MTU, the IPv6 underlay when it is another interface")
    func overrides() throws {
        let v6Underlay = LinkState(index: 5, name: "eth1", kind: "veth", mtu: 9000, mac: nil, isUp: true, vxlan: nil)
        var view = Fixture6.view(peers: [])
        let host = HostFacts(underlay: Fixture.underlay, ipv6Underlay: v6Underlay)
        let own = try DesiredState6(view: view, network: Fixture6.network, host: host, settings: AgentSettings(deviceName6: "vx6"))
        #expect(own.device?.name == "vx6" && own.deviceName == "vx6")
        #expect(own.device?.underlayIndex == 5 && own.device?.underlayName == "eth1" && own.device?.mtu == 8930)
        view.network.mtu = 1400
        #expect(try DesiredState6(view: view, network: Fixture6.network, host: host, settings: AgentSettings()).device?.mtu == 1400)
    }

    @Test("nexthop ids: the subnet's index above nexthopIDBase6, disjoint from the IPv4 plane's for up to 65,536 subnets each",
          arguments: [
              ("fd00:10:244::/56", UInt8(64), "fd00:10:244:ff::/64", UInt64(255)),
              ("fd00:10::/32", 64, "fd00:10:0:ffff::/64", UInt64(0xffff)),
              ("fd00:10:244::/56", 64, "fd00:10:244::/64", UInt64(0)),
              ("fd00::/64", 80, "fd00::ab:0:0:0/80", UInt64(0xab)),
              ("fd00::/96", UInt8(120), "fd00::1:200/120", UInt64(0x102)),
              ("::/0", 64, "ffff:ffff:ffff:ffff::/64", UInt64.max),
          ])
    func nexthopIDs(network: String, length: UInt8, subnet: String, index: UInt64) {
        #expect(IPv6Routes.index(IPv6Prefix(subnet)!, in: IPv6Prefix(network)!, subnetLen: length) == index)
        let v4Last = AgentSettings.nexthopIDBase + 0xffff
        let routes = IPv6Routes(network: IPv6Prefix(network)!, subnetLen: length, settings: AgentSettings())
        if let id = routes.nexthopID(IPv6Prefix(subnet)!) {
            #expect(id > v4Last)
            #expect(id == AgentSettings.nexthopIDBase6 + UInt32(index))
        } else {
            #expect(index > UInt64(UInt32.max - AgentSettings.nexthopIDBase6))
        }
    }

    @Test("a subnet beyond the id range is left out in the nexthop layout, routed classic in the classic layout")
    func farSubnet() throws {
        let far = Fixture6.node(9, ipv6: Fixture6.half(9, subnet: "fd00:ffff:ffff:ffff::/64"))
        var view = Fixture6.view(peers: [far])
        view.local.ipv6 = Fixture6.half(1, subnet: "fd00::/64")
        let wide = IPv6Prefix("fd00::/16")!
        let host = HostFacts(underlay: Fixture.underlay)
        let nexthop = try DesiredState6(view: view, network: wide, host: host, settings: AgentSettings(layout: .nexthop))
        #expect(nexthop.skipped.map(\.reason) == [
            "IPv6 subnet fd00:ffff:ffff:ffff::/64 is too far into the IPv6 network fd00::/16 for a nexthop id of the agent's range "
                + "(use the classic route layout, or a smaller IPv6Network)",
        ])
        let classic = try DesiredState6(view: view, network: wide, host: host, settings: AgentSettings(layout: .classic))
        #expect(classic.skipped.isEmpty && classic.routes.count == 1 && classic.nexthops.isEmpty)
    }

    @Test("this node without a usable IPv6 half: an error naming it, no plane", arguments: [
        (nil as NodeRecord.IPv6Half?, "this node (node-1): no IPv6 subnet and public IPv6 (set publicIPv6 and take an IPv6 lease); "
            + "the IPv6 plane cannot be programmed"),
        (Fixture6.half(1, ip: "fe80::1"), "this node (node-1): publicIPv6 fe80::1 is link-local: VXLAN over IPv6 needs a global address; "
            + "the IPv6 plane cannot be programmed"),
        (Fixture6.half(1, subnet: "fd00:10:245:1::/64"), "this node (node-1): IPv6 subnet fd00:10:245:1::/64 is not a /64 inside the "
            + "IPv6 network fd00:10:244::/56; the IPv6 plane cannot be programmed"),
    ])
    func localErrors(half: NodeRecord.IPv6Half?, message: String) {
        var local = Fixture.node(1)
        local.ipv6 = half
        let error = #expect(throws: ReconcileError.self) {
            try DesiredState6(view: Fixture6.view(peers: [Fixture6.node(2)], local: local), network: Fixture6.network,
                              host: HostFacts(underlay: Fixture.underlay), settings: AgentSettings())
        }
        #expect(error?.description == message)
    }
}

@Suite("Dual stack: a peer with a bad IPv6 half is left out of the IPv6 plane only")
struct BadIPv6HalfTests {
    struct Case: Sendable, CustomStringConvertible {
        var peer: NodeRecord
        var reason: String
        var description: String { reason }
    }

    static func peer(_ half: NodeRecord.IPv6Half?) -> NodeRecord {
        var node = Fixture.node(5)
        node.ipv6 = half
        node.origin = "/coreos.com/network/subnets/10.244.5.0-24&fd00:10:244:5::-64"
        return node
    }

    static let cases: [Case] = [
        Case(peer: peer(nil), reason: "no IPv6 subnet and public IPv6 (an IPv4-only lease)"),
        Case(peer: peer(Fixture6.half(5, ip: "fe80::5")), reason: "publicIPv6 fe80::5 is link-local: VXLAN over IPv6 needs a global address"),
        Case(peer: peer(Fixture6.half(5, ip: "::1")), reason: "publicIPv6 ::1 is loopback"),
        Case(peer: peer(Fixture6.half(5, ip: "ff02::5")), reason: "publicIPv6 ff02::5 is multicast"),
        Case(peer: peer(Fixture6.half(5, ip: "::")), reason: "publicIPv6 :: is not a unicast address"),
        Case(peer: peer(Fixture6.half(5, ip: "::ffff:198.18.0.5")),
             reason: "publicIPv6 ::ffff:198.18.0.5 is an IPv4-mapped address, not an IPv6 one"),
        Case(peer: peer(Fixture6.half(5, ip: "2001:2::77")), reason: "publicIPv6 2001:2::77 is an address of this host"),
        Case(peer: peer(Fixture6.half(5, ip: "fd00:10:244:9::1")),
             reason: "publicIPv6 fd00:10:244:9::1 is inside the IPv6 pod network fd00:10:244::/56: "
                + "its VXLAN packets would be routed back into the overlay"),
        Case(peer: peer(Fixture6.half(5, subnet: "fd00:10:245:5::/64")),
             reason: "IPv6 subnet fd00:10:245:5::/64 is not a /64 inside the IPv6 network fd00:10:244::/56"),
        Case(peer: peer(Fixture6.half(5, subnet: "fd00:10:244:5::1/64")),
             reason: "IPv6 subnet fd00:10:244:5::1/64 is not a /64 inside the IPv6 network fd00:10:244::/56"),
        Case(peer: peer(Fixture6.half(5, subnet: "fd00:10:244:5::/80")),
             reason: "IPv6 subnet fd00:10:244:5::/80 is not a /64 inside the IPv6 network fd00:10:244::/56"),
        Case(peer: peer(Fixture6.half(5, subnet: "fd00:10:244:1::/64")),
             reason: "IPv6 subnet fd00:10:244:1::/64 overlaps this host's IPv6 subnet fd00:10:244:1::/64"),
        Case(peer: peer(Fixture6.half(5, subnet: "fd00:10:244:2::/64")),
             reason: "IPv6 subnet fd00:10:244:2::/64 is also claimed by node-2"),
        Case(peer: peer(Fixture6.half(5, ip: "2001:2::2", mac: "0a:00:00:00:00:05")), reason: "publicIPv6 2001:2::2 is also used by node-2"),
        Case(peer: peer(Fixture6.half(5, ip: "2001:3::2")), reason: "IPv6 vtepMAC 0a:01:00:00:00:02 is also used by node-2"),
        Case(peer: peer(Fixture6.half(5, mac: "0a:01:00:00:00:01")), reason: "IPv6 vtepMAC 0a:01:00:00:00:01 is also used by node-1"),
        Case(peer: peer(Fixture6.half(5, mac: "01:00:5e:00:00:05")), reason: "IPv6 vtepMAC 01:00:5e:00:00:05 is not a unicast MAC"),
        Case(peer: peer(Fixture6.half(5, subnet: "fd00:10:244:50::/64")),
             reason: "IPv6 subnet fd00:10:244:50::/64 overlaps fd00:10:244:50::/63, a network this host is connected to"),
        Case(peer: peer(Fixture6.half(5, subnet: "fd00:10:244:60::/64")),
             reason: "route fd00:10:244:60::/64 already exists with protocol static; it is not the agent's to replace"),
    ]

    @Test("each is left out of the IPv6 plane with a reason that names it; its IPv4 entries stay", arguments: cases)
    func leftOut(_ c: Case) throws {
        let host = HostFacts(
            underlay: Fixture.underlay, ipv6Addresses: [IPv6Address("2001:2::77")!],
            ipv6ForeignRoutes: [
                Route6(dst: IPv6Prefix("fd00:10:244:50::/63")!, gateway: nil, onlink: false, proto: 2, priority: 256, deviceIndex: 3),
                Route6(dst: IPv6Prefix("fd00:10:244:60::/64")!, gateway: IPv6Address("2001:2::fe")!, onlink: false, proto: 4,
                       priority: 1024, deviceIndex: 2),
                Route6(dst: IPv6Prefix("fe80::/64")!, gateway: nil, onlink: false, proto: 2, priority: 256, deviceIndex: 2),
            ])
        let peers = [Fixture6.node(2), c.peer]
        let desired6 = try Fixture6.desired(peers, host: host)
        #expect(desired6.skipped.map(\.reason) == [c.reason])
        let skipped = try #require(desired6.skipped.first)
        #expect(skipped.name == "node-5" && skipped.ipv6)
        #expect(skipped.description == "peer node-5 (/coreos.com/network/subnets/10.244.5.0-24&fd00:10:244:5::-64): \(c.reason); "
                + "left out of the IPv6 plane")
        #expect(desired6.peers.map(\.name) == ["node-2"])
        #expect(desired6.neighbors.map(\.ip) == [IPv6Address("fd00:10:244:2::")!])

        let desired4 = DesiredState(view: Fixture6.view(peers: peers), host: host, settings: AgentSettings())
        #expect(desired4.skipped.isEmpty)
        #expect(desired4.peers.map(\.name) == ["node-2", "node-5"])
        #expect(desired4.routes.map(\.dst).contains(IPv4Prefix("10.244.5.0/24")!))
    }

    @Test("of two peers that claim one IPv6 subnet, the first in (IPv6 subnet, name) order is kept")
    func firstClaimWins() throws {
        let a = Fixture6.node(7, ipv6: Fixture6.half(7, subnet: "fd00:10:244:9::/64"))
        let b = Fixture6.node(8, ipv6: Fixture6.half(8, subnet: "fd00:10:244:9::/64"))
        let desired = try Fixture6.desired([b, a])
        #expect(desired.peers.map(\.name) == ["node-7"])
        #expect(desired.skipped.map(\.description) == ["peer node-8: IPv6 subnet fd00:10:244:9::/64 is also claimed by node-7; left out of the IPv6 plane"])
    }
}

@Suite("Dual stack: the IPv6 plane's diff")
struct Diff6Tests {
    let peers = [Fixture6.node(2), Fixture6.node(3)]

    @Test("an empty kernel: the device, its /128, then fdb, neigh, nexthop, metric 1024 route per peer")
    func fromEmpty() throws {
        let plan = try Differ.plan(desired: Fixture6.desired(peers), snapshot: .empty)
        #expect(Fixture6.lines(plan) == [
            "+ link flannel-v6.1 type vxlan id 1 local 2001:2::1 dev eth0 dstport 8472 nolearning mtu 1430 address 0a:01:00:00:00:01",
            "+ address fd00:10:244:1::/128 dev flannel-v6.1",
            "+ fdb 0a:01:00:00:00:02 dev flannel-v6.1 dst 2001:2::2",
            "+ fdb 0a:01:00:00:00:03 dev flannel-v6.1 dst 2001:2::3",
            "+ neigh fd00:10:244:2:: lladdr 0a:01:00:00:00:02 dev flannel-v6.1",
            "+ neigh fd00:10:244:3:: lladdr 0a:01:00:00:00:03 dev flannel-v6.1",
            "+ nexthop id 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink",
            "+ nexthop id 1985544195 via fd00:10:244:3:: dev flannel-v6.1 onlink",
            "+ route fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink metric 1024",
            "+ route fd00:10:244:3::/64 nhid 1985544195 via fd00:10:244:3:: dev flannel-v6.1 onlink metric 1024",
        ])
        #expect(plan.counts == PlanCounts(add: 10))
        #expect(plan.peerCount == 2)
    }

    @Test("the classic layout: a route via the VTEP address, onlink, metric 1024, and no nexthops")
    func classic() throws {
        let plan = try Differ.plan(desired: Fixture6.desired(peers, layout: .classic), snapshot: .empty)
        let lines = Fixture6.lines(plan)
        #expect(lines.contains("+ route fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink metric 1024"))
        #expect(!lines.contains { $0.contains("nexthop") })
        #expect(plan.changes.count == 2 + 3 * 2)
    }

    @Test("a kernel that holds the plane (and the device's link-local address, and the kernel's prefix routes) needs nothing",
          arguments: RouteLayout.allCases)
    func inSync(layout: RouteLayout) throws {
        let desired = try Fixture6.desired(peers, layout: layout)
        let plan = try Differ.plan(desired: desired, snapshot: Fixture6.kernel(holding: desired))
        #expect(plan.isEmpty)
    }

    @Test("tampered entries are repaired; strays on the device removed; the kernel's link-local address and prefix routes kept")
    func tampered() throws {
        let desired = try Fixture6.desired(peers)
        var kernel = Fixture6.kernel(holding: desired)
        kernel.device!.mtu = 1500
        kernel.neighbors[0].mac = MACAddress("0a:00:00:00:00:99")!
        kernel.fdb[1].dst = IPv6Address("2001:2::99")!
        kernel.nexthops[0].gateway = IPv6Address("fd00:10:244:99::")!
        kernel.routes.removeAll { $0.dst == IPv6Prefix("fd00:10:244:3::/64")! }
        kernel.routes.append(Route6(dst: IPv6Prefix("fd00:10:244:99::/64")!, gateway: nil, onlink: false, proto: 3, priority: 1024,
                                    deviceIndex: Fixture6.index))
        kernel.neighbors.append(Neighbor6(ip: IPv6Address("fd00:10:244:99::")!, mac: MACAddress("0a:00:00:00:00:99")!, permanent: false))
        kernel.fdb.append(FDBEntry6(mac: MACAddress("0a:00:00:00:00:99")!, dst: IPv6Address("2001:2::99")!))
        kernel.addresses.append(IPv6Prefix("fd00:10:244:1::5/64")!)
        kernel.routes.append(Route6(dst: IPv6Prefix("fd00:10:244:1::/64")!, gateway: nil, onlink: false, proto: 2, priority: 256,
                                    deviceIndex: Fixture6.index))
        // A route of the kernel's protocol that no address of the device explains is a stray like any other.
        kernel.routes.append(Route6(dst: IPv6Prefix("fd00:10:244:98::/64")!, gateway: nil, onlink: false, proto: 2, priority: 256,
                                    deviceIndex: Fixture6.index))
        kernel.foreignRoutes.append(Route6(dst: IPv6Prefix("2001:db8::/32")!, gateway: IPv6Address("2001:2::fe")!, onlink: false,
                                           proto: 4, priority: 1024, deviceIndex: 2))
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        #expect(Fixture6.lines(plan) == [
            "~ link flannel-v6.1 mtu 1500 -> 1430",
            "- address fd00:10:244:1::5/64 dev flannel-v6.1",
            "~ fdb 0a:01:00:00:00:03 dev flannel-v6.1 dst 2001:2::3 (was: dst 2001:2::99)",
            "- fdb 0a:00:00:00:00:99 dev flannel-v6.1 dst 2001:2::99",
            "~ neigh fd00:10:244:2:: lladdr 0a:01:00:00:00:02 dev flannel-v6.1 (was: lladdr 0a:00:00:00:00:99)",
            "- neigh fd00:10:244:99:: lladdr 0a:00:00:00:00:99 dev flannel-v6.1 (not permanent)",
            "~ nexthop id 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink (was: nexthop id 1985544194 via fd00:10:244:99:: dev flannel-v6.1 onlink)",
            "+ route fd00:10:244:3::/64 nhid 1985544195 via fd00:10:244:3:: dev flannel-v6.1 onlink metric 1024",
            "- route fd00:10:244:98::/64 dev flannel-v6.1 proto kernel metric 256",
            "- route fd00:10:244:99::/64 dev flannel-v6.1 proto boot metric 1024",
        ])
        // Applied, the kernel holds the plane again.
        #expect(try Differ.plan(desired: desired, snapshot: Fixture6.kernel(holding: desired)).isEmpty)
    }

    @Test("a route written with metric 0 reads back with metric 1024: no change; one of metric 0 would be a stray")
    func metric() throws {
        let desired = try Fixture6.desired([Fixture6.node(2)])
        var kernel = Fixture6.kernel(holding: desired)
        #expect(kernel.routes.contains { $0.priority == 1024 && $0.proto == 152 })
        #expect(try Differ.plan(desired: desired, snapshot: kernel).isEmpty)
        kernel.routes[0].priority = 0
        #expect(Fixture6.lines(try Differ.plan(desired: desired, snapshot: kernel)) == [
            "+ route fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink metric 1024",
            "- route fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink",
        ])
    }

    @Test("a new public IPv6 recreates the device; its routes and nexthops go first")
    func recreate() throws {
        let before = try Fixture6.desired(peers)
        var view = Fixture6.view(peers: peers)
        view.local.ipv6 = Fixture6.half(1, ip: "2001:2::101", mac: "0a:01:00:00:00:01")
        let after = try DesiredState6(view: view, network: Fixture6.network, host: HostFacts(underlay: Fixture.underlay),
                                      settings: AgentSettings())
        let plan = try Differ.plan(desired: after, snapshot: Fixture6.kernel(holding: before))
        let lines = Fixture6.lines(plan)
        let at = try #require(lines.firstIndex { $0.hasPrefix("~ link") })
        #expect(lines[at] == "~ link flannel-v6.1 type vxlan id 1 local 2001:2::101 dev eth0 dstport 8472 nolearning mtu 1430 "
                + "address 0a:01:00:00:00:01 (recreate: local 2001:2::1 -> 2001:2::101)")
        #expect(lines[..<at].allSatisfy { $0.hasPrefix("- route") || $0.hasPrefix("- nexthop") })
        #expect(lines[..<at].count == 4)
        #expect(plan.changes[(at + 1)...].allSatisfy { if case .add = $0 { true } else { false } })
    }

    @Test("udp has no IPv6 data path: flannel-v6.<VNI> left by vxlan goes, with our routes and nexthops")
    func udpRemovesLeftover() throws {
        var view = Fixture6.view(peers: peers)
        let before = try DesiredState6(view: view, network: Fixture6.network, host: HostFacts(underlay: Fixture.underlay),
                                       settings: AgentSettings())
        view.network.backendType = "udp"
        let udp = try DesiredState6(view: view, network: Fixture6.network, host: HostFacts(underlay: Fixture.underlay),
                                    settings: AgentSettings())
        #expect(udp.device == nil && udp.peers.isEmpty && udp.skipped.count == 2)
        let plan = try Differ.plan(desired: udp, snapshot: Fixture6.kernel(holding: before))
        #expect(Fixture6.lines(plan).last == "- link flannel-v6.1")
        #expect(plan.counts == PlanCounts(remove: 4 + 1))
    }

    @Test("a device of another kind with the IPv6 device's name is an error, never deleted")
    func foreignDevice() throws {
        var kernel = KernelSnapshot6()
        kernel.device = LinkState(index: 9, name: "flannel-v6.1", kind: "bridge", mtu: 1500, mac: nil, isUp: true, vxlan: nil)
        #expect(throws: ReconcileError.foreignDevice(name: "flannel-v6.1", kind: "bridge")) {
            try Differ.plan(desired: try Fixture6.desired(peers), snapshot: kernel)
        }
    }

    @Test("cleanup removes the IPv6 plane's routes, then nexthops, then the device")
    func cleanup() throws {
        let plan = Differ.cleanup(snapshot: Fixture6.kernel(holding: try Fixture6.desired(peers)))
        #expect(Fixture6.lines(plan).first == "- route fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink metric 1024")
        #expect(Fixture6.lines(plan).last == "- link flannel-v6.1")
        #expect(plan.changes.count == 2 + 2 + 1, "the kernel's own routes go with the device, unnamed")
    }
}

@Suite("Dual stack: plan output for both planes")
struct DualPlanOutputTests {
    static func plans() throws -> (PlanOutput, Plan, Plan6) {
        let peers = [Fixture6.node(2), Fixture6.node(3, ipv6: Fixture6.half(3, ip: "fe80::3"))]
        let desired = DesiredState(view: Fixture6.view(peers: peers), host: HostFacts(underlay: Fixture.underlay), settings: AgentSettings())
        let desired6 = try Fixture6.desired(peers)
        let out = PlanOutput(renderer: Renderer(deviceName: "flannel.1", proto: 152), desired: desired,
                             renderer6: Renderer(deviceName: "flannel-v6.1", proto: 152), desired6: desired6)
        return (out, try Differ.plan(desired: desired, snapshot: .empty), try Differ.plan(desired: desired6, snapshot: .empty))
    }

    @Test("lines: the IPv4 plane, the IPv6 plane, then the peers left out")
    func lines() throws {
        let (out, plan, plan6) = try Self.plans()
        let lines = out.lines(plan, plan6)
        #expect(lines.count == plan.changes.count + plan6.changes.count + 1)
        #expect(lines.first == "+ link flannel.1 type vxlan id 1 local 198.18.0.1 dev eth0 dstport 8472 nolearning mtu 1450 address 0e:01:c6:12:00:01")
        #expect(lines[plan.changes.count] == "+ link flannel-v6.1 type vxlan id 1 local 2001:2::1 dev eth0 dstport 8472 nolearning mtu 1430 address 0a:01:00:00:00:01")
        #expect(lines.last == "! peer node-3: publicIPv6 fe80::3 is link-local: VXLAN over IPv6 needs a global address; left out of the IPv6 plane")
        #expect(out.lines(plan, nil) == out.lines(plan))
    }

    @Test("the summary counts both planes")
    func summary() throws {
        let (out, plan, plan6) = try Self.plans()
        #expect(out.summary(plan, plan6) == "16 to add, 0 to change, 0 to remove (2 peers; IPv6: 1 peer, 1 left out)")
        #expect(out.summary(plan, plan6, applied: true, writes: 17)
                == "applied: 16 added, 0 changed, 0 removed (2 peers; IPv6: 1 peer, 1 left out; 17 kernel writes)")
        #expect(out.summary(Plan(peerCount: 2), Plan6(peerCount: 2)) == "in sync: nothing to do (2 peers; IPv6: 2 peers)")
        #expect(out.summary(Plan(peerCount: 2), plan6).hasPrefix("6 to add"))
        #expect(out.summary(plan) == "10 to add, 0 to change, 0 to remove (2 peers)")
    }

    @Test("JSON: each change with its family, the IPv6 device, and the IPv6 plane's own summary")
    func json() throws {
        let (out, plan, plan6) = try Self.plans()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out.json(plan, plan6).utf8)) as? [String: Any])
        #expect(object["device"] as? String == "flannel.1")
        #expect(object["device6"] as? String == "flannel-v6.1")
        #expect(object["inSync"] as? Bool == false)
        let changes = try #require(object["changes"] as? [[String: Any]])
        #expect(changes.count == 16)
        #expect(changes.filter { $0["family"] as? String == "ipv6" }.count == 6)
        let route6 = try #require(changes.first { $0["family"] as? String == "ipv6" && $0["kind"] as? String == "route" })
        #expect(route6["object"] as? String == "route fd00:10:244:2::/64 nhid 1985544194 via fd00:10:244:2:: dev flannel-v6.1 onlink metric 1024")
        #expect(route6["peer"] as? String == "node-2")
        let fdb6 = try #require(changes.first { $0["family"] as? String == "ipv6" && $0["kind"] as? String == "fdb" })
        #expect(fdb6["object"] as? String == "fdb 0a:01:00:00:00:02 dev flannel-v6.1 dst 2001:2::2")
        #expect(fdb6["peer"] as? String == "node-2")
        let route4 = try #require(changes.first { $0["kind"] as? String == "route" })
        #expect(route4["family"] as? String == "ipv4")
        let summary = try #require(object["summary"] as? [String: Any])
        #expect(summary["add"] as? Int == 16 && summary["peers"] as? Int == 2)
        let summary6 = try #require(summary["ipv6"] as? [String: Any])
        #expect(summary6["add"] as? Int == 6 && summary6["peers"] as? Int == 1 && summary6["skipped"] as? Int == 1)
        let skipped = try #require(object["skippedPeers"] as? [[String: Any]])
        #expect(skipped.count == 1 && skipped.first?["family"] as? String == "ipv6" && skipped.first?["name"] as? String == "node-3")

        // An IPv4-only plan has neither device6 nor summary.ipv6.
        let plain = try #require(try JSONSerialization.jsonObject(with: Data(out.json(plan).utf8)) as? [String: Any])
        #expect(plain["device6"] == nil && (plain["summary"] as? [String: Any])?["ipv6"] == nil)
    }
}

@Suite("Dual stack: host-gw and DirectRouting over IPv6")
struct HostGW6Tests {
    static let host = HostFacts(underlay: Fixture.underlay, ipv6ForeignRoutes: [
        Route6(dst: IPv6Prefix("2001:2::/64")!, gateway: nil, onlink: false, proto: 2, priority: 256, deviceIndex: 2),
        Route6(dst: IPv6Prefix("::/0")!, gateway: IPv6Address("fe80::1")!, onlink: false, proto: 9, priority: 1024, deviceIndex: 2),
        Route6(dst: IPv6Prefix("2001:5::/64")!, gateway: nil, onlink: false, proto: 2, priority: 256, deviceIndex: 4),
    ])
    static let renderer = Renderer(deviceName: "flannel-v6.1", proto: 152, otherDevices: [2: "eth0"])
    static let peers = [Fixture6.node(2), Fixture6.node(9, ipv6: Fixture6.half(9, ip: "2001:9::9")),
                        Fixture6.node(5, ipv6: Fixture6.half(5, ip: "2001:5::5"))]

    static func desired(_ type: String, directRouting: Bool = false) throws -> DesiredState6 {
        var view = Fixture6.view(peers: peers)
        view.network.backendType = type
        view.network.directRouting = directRouting
        return try DesiredState6(view: view, network: Fixture6.network, host: host, settings: AgentSettings())
    }

    @Test("host-gw: no device; a route via the peer's public IPv6 on the underlay; a peer behind a router left out, the router named")
    func hostGW() throws {
        let desired = try Self.desired("host-gw")
        #expect(desired.device == nil && desired.address == nil && desired.mtu == 1500)
        #expect(desired.skipped.map(\.reason) == [
            "publicIPv6 2001:5::5 is on a network of interface #4, not of the underlay eth0: host-gw routes to peers over the underlay only",
            "publicIPv6 2001:9::9 is not on this host's segment: it is reached via the gateway fe80::1 (route ::/0); "
                + "host-gw needs every node on one L2 segment (use vxlan, or vxlan with DirectRouting, across routers)",
        ])
        let plan = try Differ.plan(desired: desired, snapshot: .empty)
        #expect(plan.changes.map(Self.renderer.describe) == [
            "+ nexthop id 1985544194 via 2001:2::2 dev eth0",
            "+ route fd00:10:244:2::/64 nhid 1985544194 via 2001:2::2 dev eth0 metric 1024",
        ])
    }

    @Test("vxlan with DirectRouting: a peer on the segment gets a direct route, the others VXLAN")
    func directRouting() throws {
        let desired = try Self.desired("vxlan", directRouting: true)
        #expect(desired.device != nil && desired.skipped.isEmpty)
        let lines = try Differ.plan(desired: desired, snapshot: .empty).changes.map(Self.renderer.describe)
        #expect(lines.contains("+ route fd00:10:244:2::/64 nhid 1985544194 via 2001:2::2 dev eth0 metric 1024"))
        #expect(!lines.contains { $0.contains("2001:2::2") && $0.hasPrefix("+ fdb") })
        #expect(lines.contains("+ fdb 0a:01:00:00:00:09 dev flannel-v6.1 dst 2001:9::9"))
        #expect(lines.contains("+ route fd00:10:244:9::/64 nhid 1985544201 via fd00:10:244:9:: dev flannel-v6.1 onlink metric 1024"))
    }
}

@Suite("Dual stack: IPv6 keys hash cheaply, and apart")
struct IPv6HashTests {
    @Test("addresses crafted to agree when their halves are folded together still hash apart, whatever the seed")
    func craftedAddresses() {
        let k: UInt64 = 0x9e37_79b9_7f4a_7c15
        let target: UInt64 = 0x2001_0002_dead_beef
        // Each a distinct address with high &* k ^ low == target: one bucket for a fold-then-mix hash.
        let crafted = (1...64).map { i -> IPv6Address in
            let high = 0x2001_0002_0000_0000 | UInt64(i)
            return IPv6Address(high: high, low: target ^ (high &* k))
        }
        for seed in [0, 1, -7, 0x5eed] {
            let hashes = Set(crafted.map { $0._rawHashValue(seed: seed) })
            #expect(hashes.count == crafted.count, "seed \(seed)")
        }
        #expect(Set(crafted).count == 64)
        let prefixes = crafted.map { IPv6Prefix($0, 128) } + crafted.map { IPv6Prefix($0, 127) }
        #expect(Set(prefixes.map { $0._rawHashValue(seed: 3) }).count == prefixes.count)
    }
}
