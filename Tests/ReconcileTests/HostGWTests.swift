import Foundation
import Model
@testable import Reconcile
import Registry
import Testing

/// The host-gw backend and VXLAN DirectRouting, without a kernel: which peers
/// are on this host's segment (by its routes), what each gets, and the plans
/// that switch a node between backends or a peer between sides.
@Suite("host-gw and DirectRouting: routes to peers on the segment")
struct HostGWTests {
    static let hostGW = NetworkConfig(network: IPv4Prefix("10.244.0.0/16")!, subnetLen: 24, backendType: "host-gw")
    static let directRouting = NetworkConfig(network: IPv4Prefix("10.244.0.0/16")!, subnetLen: 24, directRouting: true)

    /// This host: eth0 (index 2) on 198.18.0.0/24, eth1 (index 3) on 198.18.5.0/24, a
    /// router 198.18.0.254 to 198.18.1.0/24, and a default route via 198.18.0.254.
    static func host(defaultRoute: Bool = true) -> HostFacts {
        var routes = [
            Route(dst: IPv4Prefix("198.18.0.0/24")!, gateway: nil, onlink: false, proto: 2, deviceIndex: 2, scope: 253),
            Route(dst: IPv4Prefix("198.18.5.0/24")!, gateway: nil, onlink: false, proto: 2, deviceIndex: 3, scope: 253),
            Route(dst: IPv4Prefix("198.18.1.0/24")!, gateway: IPv4Address("198.18.0.254")!, onlink: false, proto: 4, deviceIndex: 2),
            Route(dst: IPv4Prefix("198.18.9.0/24")!, gateway: nil, onlink: false, proto: 4, type: 6),
        ]
        if defaultRoute {
            routes.append(Route(dst: IPv4Prefix("0.0.0.0/0")!, gateway: IPv4Address("198.18.0.254")!, onlink: false, proto: 4,
                                deviceIndex: 2))
        }
        return HostFacts(underlay: Fixture.underlay, addresses: [IPv4Address("198.18.0.1")!], foreignRoutes: routes,
                         underlayPrefixes: [IPv4Prefix("198.18.0.1/24")!])
    }

    static func desired(_ network: NetworkConfig, _ peers: [NodeRecord], layout: RouteLayout = .nexthop,
                        host: HostFacts = host()) -> DesiredState {
        DesiredState(view: ClusterView(network: network, local: Fixture.node(1), peers: peers), host: host,
                     settings: AgentSettings(layout: layout))
    }

    static func lines(_ plan: Plan, deviceIndex: Int32? = 7) -> [String] {
        PlanOutput(renderer: Renderer(deviceName: "flannel.1", proto: AgentSettings.defaultProtocol, deviceIndex: deviceIndex,
                                      otherDevices: [2: "eth0"])).lines(plan)
    }

