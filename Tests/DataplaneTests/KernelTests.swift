import Agent
import Dataplane
import Foundation
import Model
import Netlink
import Reconcile
import Testing
import TestSupport

/// The Dataplane layer alone against the real kernel, each test in a private
/// namespace with a veth pair as underlay. Everything read back through our
/// snapshot is checked again, independently, with `ip -j` and `bridge -j`.
@Suite("Dataplane on a real kernel", kernelTests, .blocking)
struct KernelTests {
    static let proto: UInt8 = 152
    /// Failures in the plan's words, as `sync` prints them.
    static let out = PlanOutput(renderer: Renderer(deviceName: "flannel.1", proto: proto))

    /// The device and N peers' entries, as the reconciler would ask for them.
    struct Layout {
        var device: VXLANDevice
        var fdb: [FDBEntry] = []
        var neighbors: [Neighbor] = []
        var nexthops: [Nexthop] = []
        var routes: [Route] = []

        init(peers: Int, layout: RouteLayout, underlay: LinkState, vni: UInt32 = 1, local: String = "198.18.0.1", subnet: Int = 1) {
            device = VXLANDevice(name: "flannel.1", vni: vni, localIP: IPv4Address(local)!, underlayIndex: underlay.index,
                                 underlayName: underlay.name, port: 8472, learning: false, mtu: underlay.mtu - 50,
                                 mac: .vtep(vni: vni, publicIP: IPv4Address(local)!))
            for k in 0..<peers {
                let n = k + (k + 1 >= subnet ? 2 : 1)  // skip our own subnet
                let publicIP = IPv4Address(198, 19, UInt8(n / 256), UInt8(n % 256))
                let gateway = IPv4Address(10, UInt8(n / 256), UInt8(n % 256), 0)
                let mac = MACAddress.vtep(vni: vni, publicIP: publicIP)
                fdb.append(FDBEntry(mac: mac, dst: publicIP))
                neighbors.append(Neighbor(ip: gateway, mac: mac))
                let dst = IPv4Prefix(gateway, 24)
                if layout == .nexthop {
                    let id = UInt32(1_985_478_656 + n)
                    nexthops.append(Nexthop(id: id, gateway: gateway, onlink: true, proto: KernelTests.proto))
                    routes.append(Route(dst: dst, gateway: gateway, nexthopID: id, proto: KernelTests.proto))
                } else {
                    routes.append(Route(dst: dst, gateway: gateway, proto: KernelTests.proto))
                }
            }
        }

        var changes: [Change] {
            [.createDevice(device), .add(.address(IPv4Prefix(IPv4Address(10, 0, 1, 0), 32)))]
                + fdb.map { .add(.fdb($0)) } + neighbors.map { .add(.neighbor($0)) }
                + nexthops.map { .add(.nexthop($0)) } + routes.map { .add(.route($0)) }
        }
    }

    @Test("1,000 peers from empty, read back by our dump and by ip/bridge, field by field", arguments: RouteLayout.allCases)
    func thousandPeers(layout: RouteLayout) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let (report, snapshot, layoutUsed) = try host.inNamespace { () throws -> (ApplyReport, KernelSnapshot, Layout) in
            let dataplane = try Dataplane()
            let underlay = try dataplane.underlay(holding: IPv4Address("198.18.0.1")!)
            let wanted = Layout(peers: 1000, layout: layout, underlay: underlay)
            let report = dataplane.apply(wanted.changes, deviceName: "flannel.1")
            return (report, try dataplane.snapshot(deviceName: "flannel.1", proto: Self.proto), wanted)
        }
        #expect(report.failures.isEmpty, "\(report.failures.prefix(3))")
        #expect(report.writes == 2 + 1 + 1000 * (layout == .nexthop ? 4 : 3))

