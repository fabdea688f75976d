import Model
@testable import Reconcile
import Testing

@Suite("Diff: desired state and snapshot to plan")
struct DiffTests {
    let peers = [Fixture.node(2), Fixture.node(3)]

    @Test("an empty kernel gets the device, its address, then fdb, neigh, nexthop, route per peer", arguments: RouteLayout.allCases)
    func fromEmpty(layout: RouteLayout) throws {
        let plan = try Differ.plan(desired: Fixture.desired(peers, layout: layout), snapshot: .empty)
        let lines = Fixture.lines(plan)
        #expect(lines.first == "+ link flannel.1 type vxlan id 1 local 198.18.0.1 dev eth0 dstport 8472 nolearning mtu 1450 address 0e:01:c6:12:00:01")
        #expect(lines.contains("+ address 10.244.1.0/32 dev flannel.1"))
        #expect(lines.contains("+ fdb 0e:01:c6:12:00:02 dev flannel.1 dst 198.18.0.2"))
        #expect(lines.contains("+ neigh 10.244.3.0 lladdr 0e:01:c6:12:00:03 dev flannel.1"))
        switch layout {
        case .nexthop:
            #expect(lines.contains("+ nexthop id 1985478658 via 10.244.2.0 dev flannel.1 onlink"))
            #expect(lines.contains("+ route 10.244.2.0/24 nhid 1985478658 via 10.244.2.0 dev flannel.1 onlink"))
            #expect(plan.changes.count == 2 + 4 * 2)
        case .classic:
            #expect(lines.contains("+ route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"))
            #expect(!lines.contains { $0.contains("nexthop") })
            #expect(plan.changes.count == 2 + 3 * 2)
        }
        #expect(plan.counts.add == plan.changes.count)
    }

    @Test("a kernel that holds the desired state needs nothing", arguments: RouteLayout.allCases)
    func inSync(layout: RouteLayout) throws {
        let desired = Fixture.desired(peers, layout: layout)
        let plan = try Differ.plan(desired: desired, snapshot: Fixture.kernel(holding: desired))
        #expect(plan.isEmpty)
        #expect(Fixture.lines(plan).isEmpty)
    }

