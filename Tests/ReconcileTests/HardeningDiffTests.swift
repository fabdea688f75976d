import Model
@testable import Reconcile
import Testing

/// Issue 9, at the layer where the bugs lived: the pure diff and peer validation.
@Suite("Hardening: the diff sees every attribute that changes forwarding")
struct HardeningDiffTests {
    let peers = [Fixture.node(2), Fixture.node(3)]

    /// Item 1: an FDB entry is (MAC, dst, port, VNI, via); any of them wrong black-holes the peer.
    @Test("an FDB entry with another port, VNI or underlay is replaced, not 'in sync'",
          arguments: [(UInt16?.some(9999), UInt32?.none, Int32?.none, "port 9999"),
                      (nil, 55, nil, "vni 55"),
                      (nil, nil, 1, "via if1"),
                      (4789, 7, 3, "port 4789 vni 7 via if3")])
    func fdbIdentity(port: UInt16?, vni: UInt32?, via: Int32?, words: String) throws {
        let desired = Fixture.desired(peers)
        var kernel = Fixture.kernel(holding: desired)
        kernel.fdb[0].port = port
        kernel.fdb[0].vni = vni
        kernel.fdb[0].via = via
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        #expect(Fixture.lines(plan) == ["~ fdb 0e:01:c6:12:00:02 dev flannel.1 dst 198.18.0.2 (was: \(words))"])
    }

    /// Item 2: a stray is removed with the attributes that key it.
    @Test("a stray FDB entry with port, VNI and via is removed as it is")
    func strayKeepsItsKey() throws {
        let desired = Fixture.desired(peers)
        var kernel = Fixture.kernel(holding: desired)
        let stray = FDBEntry(mac: MACAddress("0e:00:00:00:00:99")!, dst: IPv4Address("198.18.0.99")!, port: 4789, vni: 77, via: 2)
        kernel.fdb.append(stray)
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        #expect(plan.changes == [.remove(.fdb(stray))])
    }

    /// Item 6: device drift in any attribute the kernel reports recreates the device.
    @Test("a device whose ttl, remote, df, srcport, ageing or udpcsum drifted is recreated, naming the attribute",
          arguments: [
            (VXLANOptions.defaults.with(\.ttl, 1), "ttl 1 -> auto"),
            (VXLANOptions.defaults.with(\.remote, "198.18.0.200"), "remote 198.18.0.200 -> none"),
            (VXLANOptions.defaults.with(\.df, 1), "df set -> unset"),
            (VXLANOptions.defaults.with(\.sourcePorts, 1000...2000), "srcport 1000 2000 -> 0 0"),
            (VXLANOptions.defaults.with(\.ageing, 10), "ageing 10 -> 300"),
            (VXLANOptions.defaults.with(\.udpChecksum, false), "noudpcsum -> udpcsum"),
            (VXLANOptions.defaults.with(\.l3miss, true), "l3miss -> nol3miss"),
          ])
    func deviceDrift(options: VXLANOptions, words: String) throws {
        let desired = Fixture.desired(peers)
        var kernel = Fixture.kernel(holding: desired)
        kernel.device?.vxlan?.options = options
        let plan = try Differ.plan(desired: desired, snapshot: kernel)
        let lines = Fixture.lines(plan)
        #expect(lines.contains { $0.hasPrefix("~ link flannel.1 ") && $0.hasSuffix("(recreate: \(words))") }, "\(lines)")
    }

    @Test("an attribute an older kernel does not report is not compared")
    func unreportedAttributeIsNotDrift() throws {
        let desired = Fixture.desired(peers)
        var kernel = Fixture.kernel(holding: desired)
        kernel.device?.vxlan?.options.ttl = nil
        kernel.device?.vxlan?.options.sourcePorts = nil
        #expect(try Differ.plan(desired: desired, snapshot: kernel).isEmpty)
    }

    /// Item 7: the kernel deletes every route that uses a deleted nexthop.
    @Test("a removed peer's nexthop that something else uses is kept and reported, its route still removed")
    func nexthopInUseIsKept() throws {
        var kernel = Fixture.kernel(holding: Fixture.desired(peers))
        kernel.nexthopUsers = [1985478659: "route 10.98.0.0/24 table 100 proto static"]
        let plan = try Differ.plan(desired: Fixture.desired([Fixture.node(2)]), snapshot: kernel)
        let lines = Fixture.lines(plan)
        #expect(lines.contains("- route 10.244.3.0/24 nhid 1985478659 via 10.244.3.0 dev flannel.1 onlink"))
        #expect(!lines.contains { $0.hasPrefix("- nexthop") })
        #expect(plan.kept == ["nexthop id 1985478659 via 10.244.3.0 dev flannel.1 onlink: kept, route 10.98.0.0/24 table 100 proto static "
                              + "uses it; the agent removes it once nothing else does"])
    }

    /// Item 5: a public IP inside the pod network loops VXLAN back into the overlay;
    /// the underlay's broadcast and network addresses are no host.
    @Test("a peer whose public IP is in the pod network, or the underlay's broadcast or network address, is skipped",
          arguments: [("10.244.3.0", "is inside the pod network 10.244.0.0/16"),
                      ("198.18.0.255", "is the broadcast address of the underlay's subnet 198.18.0.0/24"),
                      ("198.18.0.0", "is the network address of the underlay's subnet 198.18.0.0/24")])
    func publicIPNotAHost(ip: String, reason: String) throws {
        let host = HostFacts(underlay: Fixture.underlay, underlayPrefixes: [IPv4Prefix("198.18.0.1/24")!])
        let bad = NodeRecord(name: "node-9", publicIP: IPv4Address(ip)!, subnet: IPv4Prefix("10.244.9.0/24")!, vtepMAC: nil)
        let desired = Fixture.desired(peers + [bad], host: host)
        #expect(desired.peerCount == 2)
        let skipped = try #require(desired.skipped.first)
        #expect(skipped.name == "node-9")
        #expect(skipped.reason.contains(reason), "\(skipped.reason)")
    }

    @Test("protocols are named as iproute2 names them")
    func protocolNames() {
        #expect(Renderer.protocolName(4) == "static")
        #expect(Renderer.protocolName(152) == "vxlan-agent")
        #expect(Renderer.protocolName(200) == "200")
    }
}

extension VXLANOptions {
    func with<T>(_ path: WritableKeyPath<VXLANOptions, T>, _ value: T) -> VXLANOptions {
        var copy = self
        copy[keyPath: path] = value
        return copy
    }
}