        // Our own dump.
        let device = try #require(snapshot.device)
        #expect(device.vxlan?.sameIdentity(as: layoutUsed.device) == true)
        #expect(device.isUp)
        #expect(device.mtu == 1450)
        #expect(device.mac == layoutUsed.device.mac)
        #expect(snapshot.addresses == [IPv4Prefix("10.0.1.0/32")!])
        #expect(Set(snapshot.fdb) == Set(layoutUsed.fdb))
        #expect(Set(snapshot.neighbors) == Set(layoutUsed.neighbors))
        #expect(Set(snapshot.nexthops.map(\.id)) == Set(layoutUsed.nexthops.map(\.id)))
        #expect(Set(snapshot.routes.map(\.dst)) == Set(layoutUsed.routes.map(\.dst)))

        // Independently, with iproute2.
        let link = try #require(try host.json("ip -j -d link show flannel.1").first)
        let info = try #require((link["linkinfo"] as? [String: Any])?["info_data"] as? [String: Any])
        #expect(info["id"] as? Int == 1)
        #expect(info["local"] as? String == "198.18.0.1")
        #expect(info["port"] as? Int == 8472)
        #expect(info["learning"] as? Bool == false)
        #expect(info["link"] as? String == "eth0")
        #expect(link["mtu"] as? Int == 1450)
        #expect(link["address"] as? String == layoutUsed.device.mac.description)

        let neighbors = try host.json("ip -j neigh show dev flannel.1")
        #expect(neighbors.count == 1000)
        let neighborMap = Dictionary(uniqueKeysWithValues: neighbors.map { ($0["dst"] as? String ?? "", $0) })
        for wanted in layoutUsed.neighbors {
            let got = neighborMap[wanted.ip.description]
            #expect(got?["lladdr"] as? String == wanted.mac.description)
            #expect((got?["state"] as? [String])?.contains("PERMANENT") == true)
        }

        let fdb = try host.json("bridge -j fdb show dev flannel.1")
        #expect(fdb.count == 1000)
        let fdbMap = Dictionary(uniqueKeysWithValues: fdb.map { ($0["mac"] as? String ?? "", $0) })
        for wanted in layoutUsed.fdb {
            let got = fdbMap[wanted.mac.description]
            #expect(got?["dst"] as? String == wanted.dst.description)
            #expect(got?["state"] as? String == "permanent")
            #expect((got?["flags"] as? [String])?.contains("self") == true)
        }