    @Test("a peer added: only its four entries")
    func peerAdded() throws {
        let kernel = Fixture.kernel(holding: Fixture.desired(peers))
        let plan = try Differ.plan(desired: Fixture.desired(peers + [Fixture.node(4)]), snapshot: kernel)
        #expect(Fixture.lines(plan) == [
            "+ fdb 0e:01:c6:12:00:04 dev flannel.1 dst 198.18.0.4",
            "+ neigh 10.244.4.0 lladdr 0e:01:c6:12:00:04 dev flannel.1",
            "+ nexthop id 1985478660 via 10.244.4.0 dev flannel.1 onlink",
            "+ route 10.244.4.0/24 nhid 1985478660 via 10.244.4.0 dev flannel.1 onlink",
        ])
    }

    @Test("a peer removed: its route, nexthop, neighbor and fdb entry go")
    func peerRemoved() throws {
        let kernel = Fixture.kernel(holding: Fixture.desired(peers))
        let plan = try Differ.plan(desired: Fixture.desired([Fixture.node(2)]), snapshot: kernel)
        #expect(Set(Fixture.lines(plan)) == [
            "- fdb 0e:01:c6:12:00:03 dev flannel.1 dst 198.18.0.3",
            "- neigh 10.244.3.0 lladdr 0e:01:c6:12:00:03 dev flannel.1",
            "- nexthop id 1985478659 via 10.244.3.0 dev flannel.1 onlink",
            "- route 10.244.3.0/24 nhid 1985478659 via 10.244.3.0 dev flannel.1 onlink",
        ])
        #expect(plan.counts.remove == 4)
    }

    @Test("a MAC changed: new fdb entry, neighbor replaced in place, old fdb entry removed; routes untouched")
    func macChanged() throws {
        let kernel = Fixture.kernel(holding: Fixture.desired(peers))
        let plan = try Differ.plan(desired: Fixture.desired([Fixture.node(2, mac: "0e:00:00:00:00:22"), Fixture.node(3)]),
                                   snapshot: kernel)
        // Plan order groups by kind; Dataplane.apply runs adds before removes.
        #expect(Set(Fixture.lines(plan)) == [
            "+ fdb 0e:00:00:00:00:22 dev flannel.1 dst 198.18.0.2",
            "~ neigh 10.244.2.0 lladdr 0e:00:00:00:00:22 dev flannel.1 (was: lladdr 0e:01:c6:12:00:02)",
            "- fdb 0e:01:c6:12:00:02 dev flannel.1 dst 198.18.0.2",
        ])
    }

    @Test("a public IP changed (MAC given): the fdb entry's dst is replaced in place")
    func publicIPChanged() throws {
        let before = Fixture.desired([Fixture.node(2, mac: "0e:00:00:00:00:02"), Fixture.node(3)])
        let after = Fixture.desired([Fixture.node(2, mac: "0e:00:00:00:00:02", ip: "198.18.1.2"), Fixture.node(3)])
        let plan = try Differ.plan(desired: after, snapshot: Fixture.kernel(holding: before))
        #expect(Fixture.lines(plan) == ["~ fdb 0e:00:00:00:00:02 dev flannel.1 dst 198.18.1.2 (was: dst 198.18.0.2)"])
    }

    @Test("a subnet changed: entries for the new subnet are added, the old ones removed")
    func subnetChanged() throws {
        let before = Fixture.desired(peers)
        var moved = Fixture.node(3)
        moved.subnet = IPv4Prefix("10.244.9.0/24")!
        let plan = try Differ.plan(desired: Fixture.desired([Fixture.node(2), moved]), snapshot: Fixture.kernel(holding: before))
        let lines = Fixture.lines(plan)
        #expect(lines.contains("+ route 10.244.9.0/24 nhid 1985478665 via 10.244.9.0 dev flannel.1 onlink"))
        #expect(lines.contains("- route 10.244.3.0/24 nhid 1985478659 via 10.244.3.0 dev flannel.1 onlink"))
        #expect(lines.contains("+ neigh 10.244.9.0 lladdr 0e:01:c6:12:00:03 dev flannel.1"))
        #expect(lines.contains("- neigh 10.244.3.0 lladdr 0e:01:c6:12:00:03 dev flannel.1"))
        #expect(!lines.contains { $0.contains("fdb") })
    }

    @Test("stray entries on our device are removed; foreign routes elsewhere are not ours")
    func strays() throws {
        let desired = Fixture.desired(peers)
        var kernel = Fixture.kernel(holding: desired)
        kernel.fdb.append(FDBEntry(mac: MACAddress("0e:00:00:00:00:09")!, dst: IPv4Address("198.18.0.9")!))
        kernel.neighbors.append(Neighbor(ip: IPv4Address("10.244.9.0")!, mac: MACAddress("0e:00:00:00:00:09")!, permanent: false))
        kernel.routes.append(Route(dst: IPv4Prefix("10.244.9.0/24")!, gateway: nil, onlink: false, proto: 3, deviceIndex: 7))
        kernel.addresses.append(IPv4Prefix("10.244.1.5/24")!)
        kernel.foreignRoutes.append(Route(dst: IPv4Prefix("192.0.2.0/24")!, gateway: nil, onlink: false, proto: 2, deviceIndex: 2))
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        #expect(Set(Fixture.lines(plan)) == [
            "- fdb 0e:00:00:00:00:09 dev flannel.1 dst 198.18.0.9",
            "- neigh 10.244.9.0 lladdr 0e:00:00:00:00:09 dev flannel.1 (not permanent)",
            "- route 10.244.9.0/24 dev flannel.1 proto boot",
            "- address 10.244.1.5/24 dev flannel.1",
        ])
    }

    @Test("a neighbor that is not permanent, and a route on our key with another protocol, are replaced")
    func replacedInPlace() throws {
        let desired = Fixture.desired(peers)
        var kernel = Fixture.kernel(holding: desired)
        kernel.neighbors[0].permanent = false
        kernel.routes[0].proto = 4
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        #expect(plan.counts.change == 2 && plan.counts.add == 0 && plan.counts.remove == 0)
    }

    @Test("switching layouts replaces routes in place and removes the nexthops")
    func layoutSwitch() throws {
        let kernel = Fixture.kernel(holding: Fixture.desired(peers, layout: .nexthop))
        let plan = try Differ.plan(desired: Fixture.desired(peers, layout: .classic), snapshot: kernel)
        #expect(plan.counts.change == 2)
        #expect(plan.counts.remove == 2)
        #expect(plan.changes.allSatisfy {
            switch $0 {
            case .replace(.route, .route), .remove(.nexthop): true
            default: false
            }
        })
    }

    @Test("a device with another VNI is recreated: our routes and nexthops are removed first, then everything is added")
    func recreate() throws {
        let desired = Fixture.desired(peers)
        var kernel = Fixture.kernel(holding: desired)
        kernel.device!.vxlan!.vni = 2
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        let recreateAt = try #require(plan.changes.firstIndex { if case .recreateDevice = $0 { true } else { false } })
        #expect(plan.changes[..<recreateAt].allSatisfy { if case .remove(.route) = $0 { true } else if case .remove(.nexthop) = $0 { true } else { false } })
        #expect(plan.changes[..<recreateAt].count == 4)
        #expect(Fixture.lines(plan)[recreateAt].hasSuffix("(recreate: vni 2 -> 1)"))
        #expect(plan.changes[(recreateAt + 1)...].allSatisfy { if case .add = $0 { true } else { false } })
    }

    @Test("MTU, MAC or admin state of the device differ: updated in place, not recreated")
    func update() throws {
        let desired = Fixture.desired(peers)
        var kernel = Fixture.kernel(holding: desired)
        kernel.device!.mtu = 1400
        kernel.device!.isUp = false
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        #expect(Fixture.lines(plan) == ["~ link flannel.1 mtu 1400 -> 1450, down -> up"])
    }

    @Test("a device of another kind with our name is an error, never deleted")
    func foreignDevice() {
        var kernel = KernelSnapshot()
        kernel.device = LinkState(index: 9, name: "flannel.1", kind: "bridge", mtu: 1500, mac: nil, isUp: true, vxlan: nil)
        #expect(throws: ReconcileError.foreignDevice(name: "flannel.1", kind: "bridge")) {
            try Differ.plan(desired: Fixture.desired(peers), snapshot: kernel)
        }
    }

    @Test("cleanup removes routes, then nexthops, then the device")
    func cleanup() {
        let kernel = Fixture.kernel(holding: Fixture.desired(peers))
        let plan = Differ.cleanup(snapshot: kernel)
        #expect(plan.changes.count == 5)
        if case .deleteDevice = plan.changes.last {} else { Issue.record("device must go last") }
        if case .remove(.route) = plan.changes.first {} else { Issue.record("routes must go first") }
    }
}

