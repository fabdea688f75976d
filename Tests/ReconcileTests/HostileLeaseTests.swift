import Foundation
import Model
import Reconcile
import Registry
import Testing
import TestSupport

/// The hostile-leases family (Tests/TestSupport/HostileLeases.swift), without etcd
/// or a kernel: the leases go through `Flannel.clusterView` (what the daemon and
/// `sync` both use) and `DesiredState` (the checks against this host), and the
/// allocator's free subnets are computed from the same keys.
@Suite("hostile leases: each skipped with a reason naming its key, the rest programmed, no held subnet allocated")
struct HostileLeaseTests {
    static let network = try! NetworkConfig.parse(Data(HostileLeases.network.utf8), source: "net-conf")
    /// SubnetMin and SubnetMax left at their defaults: every /24 of the network is a candidate.
    static let allocation = NetworkConfig(network: IPv4Prefix("10.244.0.0/16")!, subnetLen: 24)
    static let publicIP = IPv4Address(HostileLeases.publicIP)!
    static let host = HostFacts(
        underlay: LinkState(index: 2, name: "eth0", kind: "veth", mtu: 1500, mac: nil, isUp: true, vxlan: nil),
        addresses: [publicIP], underlayPrefixes: [IPv4Prefix("198.18.0.1/24")!])

    static func entries(_ entries: [HostileLeases.Entry]) -> [LeaseEntry] {
        entries.map { LeaseEntry(key: $0.key, value: Array($0.value.utf8), etcdLease: 7) }
    }

    static let own = LeaseEntry(key: HostileLeases.ownKey, value: Array(LeaseAttributes(
        publicIP: publicIP, vni: 1, vtepMAC: .vtep(vni: 1, publicIP: publicIP)).json.utf8))

    /// The cluster view and desired state of this node with `entries` in etcd.
    static func program(_ entries: [HostileLeases.Entry]) -> (leases: LeaseView, desired: DesiredState) {
        let leases = Flannel.clusterView(network: network, leases: [own] + Self.entries(HostileLeases.good + entries), node: "h1",
                                         publicIP: publicIP, own: (HostileLeases.ownKey, IPv4Prefix(HostileLeases.ownSubnet)!))
        return (leases, DesiredState(view: leases.view, host: host, settings: AgentSettings()))
    }

    static func isProgrammed(_ desired: DesiredState, subnet: String, publicIP: String, mac: String) -> Bool {
        let subnet = IPv4Prefix(subnet)!, ip = IPv4Address(publicIP)!, mac = MACAddress(mac)!
        return desired.fdb.contains { $0.mac == mac && $0.dst == ip }
            && desired.neighbors.contains { $0.ip == subnet.network && $0.mac == mac }
            && desired.routes.contains { $0.dst == subnet && $0.gateway == subnet.network }
    }

    @Test("the table is large and its keys are distinct")
    func table() {
        let keys = (HostileLeases.good + HostileLeases.cases.flatMap(\.entries)).map(\.key)
        #expect(HostileLeases.cases.count >= 40)
        #expect(Set(keys).count == keys.count, "each key once: the end-to-end test writes them all at once")
    }

    @Test("a hostile lease", arguments: HostileLeases.cases)
    func hostile(_ hostile: HostileLeases.Case) throws {
        let (leases, desired) = Self.program(hostile.entries)
        var expectedSkips = 0
        for entry in hostile.entries {
            switch entry.outcome {
            case .skipped(let fragment):
                expectedSkips += 1
                let reasons = leases.skipped.filter { $0.key == entry.key }.map(\.description)
                    + desired.skipped.filter { $0.origin == entry.key }.map(\.description)
                try #require(reasons.count == 1, "one reason for \(Flannel.printable(entry.key)): \(reasons)")
                let reason = reasons[0]
                #expect(reason.contains(fragment), "\(reason)")
                #expect(reason.contains(Flannel.printable(entry.key)), "the reason names the key: \(reason)")
                #expect(!reason.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }, "no raw control character: \(reason)")
                #expect(reason.count < 1_500, "a huge value is not echoed whole (\(reason.count) characters)")
            case .programmed(let subnet, let ip, let mac):
                #expect(Self.isProgrammed(desired, subnet: subnet, publicIP: ip, mac: mac), "\(entry.name) programmed")
                #expect(!leases.skipped.contains { $0.key == entry.key } && !desired.skipped.contains { $0.origin == entry.key })
            }
        }
        // The rest of the cluster is still programmed, and nothing else is skipped.
        for good in HostileLeases.good {
            guard case .programmed(let subnet, let ip, let mac) = good.outcome else { continue }
            #expect(Self.isProgrammed(desired, subnet: subnet, publicIP: ip, mac: mac), "good peer \(good.name)")
        }
        #expect(leases.skipped.count + desired.skipped.count == expectedSkips,
                "\(leases.skipped.map(\.description)) \(desired.skipped.map(\.description))")
        #expect(desired.peerCount == HostileLeases.good.count + hostile.entries.count - expectedSkips)
        #expect(desired.address == IPv4Prefix("10.244.14.0/32"), "this node keeps its subnet")

