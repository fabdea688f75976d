import Foundation
import Model
@testable import Reconcile

enum Fixture {
    static let network = NetworkConfig(network: IPv4Prefix("10.244.0.0/16")!, subnetLen: 24)
    static let underlay = LinkState(index: 2, name: "eth0", kind: "veth", mtu: 1500, mac: nil, isUp: true, vxlan: nil)

    static func node(_ n: UInt8, mac: String? = nil, ip: String? = nil) -> NodeRecord {
        NodeRecord(name: "node-\(n)", publicIP: IPv4Address(ip ?? "198.18.0.\(n)")!,
                   subnet: IPv4Prefix("10.244.\(n).0/24")!, vtepMAC: mac.flatMap { MACAddress($0) })
    }

    static func view(peers: [NodeRecord]) -> ClusterView {
        ClusterView(network: network, local: node(1), peers: peers)
    }

    static func desired(_ peers: [NodeRecord], layout: RouteLayout = .nexthop,
                        host: HostFacts = HostFacts(underlay: underlay)) -> DesiredState {
        DesiredState(view: view(peers: peers), host: host, settings: AgentSettings(layout: layout))
    }

    /// The snapshot of a kernel that holds exactly `desired` (what a successful sync leaves).
    static func kernel(holding desired: DesiredState, index: Int32 = 7) -> KernelSnapshot {
        let link = desired.device.map { d in LinkState(index: index, name: d.name, kind: "vxlan", mtu: d.mtu, mac: d.mac, isUp: true, vxlan: d) }
        return KernelSnapshot(
            device: link, addresses: desired.address.map { [$0] } ?? [], fdb: desired.fdb, neighbors: desired.neighbors,
            nexthops: desired.nexthops.map { var n = $0; n.deviceIndex = n.deviceIndex ?? index; return n },
            routes: desired.routes.map { var r = $0; if r.nexthopID == nil { r.deviceIndex = r.deviceIndex ?? index }; return r })
    }

    static func lines(_ plan: Plan) -> [String] {
        PlanOutput(renderer: Renderer(deviceName: "flannel.1", proto: AgentSettings.defaultProtocol, deviceIndex: 7)).lines(plan)
    }
}