@Suite("Peer validation: wrong peers are skipped, the rest is programmed")
struct PeerValidationTests {
    struct Case: Sendable, CustomStringConvertible {
        var peer: NodeRecord
        var reason: String
        var description: String { reason }
    }

    static let cases: [Case] = [
        Case(peer: Fixture.node(5, ip: "127.0.0.5"), reason: "publicIP 127.0.0.5 is loopback"),
        Case(peer: Fixture.node(5, ip: "224.0.0.5"), reason: "publicIP 224.0.0.5 is multicast"),
        Case(peer: Fixture.node(5, ip: "0.0.0.0"), reason: "publicIP 0.0.0.0 is not a unicast address"),
        Case(peer: Fixture.node(5, ip: "198.18.0.77"), reason: "publicIP 198.18.0.77 is an address of this host"),
        Case(peer: NodeRecord(name: "node-5", publicIP: IPv4Address("198.18.0.5")!, subnet: IPv4Prefix("10.245.5.0/24")!),
             reason: "subnet 10.245.5.0/24 is not a /24 inside the network 10.244.0.0/16"),
        Case(peer: NodeRecord(name: "node-5", publicIP: IPv4Address("198.18.0.5")!, subnet: IPv4Prefix("10.244.1.0/24")!),
             reason: "subnet 10.244.1.0/24 overlaps this host's subnet 10.244.1.0/24"),
        Case(peer: Fixture.node(50), reason: "subnet 10.244.50.0/24 overlaps 10.244.50.0/23, a network this host is connected to"),
        Case(peer: Fixture.node(5, mac: "01:00:5e:00:00:05"), reason: "vtepMAC 01:00:5e:00:00:05 is not a unicast MAC"),
        Case(peer: Fixture.node(5, mac: "0e:00:00:00:00:05", ip: "198.18.0.2"), reason: "publicIP 198.18.0.2 is also used by node-2"),
    ]