        // The allocator never takes a subnet that one of these keys holds, whatever its value.
        let everything = Set(Flannel.freeSubnets(network: Self.allocation, held: []))
        for entry in hostile.entries {
            let free = Set(Flannel.freeSubnets(network: Self.allocation, held: [Flannel.heldSubnet(byLeaseKey: entry.key)].compactMap { $0 }))
            #expect(everything.subtracting(free) == Set(entry.holds.map { IPv4Prefix($0)! }),
                    "\(Flannel.printable(entry.key)) holds \(entry.holds)")
        }
    }

    @Test("all hostile leases at once: every bad one skipped with its key, every good one programmed")
    func allAtOnce() {
        let entries = HostileLeases.cases.flatMap(\.entries)
        let (leases, desired) = Self.program(entries)
        let skippedKeys = leases.skipped.map(\.key) + desired.skipped.map(\.origin)
        var programmed = 0
        for entry in entries {
            switch entry.outcome {
            case .skipped: #expect(skippedKeys.filter { $0 == entry.key }.count == 1, "\(Flannel.printable(entry.key))")
            case .programmed(let subnet, let ip, let mac):
                programmed += 1
                #expect(Self.isProgrammed(desired, subnet: subnet, publicIP: ip, mac: mac), "\(entry.name)")
            }
        }
        #expect(desired.peerCount == HostileLeases.good.count + programmed)
        let held = Set((HostileLeases.good + entries).flatMap(\.holds).map { IPv4Prefix($0)! })
        let free = Flannel.freeSubnets(network: Self.allocation, held: (HostileLeases.good + entries).compactMap { Flannel.heldSubnet(byLeaseKey: $0.key) })
        #expect(held.isDisjoint(with: free))
        #expect(free.count == 255 - held.count)
    }

    @Test("flannel's lease keys: IPv4, dual stack, IPv6 only (flannel's own test vectors), and what is not a key")
    func keys() {
        let dual = Flannel.subnets(ofLeaseKey: "/coreos.com/network/subnets/10.12.13.0-24&fd00:12:13::-56")
        #expect(dual?.ipv4 == IPv4Prefix("10.12.13.0/24"))
        #expect(dual?.ipv6?.description == "fd00:12:13::/56")
        #expect(Flannel.subnets(ofLeaseKey: "10.12.13.0-24") == LeaseKeySubnets(ipv4: IPv4Prefix("10.12.13.0/24"), ipv6: nil))
        let v6only = Flannel.subnets(ofLeaseKey: "/p/subnets/0.0.0.0-0&fd00:10:244:d::-64")
        #expect(v6only?.ipv4 == nil && v6only?.ipv6?.description == "fd00:10:244:d::/64")
        #expect(Flannel.subnet(ofLeaseKey: "/p/subnets/10.244.13.0-24&fd00:10:244:d::-64") == IPv4Prefix("10.244.13.0/24"))
        #expect(Flannel.subnet(ofLeaseKey: "/p/subnets/0.0.0.0-0&fd00:10:244:d::-64") == nil)
        for invalid in ["10", "10.12.13.0", "10.12.13-24", "10.12.13.300-24", "10.12.13.0-24hi", "&2001::-56", "10.12.13.0-24&:12:13:-56",
                        "10.12.13.0-24&20011::-56", "10.12.13.0-24&2001-56", "10.12.13.0-24&2001::", "10.12.13.0-24&2001::-56hi"] {
            #expect(Flannel.subnets(ofLeaseKey: "/p/subnets/" + invalid) == nil, "\(invalid)")
        }
    }

    @Test("a dual-stack lease value parses; the IPv6 parts are kept, the JSON is flanneld's")
    func dualStackValue() throws {
        let entry = HostileLeases.dualStack.entries[0]
        let lease = try Lease.parse(key: entry.key, value: Array(entry.value.utf8))
        #expect(lease.subnet == IPv4Prefix("10.244.13.0/24"))
        #expect(lease.ipv6Subnet?.description == "fd00:10:244:d::/64")
        #expect(lease.attributes.publicIPv6?.description == "fd00::113")
        #expect(lease.attributes.backendV6 == LeaseAttributes.VTEP(vni: 1, vtepMAC: MACAddress("22:00:00:00:06:13")!))
        #expect(lease.attributes.json == entry.value, "written back byte for byte")
    }

    @Test("sync's own lease: the one with this node's IP; with several, the one subnet.env names; else a clear error")
    func ownLease() throws {
        let mine = LeaseEntry(key: HostileLeases.ownKey, value: Self.own.value)
        let claim = LeaseEntry(key: "/coreos.com/network/subnets/10.244.13.0-24", value: Self.own.value)
        let outside = LeaseEntry(key: "/coreos.com/network/subnets/10.244.60.0-24", value: Self.own.value)
        let good = Self.entries(HostileLeases.good)
        func own(_ leases: [LeaseEntry], previous: String?) throws(OwnLeaseError) -> String {
            try Flannel.ownLease(among: leases, network: Self.network, publicIP: Self.publicIP,
                                 previousSubnet: previous.flatMap { IPv4Prefix($0) }).key
        }
        #expect(try own(good + [mine], previous: nil) == HostileLeases.ownKey)
        #expect(try own(good + [mine, outside], previous: nil) == HostileLeases.ownKey, "outside SubnetMin..SubnetMax: not ours")
        #expect(try own(good + [claim, mine], previous: "10.244.14.0/24") == HostileLeases.ownKey)
        #expect(throws: OwnLeaseError.several(keys: [claim.key, mine.key])) { try own(good + [mine, claim], previous: nil) }
        #expect(throws: OwnLeaseError.noLease) { try own(good + [outside], previous: "10.244.60.0/24") }
    }
}
