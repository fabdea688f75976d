import Foundation
import Model
@testable import Reconcile
import Registry
import Testing

/// The udp backend's control plane without a kernel: its configuration, its
/// device, route and lease, and the plans that switch a node to it and back.
@Suite("the udp backend: flannel0, one route, flanneld's lease")
struct UDPTests {
    static let udp = NetworkConfig(network: IPv4Prefix("10.244.0.0/16")!, subnetLen: 24, backendType: "udp", port: 8285)

    static func desired(_ network: NetworkConfig, _ peers: [NodeRecord]) -> DesiredState {
        DesiredState(view: ClusterView(network: network, local: Fixture.node(1), peers: peers),
                     host: HostFacts(underlay: Fixture.underlay), settings: AgentSettings())
    }

    static func lines(_ plan: Plan) -> [String] {
        PlanOutput(renderer: Renderer(deviceName: "flannel0", proto: AgentSettings.defaultProtocol, deviceIndex: 7)).lines(plan)
    }

    @Test("net-conf: Type udp with flannel's port 8285 by default (0 too), written back as flannel writes it; vxlan's keys refused in a file")
    func config() throws {
        let plain = try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}"#.utf8), source: "inv.json", dialect: .strict)
        #expect(plain.backendType == "udp" && plain.port == 8285 && plain.deviceName == "flannel0")
        #expect(plain.json.hasSuffix(#""Backend": {"Type": "udp", "Port": 8285}}"#))
        let zero = try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "UDP", "Port": 0}}"#.utf8), source: "etcd")
        #expect(zero.port == 8285)
        let other = try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "udp", "Port": 9000}}"#.utf8), source: "etcd")
        #expect(other.port == 9000)
        #expect(throws: ConfigError.self) {
            try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "udp", "VNI": 3}}"#.utf8), source: "inv.json", dialect: .strict)
        }
        // flanneld ignores what udp does not read.
        #expect(try NetworkConfig.parse(Data(#"{"Network": "10.244.0.0/16", "Backend": {"Type": "udp", "VNI": 3}}"#.utf8), source: "etcd").vni == 1)
    }

    @Test("the desired state: flannel0 (underlay MTU - 28), the subnet's address, one route of the whole network; no entry per peer")
    func desiredState() throws {
        let desired = Self.desired(Self.udp, [Fixture.node(2), Fixture.node(3)])
        #expect(desired.device == nil)
        #expect(desired.tun == TUNDevice(name: "flannel0", mtu: 1472))
        #expect(desired.mtu == 1472)
        #expect(desired.peerCount == 2 && desired.fdb.isEmpty && desired.neighbors.isEmpty && desired.nexthops.isEmpty)
        let plan = try Differ.plan(desired: desired, snapshot: .empty)
        #expect(Self.lines(plan) == [
            "+ link flannel0 type tun multi_queue vnet_hdr persist mtu 1472",
            "+ address 10.244.1.0/32 dev flannel0",
            "+ route 10.244.0.0/16 dev flannel0",
        ])
        // In sync: nothing; an MTU someone changed: changed back in place.
        var kernel = KernelSnapshot(device: LinkState(index: 7, name: "flannel0", kind: "tun", mtu: 1472, mac: nil, isUp: true, vxlan: nil,
                                                      tun: TUNDevice(name: "flannel0", mtu: 1472)),
                                    addresses: [IPv4Prefix("10.244.1.0/32")!],
                                    routes: [Route(dst: IPv4Prefix("10.244.0.0/16")!, gateway: nil, onlink: false, proto: 152, deviceIndex: 7)])
        #expect(try Differ.plan(desired: desired, snapshot: kernel).isEmpty)
        kernel.device?.mtu = 1400
        #expect(Self.lines(try Differ.plan(desired: desired, snapshot: kernel)) == ["~ link flannel0 mtu 1400 -> 1472"])
        // A TUN device without vnet_hdr (made by hand, or by flanneld) is made again: the queues could not attach.
        kernel.device?.tun?.vnetHeader = false
        let remade = Self.lines(try Differ.plan(desired: desired, snapshot: kernel))
        #expect(remade.contains("- link flannel0") && remade.contains("+ link flannel0 type tun multi_queue vnet_hdr persist mtu 1472"))
        // A device of another kind with the name is not the agent's.
        kernel.device = LinkState(index: 7, name: "flannel0", kind: "bridge", mtu: 1500, mac: nil, isUp: true, vxlan: nil)
        #expect(throws: ReconcileError.foreignTUN(name: "flannel0", kind: "bridge")) { try Differ.plan(desired: desired, snapshot: kernel) }
    }

    @Test("switching vxlan -> udp: the leftover flannel.1 goes with its routes; udp -> vxlan: flannel0 and its route go")
    func switching() throws {
        let peers = [Fixture.node(2)]
        var vxlanKernel = Fixture.kernel(holding: Fixture.desired(peers))
        let vxlanDevice = try #require(vxlanKernel.device)
        vxlanKernel.device = nil
        vxlanKernel.leftovers = [vxlanDevice]
        vxlanKernel.addresses = []
        let toUDP = Fixture.lines(try Differ.plan(desired: Self.desired(Self.udp, peers), snapshot: vxlanKernel))
        #expect(toUDP.contains("- link flannel.1"))
        #expect(toUDP.contains("- route 10.244.2.0/24 nhid 1985478658 via 10.244.2.0 dev flannel.1 onlink"))
        #expect(toUDP.contains("+ link flannel0 type tun multi_queue vnet_hdr persist mtu 1472"))

        let tun = LinkState(index: 9, name: "flannel0", kind: "tun", mtu: 1472, mac: nil, isUp: true, vxlan: nil, tun: TUNDevice(name: "flannel0", mtu: 1472))
        var udpKernel = KernelSnapshot(routes: [Route(dst: IPv4Prefix("10.244.0.0/16")!, gateway: nil, onlink: false, proto: 152, deviceIndex: 9)])
        udpKernel.leftovers = [tun]
        let toVXLAN = try Differ.plan(desired: Fixture.desired(peers), snapshot: udpKernel)
        #expect(toVXLAN.changes.contains(.deleteDevice(tun)))
        #expect(toVXLAN.changes.contains(.remove(.route(udpKernel.routes[0]))))
    }

    @Test("leases: flanneld's udp lease has no BackendType; a udp node reads those (and only those)")
    func leases() throws {
        let own = LeaseAttributes.own(publicIP: IPv4Address("198.18.0.3")!, network: Self.udp)
        #expect(own.json == #"{"PublicIP":"198.18.0.3","PublicIPv6":null}"#)
        let key = "/coreos.com/network/subnets/10.244.3.0-24"
        guard case .success(let lease) = Flannel.check(LeaseEntry(key: key, value: Array(own.json.utf8)), network: Self.udp) else {
            Issue.record("flanneld's udp lease is a udp peer")
            return
        }
        #expect(lease.record.publicIP == IPv4Address("198.18.0.3") && lease.subnet == IPv4Prefix("10.244.3.0/24"))
        let vxlan = LeaseAttributes.own(publicIP: IPv4Address("198.18.0.4")!, network: Fixture.network).json
        guard case .failure(let skipped) = Flannel.check(LeaseEntry(key: key, value: Array(vxlan.utf8)), network: Self.udp) else {
            Issue.record("a vxlan lease has no UDP proxy behind it")
            return
        }
        #expect(skipped.reason == #"BackendType: "vxlan": a udp node reaches only udp leases (flanneld's have no BackendType)"#)
        // A vxlan node does not take a udp lease as its peer either (no BackendType: flanneld's vxlan ignores it).
        guard case .failure = Flannel.check(LeaseEntry(key: key, value: Array(own.json.utf8)), network: Fixture.network) else {
            Issue.record("a udp lease is not a vxlan peer")
            return
        }
    }
}