    @Test("each wrong peer is skipped with a reason that names it", arguments: cases)
    func skipped(_ c: Case) throws {
        let host = HostFacts(underlay: Fixture.underlay, addresses: [IPv4Address("198.18.0.77")!],
                             foreignRoutes: [Route(dst: IPv4Prefix("10.244.50.0/23")!, gateway: nil, onlink: false, proto: 2,
                                                   deviceIndex: 3, scope: 253)])
        let desired = Fixture.desired([Fixture.node(2), c.peer], host: host)
        #expect(desired.skipped.map(\.reason) == [c.reason])
        #expect(desired.skipped.first?.name == c.peer.name)
        #expect(desired.peerCount == 1)
        #expect(desired.neighbors.map(\.ip) == [IPv4Address("10.244.2.0")!])
    }
}

@Suite("Plan output")
struct PlanOutputTests {
    @Test("summary lines")
    func summaries() throws {
        let out = PlanOutput(renderer: Renderer(deviceName: "flannel.1", proto: 152))
        let desired = Fixture.desired([Fixture.node(2)])
        let plan = try Differ.plan(desired: desired, snapshot: .empty)
        #expect(out.summary(plan) == "6 to add, 0 to change, 0 to remove (1 peer)")
        #expect(out.summary(plan, applied: true, writes: 7) == "applied: 6 added, 0 changed, 0 removed (1 peer, 7 kernel writes)")
        #expect(out.summary(Plan(peerCount: 2), applied: true, writes: 0) == "in sync: nothing to do (2 peers, 0 kernel writes)")
    }

    @Test("JSON carries each change with its action, kind, object and peer")
    func json() throws {
        let desired = Fixture.desired([Fixture.node(2)])
        let out = PlanOutput(renderer: Renderer(deviceName: "flannel.1", proto: 152), desired: desired)
        let plan = try Differ.plan(desired: desired, snapshot: .empty)
        let text = out.json(plan)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["inSync"] as? Bool == false)
        let changes = try #require(object["changes"] as? [[String: Any]])
        #expect(changes.count == 6)
        let route = try #require(changes.first { $0["kind"] as? String == "route" })
        #expect(route["action"] as? String == "add")
        #expect(route["peer"] as? String == "node-2")
        #expect(route["object"] as? String == "route 10.244.2.0/24 nhid 1985478658 via 10.244.2.0 dev flannel.1 onlink")
        let summary = try #require(object["summary"] as? [String: Any])
        #expect(summary["add"] as? Int == 6)
    }
}

import Foundation