        let routes = try host.json("ip -j route show proto 152")
        #expect(routes.count == 1000)
        let routeMap = Dictionary(uniqueKeysWithValues: routes.map { ($0["dst"] as? String ?? "", $0) })
        for wanted in layoutUsed.routes {
            let got = try #require(routeMap[wanted.dst.description])
            #expect((got["flags"] as? [String])?.contains("onlink") == true)
            if let id = wanted.nexthopID {
                #expect(got["nhid"] as? Int == Int(id))
            } else {
                #expect(got["gateway"] as? String == wanted.gateway?.description)
                #expect(got["dev"] as? String == "flannel.1")
            }
        }
        if layout == .nexthop {
            let nexthops = try host.json("ip -j nexthop show proto 152")
            #expect(nexthops.count == 1000)
            let nexthopMap = Dictionary(uniqueKeysWithValues: nexthops.map { ($0["id"] as? Int ?? 0, $0) })
            for wanted in layoutUsed.nexthops {
                let got = nexthopMap[Int(wanted.id)]
                #expect(got?["gateway"] as? String == wanted.gateway?.description)
                #expect(got?["dev"] as? String == "flannel.1")
                #expect((got?["flags"] as? [String])?.contains("onlink") == true)
            }
        }
    }

    @Test("a changed MAC is replaced in place; removed entries are gone; a changed VNI recreates the device")
    func replaceDeleteRecreate() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let newMAC = MACAddress("0e:00:00:00:00:99")!
        let final = try host.inNamespace { () throws -> (KernelSnapshot, ApplyReport, ApplyReport, ApplyReport) in
            let dataplane = try Dataplane()
            let underlay = try dataplane.underlay(holding: IPv4Address("198.18.0.1")!)
            let wanted = Layout(peers: 3, layout: .nexthop, underlay: underlay)
            _ = dataplane.apply(wanted.changes, deviceName: "flannel.1")

            // MAC of the first peer changes: new FDB entry, neighbor replaced, old FDB entry removed.
            let oldFDB = wanted.fdb[0], oldNeighbor = wanted.neighbors[0]
            let macChange = dataplane.apply([
                .add(.fdb(FDBEntry(mac: newMAC, dst: oldFDB.dst))),
                .replace(from: .neighbor(oldNeighbor), to: .neighbor(Neighbor(ip: oldNeighbor.ip, mac: newMAC))),
                .remove(.fdb(oldFDB)),
            ], deviceName: "flannel.1")

            // The last peer leaves.
            let removal = dataplane.apply([
                .remove(.route(wanted.routes[2])), .remove(.nexthop(wanted.nexthops[2])),
                .remove(.neighbor(wanted.neighbors[2])), .remove(.fdb(wanted.fdb[2])),
            ], deviceName: "flannel.1")

            // The VNI changes.
            let before = try dataplane.snapshot(deviceName: "flannel.1", proto: Self.proto)
            var device = wanted.device
            device.vni = 2
            let recreate = dataplane.apply(before.routes.map { .remove(.route($0)) } + before.nexthops.map { .remove(.nexthop($0)) }
                                            + [.recreateDevice(from: before.device!, to: device)], deviceName: "flannel.1")
            return (try dataplane.snapshot(deviceName: "flannel.1", proto: Self.proto), macChange, removal, recreate)
        }
        let (after, macChange, removal, recreate) = final
        #expect(macChange.failures.isEmpty && removal.failures.isEmpty && recreate.failures.isEmpty,
                "\(macChange.failures + removal.failures + recreate.failures)")
        #expect(after.device?.vxlan?.vni == 2)
        #expect(after.device?.isUp == true)
        #expect(after.fdb.isEmpty && after.neighbors.isEmpty && after.routes.isEmpty && after.nexthops.isEmpty)
        let link = try #require(try host.json("ip -j -d link show flannel.1").first)
        #expect(((link["linkinfo"] as? [String: Any])?["info_data"] as? [String: Any])?["id"] as? Int == 2)
    }

    @Test("the MAC change, checked with ip and bridge")
    func macChangeVisible() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let newMAC = MACAddress("0e:00:00:00:00:99")!
        try host.inNamespace {
            let dataplane = try Dataplane()
            let underlay = try dataplane.underlay(holding: IPv4Address("198.18.0.1")!)
            let wanted = Layout(peers: 1, layout: .classic, underlay: underlay)
            _ = dataplane.apply(wanted.changes, deviceName: "flannel.1")
            let report = dataplane.apply([
                .add(.fdb(FDBEntry(mac: newMAC, dst: wanted.fdb[0].dst))),
                .replace(from: .neighbor(wanted.neighbors[0]), to: .neighbor(Neighbor(ip: wanted.neighbors[0].ip, mac: newMAC))),
                .remove(.fdb(wanted.fdb[0])),
            ], deviceName: "flannel.1")
            #expect(report.failures.isEmpty)
        }
        let neighbor = try #require(try host.json("ip -j neigh show dev flannel.1").first)
        #expect(neighbor["lladdr"] as? String == newMAC.description)
        let fdb = try host.json("bridge -j fdb show dev flannel.1")
        #expect(fdb.map { $0["mac"] as? String } == [newMAC.description])
    }

    struct Refusal: Sendable, CustomStringConvertible {
        var description: String
        var change: @Sendable (Int32) -> Change
        var expected: String
    }

    static let refusals: [Refusal] = [
        Refusal(description: "a route via a nexthop id that does not exist",
                change: { _ in .add(.route(Route(dst: IPv4Prefix("10.9.0.0/24")!, gateway: nil, nexthopID: 424242, proto: 152))) },
                expected: "add route 10.9.0.0/24 nhid 424242 dev flannel.1 onlink: EINVAL (Invalid argument); kernel: Nexthop id does not exist"),
        Refusal(description: "a nexthop whose gateway is not reachable without onlink",
                change: { _ in .add(.nexthop(Nexthop(id: 7, gateway: IPv4Address("10.9.9.9")!, onlink: false, proto: 152))) },
                expected: "add nexthop id 7 via 10.9.9.9 dev flannel.1: ENETUNREACH (Network is unreachable); kernel: Nexthop has invalid gateway"),
    ]

    @Test("each kind of kernel refusal comes back as a typed error with the errno name and the kernel's text",
          arguments: refusals)
    func refusal(_ refusal: Refusal) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let report = try host.inNamespace { () throws -> ApplyReport in
            let dataplane = try Dataplane()
            let underlay = try dataplane.underlay(holding: IPv4Address("198.18.0.1")!)
            let wanted = Layout(peers: 0, layout: .nexthop, underlay: underlay)
            _ = dataplane.apply(wanted.changes, deviceName: "flannel.1")
            return dataplane.apply([refusal.change(0)], deviceName: "flannel.1")
        }
        #expect(report.failures.count == 1)
        let failure = try #require(report.failures.first)
        #expect(Self.out.describe(failure).hasPrefix(refusal.expected), "got: \(Self.out.describe(failure))")
        // The cause stays typed: the kernel's refusal, its errno, not worth an immediate retry.
        guard case .refused(let error) = failure.cause else {
            Issue.record("expected a refusal, got \(failure.cause)")
            return
        }
        #expect(refusal.expected.contains(": \(error.codeName) ("))
        #expect(failure.codeName == error.codeName)
        #expect(!failure.isTransient)
    }

    @Test("each object kind on a device index that does not exist: ENODEV, mapped back to its own request")
    func missingDeviceIndex() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let failures = try host.inNamespace { () throws -> [BatchFailure] in
            let socket = try NetlinkSocket()
            let batch = Batch()
            let gateway = IPv4Address("10.0.2.0")!, mac = MACAddress("0e:00:00:00:00:02")!
            Requests.fdb(FDBEntry(mac: mac, dst: IPv4Address("198.19.0.2")!), device: 9999, .replace, into: batch)
            Requests.neighbor(Neighbor(ip: gateway, mac: mac), device: 9999, .replace, into: batch)
            Requests.nexthop(Nexthop(id: 5, gateway: gateway, proto: 152), device: 9999, .replace, into: batch)
            Requests.route(Route(dst: IPv4Prefix(gateway, 24), gateway: gateway, proto: 152), device: 9999, .replace, into: batch)
            Requests.address(IPv4Prefix(gateway, 32), device: 9999, .replace, into: batch)
            return try socket.send(batch)
        }
        #expect(failures.map(\.index) == [0, 1, 2, 3, 4])
        // The nexthop code answers EINVAL with "Invalid device index"; the others ENODEV.
        #expect(failures.map(\.error.codeName) == ["ENODEV", "ENODEV", "EINVAL", "ENODEV", "ENODEV"], "\(failures.map(\.error.description))")
        #expect(failures[2].error.description == "netlink batch: EINVAL (Invalid argument); kernel: Invalid device index")
        // Where the kernel explains itself, the text is carried.
        #expect(failures.contains { $0.error.kernelMessage != nil }, "\(failures.map(\.error.description))")
    }

    @Test("an entry on a device that does not exist: skipped with a message naming the device")
    func missingDevice() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let report = try host.inNamespace { () throws -> ApplyReport in
            try Dataplane().apply([.add(.neighbor(Neighbor(ip: IPv4Address("10.0.2.0")!, mac: MACAddress("0e:00:00:00:00:02")!)))],
                                  deviceName: "flannel.1")
        }
        #expect(report.failures.map(Self.out.describe) == ["add neigh 10.0.2.0 lladdr 0e:00:00:00:00:02 dev flannel.1: skipped, device flannel.1 does not exist"])
    }

    @Test("a batch where one request fails: the others are applied, the failure maps to its own object")
    func failureMapsBySequence() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let (report, snapshot) = try host.inNamespace { () throws -> (ApplyReport, KernelSnapshot) in
            let dataplane = try Dataplane()
            let underlay = try dataplane.underlay(holding: IPv4Address("198.18.0.1")!)
            var wanted = Layout(peers: 300, layout: .nexthop, underlay: underlay)
            // Route 150 points at a nexthop that is not there.
            wanted.routes[150].nexthopID = 999
            let report = dataplane.apply(wanted.changes, deviceName: "flannel.1")
            return (report, try dataplane.snapshot(deviceName: "flannel.1", proto: Self.proto))
        }
        #expect(report.failures.count == 1)
        #expect(report.failures.first.map(Self.out.describe)?.contains("route 10.0.152.0/24 nhid 999") == true)
        #expect(snapshot.routes.count == 299)
    }

    @Test("two hosts, this layer alone: each programs the other, ping crosses flannel.1", arguments: RouteLayout.allCases)
    func twoHostsPing(layout: RouteLayout) throws {
        try requireKernel()
        let a = try TestHost(publicIP: "198.18.0.1")
        defer { a.close() }
        let b = try TestHost(publicIP: "198.18.0.2")
        defer { b.close() }
        // Join the two underlays: move b's eth0 peer... simpler: a veth between the hosts.
        try sh("""
        ip -n \(a.namespace) link add ul0 type veth peer name ul0 netns \(b.namespace)
        ip -n \(a.namespace) addr add 198.18.1.1/24 dev ul0
        ip -n \(b.namespace) addr add 198.18.1.2/24 dev ul0
        ip -n \(a.namespace) link set ul0 up
        ip -n \(b.namespace) link set ul0 up
        """)
        func program(_ host: TestHost, local: String, own: Int, peer: (ip: String, subnet: Int)) throws {
            let failures = try host.inNamespace { () throws -> [ChangeFailure] in
                let dataplane = try Dataplane()
                let underlay = try dataplane.underlay(holding: IPv4Address(local)!)
                let device = VXLANDevice(name: "flannel.1", vni: 1, localIP: IPv4Address(local)!, underlayIndex: underlay.index,
                                         underlayName: underlay.name, mtu: underlay.mtu - 50,
                                         mac: .vtep(vni: 1, publicIP: IPv4Address(local)!))
                let peerIP = IPv4Address(peer.ip)!
                let mac = MACAddress.vtep(vni: 1, publicIP: peerIP)
                let gateway = IPv4Address(10, 244, UInt8(peer.subnet), 0)
                var changes: [Change] = [
                    .createDevice(device), .add(.address(IPv4Prefix(IPv4Address(10, 244, UInt8(own), 0), 32))),
                    .add(.fdb(FDBEntry(mac: mac, dst: peerIP))), .add(.neighbor(Neighbor(ip: gateway, mac: mac))),
                ]
                if layout == .nexthop {
                    changes.append(.add(.nexthop(Nexthop(id: 100, gateway: gateway, proto: 152))))
                    changes.append(.add(.route(Route(dst: IPv4Prefix(gateway, 24), gateway: gateway, nexthopID: 100, proto: 152))))
                } else {
                    changes.append(.add(.route(Route(dst: IPv4Prefix(gateway, 24), gateway: gateway, proto: 152))))
                }
                return dataplane.apply(changes, deviceName: "flannel.1").failures
            }
            #expect(failures.isEmpty, "\(failures)")
        }
        try program(a, local: "198.18.1.1", own: 1, peer: ("198.18.1.2", 2))
        try program(b, local: "198.18.1.2", own: 2, peer: ("198.18.1.1", 1))
        let ping = try a.exec("ping -c 2 -W 2 -I 10.244.1.0 10.244.2.0")
        #expect(ping.status == 0, "\(ping.stdout)\(ping.stderr)")
        #expect(ping.stdout.contains("2 received"))
        let back = try b.exec("ping -c 1 -W 2 -I 10.244.2.0 10.244.1.0")
        #expect(back.status == 0)
    }
}