    @Test("net-conf: host-gw is read from a file of ours and from flanneld's etcd, and written back as flannel writes it")
    func config() throws {
        let strict = try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}"#.utf8),
                                             source: "inv.json", dialect: .strict)
        #expect(strict.backendType == "host-gw")
        #expect(strict.json == #"{"Network": "10.244.0.0/16", "SubnetLen": 24, "SubnetMin": "10.244.1.0", "SubnetMax": "10.244.255.0", "Backend": {"Type": "host-gw"}}"#)
        // flanneld lower-cases the type and ignores the vxlan keys under host-gw.
        let etcd = try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "Host-GW", "VNI": 4}}"#.utf8),
                                           source: "etcd /coreos.com/network/config")
        #expect(etcd.backendType == "host-gw")
        #expect(etcd.vni == 1)
        let direct = try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}"#.utf8),
                                             source: "inv.json", dialect: .strict)
        #expect(direct.directRouting)
        #expect(direct.json.hasSuffix(#""Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": true}}"#))
    }

    @Test("the main table decides: connected is direct, a gateway is not, a blackhole or no route is unreachable")
    func lookup() {
        let lookup = RouteLookup(Self.host().foreignRoutes)
        #expect(lookup.reach(IPv4Address("198.18.0.7")!) == .direct(2))
        #expect(lookup.reach(IPv4Address("198.18.5.7")!) == .direct(3))
        #expect(lookup.reach(IPv4Address("198.18.1.7")!) == .gateway(IPv4Address("198.18.0.254")!, route: IPv4Prefix("198.18.1.0/24")!))
        #expect(lookup.reach(IPv4Address("203.0.113.9")!) == .gateway(IPv4Address("198.18.0.254")!, route: IPv4Prefix("0.0.0.0/0")!))
        #expect(lookup.reach(IPv4Address("198.18.9.1")!) == .none("the route 198.18.9.0/24 is blackhole"))
        #expect(RouteLookup(Self.host(defaultRoute: false).foreignRoutes).reach(IPv4Address("203.0.113.9")!) == .none("no route to it"))
        // Of two routes to one network, the lower metric wins, as in the kernel.
        let two = RouteLookup([
            Route(dst: IPv4Prefix("198.18.7.0/24")!, gateway: IPv4Address("198.18.0.9")!, onlink: false, proto: 4, priority: 100, deviceIndex: 2),
            Route(dst: IPv4Prefix("198.18.7.0/24")!, gateway: nil, onlink: false, proto: 2, priority: 10, deviceIndex: 2),
        ])
        #expect(two.reach(IPv4Address("198.18.7.1")!) == .direct(2))
    }

    @Test("host-gw: no device, a route per peer via its public IP on the underlay, the underlay's MTU", arguments: RouteLayout.allCases)
    func hostGWFromEmpty(layout: RouteLayout) throws {
        let desired = Self.desired(Self.hostGW, [Fixture.node(2), Fixture.node(3)], layout: layout)
        #expect(desired.device == nil && desired.address == nil)
        #expect(desired.mtu == 1500)
        #expect(desired.fdb.isEmpty && desired.neighbors.isEmpty)
        let plan = try Differ.plan(desired: desired, snapshot: .empty)
        switch layout {
        case .nexthop:
            #expect(Self.lines(plan, deviceIndex: nil) == [
                "+ nexthop id 1985478658 via 198.18.0.2 dev eth0",
                "+ nexthop id 1985478659 via 198.18.0.3 dev eth0",
                "+ route 10.244.2.0/24 nhid 1985478658 via 198.18.0.2 dev eth0",
                "+ route 10.244.3.0/24 nhid 1985478659 via 198.18.0.3 dev eth0",
            ])
        case .classic:
            #expect(Self.lines(plan, deviceIndex: nil) == [
                "+ route 10.244.2.0/24 via 198.18.0.2 dev eth0",
                "+ route 10.244.3.0/24 via 198.18.0.3 dev eth0",
            ])
        }
        // What that leaves is in sync.
        #expect(try Differ.plan(desired: desired, snapshot: Fixture.kernel(holding: desired)).isEmpty)
    }

    @Test("host-gw: a peer behind a router, on another interface, or unreachable is skipped with the reason, never routed")
    func hostGWSkips() {
        let peers = [Fixture.node(2), Fixture.node(3, ip: "198.18.1.3"), Fixture.node(4, ip: "198.18.5.4"),
                     Fixture.node(5, ip: "198.18.9.5")]
        let desired = Self.desired(Self.hostGW, peers)
        #expect(desired.peerNames == ["node-2"])
        #expect(desired.skipped.map(\.description) == [
            "peer node-3: publicIP 198.18.1.3 is not on this host's segment: it is reached via the gateway 198.18.0.254 "
                + "(route 198.18.1.0/24); host-gw needs every node on one L2 segment (use vxlan, or vxlan with DirectRouting, "
                + "across routers); skipped",
            "peer node-4: publicIP 198.18.5.4 is on a network of interface #3, not of the underlay eth0: host-gw routes to peers "
                + "over the underlay only; skipped",
            "peer node-5: publicIP 198.18.9.5 is not reachable from this host: the route 198.18.9.0/24 is blackhole; skipped",
        ])
        #expect(desired.routes.map(\.dst) == [IPv4Prefix("10.244.2.0/24")!])
    }

    @Test("DirectRouting: a peer on the segment gets a direct route, one across a router gets VXLAN")
    func directRoutingSides() throws {
        let desired = Self.desired(Self.directRouting, [Fixture.node(2), Fixture.node(3, ip: "198.18.1.3")])
        #expect(desired.device?.name == "flannel.1")
        #expect(desired.mtu == 1450)
        let lines = Self.lines(try Differ.plan(desired: desired, snapshot: .empty), deviceIndex: nil)
        #expect(lines.filter { !$0.hasPrefix("+ link") && !$0.hasPrefix("+ address") } == [
            "+ fdb 0e:01:c6:12:01:03 dev flannel.1 dst 198.18.1.3",
            "+ neigh 10.244.3.0 lladdr 0e:01:c6:12:01:03 dev flannel.1",
            "+ nexthop id 1985478658 via 198.18.0.2 dev eth0",
            "+ nexthop id 1985478659 via 10.244.3.0 dev flannel.1 onlink",
            "+ route 10.244.2.0/24 nhid 1985478658 via 198.18.0.2 dev eth0",
            "+ route 10.244.3.0/24 nhid 1985478659 via 10.244.3.0 dev flannel.1 onlink",
        ])
        // Without DirectRouting both go over VXLAN.
        let plain = Fixture.desired([Fixture.node(2), Fixture.node(3, ip: "198.18.1.3")], host: Self.host())
        #expect(plain.fdb.count == 2)
    }

    @Test("a peer that moves to this host's segment loses its FDB entry and neighbor in the same pass; its route stays, its nexthop moves")
    func peerSwitchesSides() throws {
        // Before: 198.18.0.2 was behind the router (no connected route for it yet).
        var before = Self.host()
        before.foreignRoutes.removeAll { $0.dst == IPv4Prefix("198.18.0.0/24")! }
        let vxlan = Self.desired(Self.directRouting, [Fixture.node(2)], host: before)
        #expect(vxlan.fdb.count == 1)
        let kernel = Fixture.kernel(holding: vxlan)
        let direct = Self.desired(Self.directRouting, [Fixture.node(2)])
        let plan = try Differ.plan(desired: direct, snapshot: kernel)
        #expect(Self.lines(plan) == [
            "- fdb 0e:01:c6:12:00:02 dev flannel.1 dst 198.18.0.2",
            "- neigh 10.244.2.0 lladdr 0e:01:c6:12:00:02 dev flannel.1",
            "~ nexthop id 1985478658 via 198.18.0.2 dev eth0 (was: nexthop id 1985478658 via 10.244.2.0 dev flannel.1 onlink)",
        ])
        // And back: the nexthop returns to flannel.1 after its FDB entry and neighbor.
        let back = try Differ.plan(desired: vxlan, snapshot: Fixture.kernel(holding: direct))
        #expect(Self.lines(back) == [
            "+ fdb 0e:01:c6:12:00:02 dev flannel.1 dst 198.18.0.2",
            "+ neigh 10.244.2.0 lladdr 0e:01:c6:12:00:02 dev flannel.1",
            "~ nexthop id 1985478658 via 10.244.2.0 dev flannel.1 onlink (was: nexthop id 1985478658 via 198.18.0.2 dev eth0)",
        ])
    }

    @Test("switching a node from vxlan to host-gw removes flannel.1 and its routes, and routes on the underlay")
    func switchBackends() throws {
        let peers = [Fixture.node(2)]
        let kernel = Fixture.kernel(holding: Self.desired(Fixture.network, peers))
        let plan = try Differ.plan(desired: Self.desired(Self.hostGW, peers), snapshot: kernel)
        #expect(Self.lines(plan) == [
            "- route 10.244.2.0/24 nhid 1985478658 via 10.244.2.0 dev flannel.1 onlink",
            "- nexthop id 1985478658 via 10.244.2.0 dev flannel.1 onlink",
            "- link flannel.1",
            "+ nexthop id 1985478658 via 198.18.0.2 dev eth0",
            "+ route 10.244.2.0/24 nhid 1985478658 via 198.18.0.2 dev eth0",
        ])
        // A device of another kind that has the name is not the agent's: host-gw leaves it and what is on it.
        var foreign = KernelSnapshot()
        foreign.device = LinkState(index: 9, name: "flannel.1", kind: "bridge", mtu: 1500, mac: nil, isUp: true, vxlan: nil)
        let left = try Differ.plan(desired: Self.desired(Self.hostGW, peers), snapshot: foreign)
        #expect(!Self.lines(left).contains { $0.contains("link") })
    }

    @Test("host-gw: a route someone changed is repaired; a route of someone else's is never touched")
    func hostGWRepair() throws {
        let desired = Self.desired(Self.hostGW, [Fixture.node(2)], layout: .classic)
        var kernel = Fixture.kernel(holding: desired)
        kernel.routes[0].gateway = IPv4Address("198.18.0.99")
        kernel.foreignRoutes = Self.host().foreignRoutes
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        #expect(Self.lines(plan) == ["~ route 10.244.2.0/24 via 198.18.0.2 dev eth0 (was: route 10.244.2.0/24 via 198.18.0.99 dev eth0)"])
        // A foreign route to a peer's subnet: the peer is skipped, the route stays.
        let taken = HostFacts(underlay: Fixture.underlay, foreignRoutes: Self.host().foreignRoutes + [
            Route(dst: IPv4Prefix("10.244.2.0/24")!, gateway: IPv4Address("198.18.0.50")!, onlink: false, proto: 4, deviceIndex: 2),
        ])
        let skipped = Self.desired(Self.hostGW, [Fixture.node(2)], host: taken)
        #expect(skipped.peerCount == 0)
        #expect(skipped.skipped.first?.reason.hasPrefix("route 10.244.2.0/24 already exists with protocol static") == true)
    }

    @Test("leases: host-gw's are flanneld's bytes; each backend reads only its own kind, as flanneld does")
    func leases() throws {
        let own = LeaseAttributes.own(publicIP: IPv4Address("198.18.0.1")!, network: Self.hostGW)
        #expect(own.json == #"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}"#)
        let key = "/coreos.com/network/subnets/10.244.3.0-24"
        let lease = try Lease.parse(key: key, value: Array(own.json.utf8), backendType: "host-gw")
        #expect(lease.attributes == own)
        #expect(lease.record.vtepMAC == nil)
        let vxlan = Array(LeaseAttributes.own(publicIP: IPv4Address("198.18.0.2")!, network: Fixture.network).json.utf8)
        guard case .failure(let skipped) = Flannel.check(LeaseEntry(key: key, value: vxlan), network: Self.hostGW) else {
            Issue.record("a vxlan lease is not a host-gw peer")
            return
        }
        #expect(skipped.reason == #"BackendType: "vxlan": only host-gw leases can be reached by host-gw routes (flanneld ignores the others)"#)
        guard case .failure = Flannel.check(LeaseEntry(key: key, value: Array(own.json.utf8)), network: Fixture.network) else {
            Issue.record("a host-gw lease is not a vxlan peer")
            return
        }
        // Any backend's lease is this node's own by its public IP (a node that switches backends keeps its subnet).
        #expect(try Lease.parse(key: key, value: vxlan, backendType: nil).attributes.publicIP == IPv4Address("198.18.0.2"))
    }

    @Test("the daemon: a route of someone else's that changes sends a backend that follows routes to a full pass")
    func eventsFollowRoutes() {
        var picture = KernelPicture(KernelSnapshot())
        let route = Route(dst: IPv4Prefix("198.18.1.0/24")!, gateway: IPv4Address("198.18.0.254")!, onlink: false, proto: 4, deviceIndex: 2)
        let event = KernelEvent(.entry(.route(route)))
        let network = IPv4Prefix("10.244.0.0/16")!
        #expect(picture.note(event, proto: 152, network: network) == .ignored)
        guard case .fullPass(let why) = picture.note(event, proto: 152, network: network, followsRoutes: true) else {
            Issue.record("not a full pass")
            return
        }
        #expect(why == "route 198.18.1.0/24 changed: which peers are on this host's segment is decided again")
    }
}
