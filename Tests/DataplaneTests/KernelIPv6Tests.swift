import Dataplane
import Foundation
import Model
import Netlink
import Testing
import TestSupport

/// The IPv6 plane (dual stack: `flannel-v6.1`, `local` on an IPv6 underlay)
/// through the Dataplane layer alone against the real kernel, each test in a
/// private namespace. TestHost turns IPv6 off in its namespace; these tests turn
/// it on again there and give eth0 2001:2::1/64 (the IPv6 benchmarking range,
/// `nodad`). Pod networks are fd00:10:244:N::/64, only inside the namespaces.
@Suite("Dataplane on a real kernel: the IPv6 plane", kernelTests, .blocking)
struct KernelIPv6Tests {
    static let proto: UInt8 = 152
    static let name = "flannel-v6.1"
    /// The proposed range of IPv6 nexthop ids: the IPv4 base with the top bit set
    /// (ids are one space per namespace across families).
    static let idBase: UInt32 = 0xF658_0000

    /// A TestHost with IPv6 on, and `local` (2001:2::/48) on eth0.
    static func host(local: String = "2001:2::1") throws -> TestHost {
        let host = try TestHost()
        do {
            try enableIPv6(host, on: ["eth0"], address: "\(local)/64")
        } catch {
            host.close()
            throw error
        }
        return host
    }

    static func enableIPv6(_ host: TestHost, on devices: [String], address: String? = nil) throws {
        let ns = host.namespace
        try sh("""
        ip netns exec \(ns) sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 net.ipv6.conf.lo.disable_ipv6=0
        \(devices.map { "ip netns exec \(ns) sysctl -qw net.ipv6.conf.\($0).disable_ipv6=0" }.joined(separator: "\n"))
        \(address.map { "ip -n \(ns) addr add \($0) dev \(devices[0]) nodad" } ?? "")
        """)
    }

    /// This node's IPv6 plane and N peers' entries, as the reconciler would ask for them.
    struct Layout {
        var device: VXLANDevice
        var address: IPv6Prefix
        var fdb: [FDBEntry6] = []
        var neighbors: [Neighbor6] = []
        var nexthops: [Nexthop6] = []
        var routes: [Route6] = []

        init(peers: Int, layout: RouteLayout, underlay: LinkState, local: String = "2001:2::1", own: Int = 1) {
            let localIP = IPv6Address(local)!
            device = VXLANDevice(name: KernelIPv6Tests.name, vni: 1, localIP: .zero, underlayIndex: underlay.index,
                                 underlayName: underlay.name, mtu: underlay.mtu - 70, mac: .vtep(vni: 1, publicIPv6: localIP),
                                 localIPv6: localIP)
            address = IPv6Prefix(Self.gateway(own), 128)
            for n in (1...(peers + 1)) where n != own {
                let publicIP = IPv6Address(high: 0x2001_0002_0000_0000, low: UInt64(n))
                let mac = MACAddress.vtep(vni: 1, publicIPv6: publicIP)
                let gateway = Self.gateway(n)
                fdb.append(FDBEntry6(mac: mac, dst: publicIP))
                neighbors.append(Neighbor6(ip: gateway, mac: mac))
                // The kernel stores an IPv6 route of metric 0 at 1024: the agent says 1024.
                if layout == .nexthop {
                    let id = KernelIPv6Tests.idBase + UInt32(n)
                    nexthops.append(Nexthop6(id: id, gateway: gateway, onlink: true, proto: KernelIPv6Tests.proto))
                    routes.append(Route6(dst: IPv6Prefix(gateway, 64), gateway: gateway, nexthopID: id, proto: KernelIPv6Tests.proto,
                                         priority: 1024))
                } else {
                    routes.append(Route6(dst: IPv6Prefix(gateway, 64), gateway: gateway, proto: KernelIPv6Tests.proto, priority: 1024))
                }
            }
        }

        /// fd00:10:244:N::
        static func gateway(_ n: Int) -> IPv6Address { IPv6Address(high: 0xfd00_0010_0244_0000 | UInt64(n), low: 0) }

        var changes: [Change6] {
            [.createDevice(device), .add(.address(address))]
                + fdb.map { .add(.fdb($0)) } + neighbors.map { .add(.neighbor($0)) }
                + nexthops.map { .add(.nexthop($0)) } + routes.map { .add(.route($0)) }
        }
    }

    /// What of the snapshot a test compares: nexthops and routes without the
    /// device index and gateway the kernel reports back for a route by nexthop id.
    static func shape(_ routes: [Route6]) -> Set<String> {
        Set(routes.map { "\($0.dst) metric \($0.priority) " + ($0.nexthopID.map { "nhid \($0)" } ?? "via \($0.gateway.map { "\($0)" } ?? "-")") })
    }
    static func shape(_ nexthops: [Nexthop6]) -> Set<String> {
        Set(nexthops.map { "\($0.id) via \($0.gateway.map { "\($0)" } ?? "-") onlink \($0.onlink) proto \($0.proto)" })
    }

    @Test("a plan of IPv6 entries from empty, read back exactly by our dump and by ip -6/bridge", arguments: RouteLayout.allCases)
    func fromEmpty(layout: RouteLayout) throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        let (report, snapshot, wanted, acceptRA) = try host.inNamespace { () throws -> (ApplyReport6, KernelSnapshot6, Layout, Int?) in
            let dataplane = try Dataplane()
            let underlay = try dataplane.underlay(holding: IPv6Address("2001:2::1")!)
            let wanted = Layout(peers: 200, layout: layout, underlay: underlay)
            let report = dataplane.apply(wanted.changes, deviceName: Self.name)
            return (report, try dataplane.snapshot6(deviceName: Self.name, proto: Self.proto), wanted, Dataplane.acceptRA(Self.name))
        }
        #expect(report.failures.isEmpty, "\(report.failures.prefix(3))")
        #expect(report.writes == 1 + 1 + 1 + 200 * (layout == .nexthop ? 4 : 3))
        #expect(acceptRA == 0, "flanneld turns accept_ra off on its devices")

        let device = try #require(snapshot.device)
        #expect(device.vxlan?.sameIdentity(as: wanted.device) == true, "\(String(describing: device.vxlan))")
        #expect(device.vxlan?.localIPv6 == IPv6Address("2001:2::1"))
        #expect(device.isUp)
        #expect(device.mtu == 1430)
        #expect(device.mac == wanted.device.mac)
        // Not the kernel's fe80:: address.
        #expect(snapshot.addresses == [wanted.address])
        #expect(Set(snapshot.fdb) == Set(wanted.fdb))
        #expect(Set(snapshot.neighbors) == Set(wanted.neighbors))
        #expect(Self.shape(snapshot.nexthops) == Self.shape(wanted.nexthops))
        // Not the kernel's fe80::/64 and fd00:10:244:1::/128 on the device.
        #expect(Self.shape(snapshot.routes) == Self.shape(wanted.routes))
        #expect(snapshot.routes.count == 200)
        // The underlay's 2001:2::/64 and fe80::/64 are someone else's.
        #expect(snapshot.foreignRoutes.contains { $0.dst == IPv6Prefix("2001:2::/64")! })

        // Independently, with iproute2.
        let link = try #require(try host.json("ip -j -d link show \(Self.name)").first)
        let info = try #require((link["linkinfo"] as? [String: Any])?["info_data"] as? [String: Any])
        #expect(info["id"] as? Int == 1)
        #expect(info["local6"] as? String == "2001:2::1")
        #expect(info["port"] as? Int == 8472)
        #expect(info["learning"] as? Bool == false)
        #expect(info["link"] as? String == "eth0")
        #expect(link["mtu"] as? Int == 1430)
        #expect(try host.exec("cat /proc/sys/net/ipv6/conf/\(Self.name)/accept_ra").stdout == "0\n")
        let addresses = try host.json("ip -j -6 addr show dev \(Self.name) scope global")
        // (iproute2 leaves an empty object for each address the scope filter drops.)
        let local = (addresses.first?["addr_info"] as? [[String: Any]])?.compactMap { info in
            (info["local"] as? String).map { "\($0)/\(info["prefixlen"] ?? "")" }
        }
        #expect(local == ["fd00:10:244:1::/128"])

        let neighbors = try host.json("ip -j -6 neigh show dev \(Self.name) nud permanent")
        #expect(neighbors.count == 200)
        let neighborMap = Dictionary(neighbors.map { ($0["dst"] as? String ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        for neighbor in wanted.neighbors {
            #expect(neighborMap["\(neighbor.ip)"]?["lladdr"] as? String == "\(neighbor.mac)")
        }
        let fdb = try host.json("bridge -j fdb show dev \(Self.name)")
        #expect(fdb.count == 200)
        let fdbMap = Dictionary(fdb.map { ($0["mac"] as? String ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        for entry in wanted.fdb {
            #expect(fdbMap["\(entry.mac)"]?["dst"] as? String == "\(entry.dst)")
            #expect(fdbMap["\(entry.mac)"]?["state"] as? String == "permanent")
        }
        let routes = try host.json("ip -j -6 route show proto 152")
        #expect(routes.count == 200)
        let routeMap = Dictionary(routes.map { ($0["dst"] as? String ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        for route in wanted.routes {
            let got = try #require(routeMap["\(route.dst)"])
            #expect(got["metric"] as? Int == 1024)
            #expect(got["gateway"] as? String == route.gateway.map { "\($0)" })
            #expect(got["dev"] as? String == Self.name)
            #expect((got["flags"] as? [String])?.contains("onlink") == true)
            if let id = route.nexthopID { #expect(got["nhid"] as? Int == Int(id)) }
        }
        if layout == .nexthop {
            let nexthops = try host.json("ip -j -6 nexthop show proto 152")
            #expect(nexthops.count == 200)
            #expect(Set(nexthops.compactMap { $0["id"] as? Int }) == Set(wanted.nexthops.map { Int($0.id) }))
        }
    }

    @Test("the kernel's own entries on the IPv6 device (fe80::/64, NDP entries, multicast neighbors) are never ours")
    func kernelEntriesAreNotOurs() throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        let wanted = try host.inNamespace { () throws -> Layout in
            let dataplane = try Dataplane()
            let wanted = Layout(peers: 3, layout: .nexthop, underlay: try dataplane.underlay(holding: IPv6Address("2001:2::1")!))
            let report = dataplane.apply(wanted.changes, deviceName: Self.name)
            #expect(report.failures.isEmpty, "\(report.failures)")
            return wanted
        }
        // NDP's work: an entry being resolved (a link-local neighbor that never
        // answers; the ping can go once the device's link-local address has passed
        // DAD), and the multicast entries MLD leaves; and one that ages.
        _ = try host.exec("""
            bash -c 'for i in $(seq 40); do ping -6 -c 1 -W 1 -I \(Self.name) fe80::1 >/dev/null 2>&1
              ip -6 neigh show dev \(Self.name) | grep -q "^fe80::1 " && break; sleep 0.25; done'
            """)
        try sh("ip -n \(host.namespace) -6 neigh replace fd00:10:244:9::1 lladdr 0a:01:00:00:00:09 dev \(Self.name) nud stale")
        let kernel = try host.exec("ip -6 neigh show nud all dev \(Self.name)").stdout
        #expect(kernel.contains("fe80::1 "), "no NDP entry to ignore: \(kernel)")
        #expect(kernel.contains("STALE") && kernel.contains("NOARP"), "\(kernel)")
        let kernelRoutes = try host.exec("ip -6 route show dev \(Self.name) proto kernel").stdout
        #expect(kernelRoutes.contains("fe80::/64") && kernelRoutes.contains("fd00:10:244:1::"), "\(kernelRoutes)")

        let snapshot = try host.inNamespace { try Dataplane().snapshot6(deviceName: Self.name, proto: Self.proto) }
        #expect(Set(snapshot.neighbors) == Set(wanted.neighbors))
        #expect(Self.shape(snapshot.routes) == Self.shape(wanted.routes))
        #expect(snapshot.addresses == [wanted.address])
    }

    @Test("tampering with ip -6 route del, ip -6 neigh del, bridge fdb del and a stray route shows in the snapshot; the repair restores it")
    func tampering() throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        let wanted = try host.inNamespace { () throws -> Layout in
            let dataplane = try Dataplane()
            let wanted = Layout(peers: 6, layout: .nexthop, underlay: try dataplane.underlay(holding: IPv6Address("2001:2::1")!))
            let report = dataplane.apply(wanted.changes, deviceName: Self.name)
            #expect(report.failures.isEmpty, "\(report.failures)")
            return wanted
        }
        let ns = host.namespace
        let route = wanted.routes[1], neighbor = wanted.neighbors[2], fdb = wanted.fdb[3], nexthop = wanted.nexthops[4]
        try sh("""
        ip -n \(ns) -6 route del \(route.dst) proto 152 metric 1024
        ip -n \(ns) -6 neigh del \(neighbor.ip) dev \(Self.name)
        bridge -n \(ns) fdb del \(fdb.mac) dev \(Self.name) dst \(fdb.dst) self
        ip -n \(ns) -6 route del \(wanted.routes[4].dst) proto 152 metric 1024
        ip -n \(ns) nexthop del id \(nexthop.id)
        ip -n \(ns) -6 route add fd00:10:244:77::/64 dev \(Self.name)
        ip -n \(ns) -6 route add 2001:2:0:99::/64 via 2001:2::fe dev eth0
        """)
        let (tampered, report, repaired) = try host.inNamespace { () throws -> (KernelSnapshot6, ApplyReport6, KernelSnapshot6) in
            let dataplane = try Dataplane()
            let tampered = try dataplane.snapshot6(deviceName: Self.name, proto: Self.proto)
            let stray = try #require(tampered.routes.first { $0.dst == IPv6Prefix("fd00:10:244:77::/64")! })
            let report = dataplane.apply([
                .add(.fdb(fdb)), .add(.neighbor(neighbor)), .add(.nexthop(nexthop)), .add(.route(route)), .add(.route(wanted.routes[4])),
                .remove(.route(stray)),
            ], deviceName: Self.name)
            return (tampered, report, try dataplane.snapshot6(deviceName: Self.name, proto: Self.proto))
        }
        // Exactly what was deleted is missing; the stray route on our device is there to remove.
        #expect(Self.shape(tampered.routes) == Self.shape(wanted.routes.filter { $0 != route && $0 != wanted.routes[4] })
            .union(["fd00:10:244:77::/64 metric 1024 via -"]))
        #expect(Set(tampered.neighbors) == Set(wanted.neighbors.filter { $0 != neighbor }))
        #expect(Set(tampered.fdb) == Set(wanted.fdb.filter { $0 != fdb }))
        #expect(Self.shape(tampered.nexthops) == Self.shape(wanted.nexthops.filter { $0 != nexthop }))
        // Someone else's route elsewhere is foreign, never ours.
        #expect(tampered.foreignRoutes.contains { $0.dst == IPv6Prefix("2001:2:0:99::/64")! })

        #expect(report.failures.isEmpty, "\(report.failures)")
        #expect(report.writes == 6)
        #expect(Self.shape(repaired.routes) == Self.shape(wanted.routes))
        #expect(Set(repaired.neighbors) == Set(wanted.neighbors))
        #expect(Set(repaired.fdb) == Set(wanted.fdb))
        #expect(Self.shape(repaired.nexthops) == Self.shape(wanted.nexthops))
        #expect(try host.exec("ip -6 route show fd00:10:244:77::/64").stdout.isEmpty)
    }

    @Test("a changed MAC is replaced in place, a peer that left is removed in order, a new local address recreates the device")
    func replaceRemoveRecreate() throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        try sh("ip -n \(host.namespace) addr add 2001:2::11/64 dev eth0 nodad")
        let newMAC = MACAddress("0a:00:00:00:00:99")!
        let (after, reports) = try host.inNamespace { () throws -> (KernelSnapshot6, [ApplyReport6]) in
            let dataplane = try Dataplane()
            let wanted = Layout(peers: 3, layout: .nexthop, underlay: try dataplane.underlay(holding: IPv6Address("2001:2::1")!))
            var reports = [dataplane.apply(wanted.changes, deviceName: Self.name)]
            reports.append(dataplane.apply([
                .add(.fdb(FDBEntry6(mac: newMAC, dst: wanted.fdb[0].dst))),
                .replace(from: .neighbor(wanted.neighbors[0]), to: .neighbor(Neighbor6(ip: wanted.neighbors[0].ip, mac: newMAC))),
                .remove(.fdb(wanted.fdb[0])),
            ], deviceName: Self.name))
            reports.append(dataplane.apply([
                .remove(.route(wanted.routes[2])), .remove(.nexthop(wanted.nexthops[2])),
                .remove(.neighbor(wanted.neighbors[2])), .remove(.fdb(wanted.fdb[2])),
            ], deviceName: Self.name))
            let before = try dataplane.snapshot6(deviceName: Self.name, proto: Self.proto)
            var device = wanted.device
            device.localIPv6 = IPv6Address("2001:2::11")!
            reports.append(dataplane.apply(before.routes.map { .remove(.route($0)) } + before.nexthops.map { .remove(.nexthop($0)) }
                                           + [.recreateDevice(from: before.device!, to: device)], deviceName: Self.name))
            return (try dataplane.snapshot6(deviceName: Self.name, proto: Self.proto), reports)
        }
        #expect(reports.allSatisfy { $0.failures.isEmpty }, "\(reports.flatMap(\.failures))")
        #expect(after.device?.vxlan?.localIPv6 == IPv6Address("2001:2::11"))
        #expect(after.device?.isUp == true)
        #expect(after.fdb.isEmpty && after.neighbors.isEmpty && after.routes.isEmpty && after.nexthops.isEmpty)
        // The recreated device has accept_ra off again.
        #expect(try host.exec("cat /proc/sys/net/ipv6/conf/\(Self.name)/accept_ra").stdout == "0\n")
        let link = try #require(try host.json("ip -j -d link show \(Self.name)").first)
        #expect(((link["linkinfo"] as? [String: Any])?["info_data"] as? [String: Any])?["local6"] as? String == "2001:2::11")
    }

    @Test("IPv4 and IPv6 planes side by side: each snapshot sees only its own nexthops, routes, neighbors and FDB entries")
    func planesApart() throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        let (v4, v6, wanted6) = try host.inNamespace { () throws -> (KernelSnapshot, KernelSnapshot6, Layout) in
            let dataplane = try Dataplane()
            let wanted6 = Layout(peers: 2, layout: .nexthop, underlay: try dataplane.underlay(holding: IPv6Address("2001:2::1")!))
            let underlay = try dataplane.underlay(holding: IPv4Address("198.18.0.1")!)
            let gateway = IPv4Address("10.244.2.0")!, mac = MACAddress("0e:01:c6:13:00:02")!
            let v4: [Change] = [
                .createDevice(VXLANDevice(name: "flannel.1", vni: 1, localIP: IPv4Address("198.18.0.1")!, underlayIndex: underlay.index,
                                          underlayName: underlay.name, mtu: underlay.mtu - 50, mac: .vtep(vni: 1, publicIP: IPv4Address("198.18.0.1")!))),
                .add(.address(IPv4Prefix("10.244.1.0/32")!)),
                .add(.fdb(FDBEntry(mac: mac, dst: IPv4Address("198.19.0.2")!))), .add(.neighbor(Neighbor(ip: gateway, mac: mac))),
                .add(.nexthop(Nexthop(id: 0x7658_0002, gateway: gateway, proto: Self.proto))),
                .add(.route(Route(dst: IPv4Prefix(gateway, 24), gateway: gateway, nexthopID: 0x7658_0002, proto: Self.proto))),
            ]
            let r4 = dataplane.apply(v4, deviceName: "flannel.1")
            let r6 = dataplane.apply(wanted6.changes, deviceName: Self.name)
            #expect(r4.failures.isEmpty && r6.failures.isEmpty, "\(r4.failures) \(r6.failures)")
            return (try dataplane.snapshot(deviceName: "flannel.1", proto: Self.proto),
                    try dataplane.snapshot6(deviceName: Self.name, proto: Self.proto), wanted6)
        }
        #expect(v4.nexthops.map(\.id) == [0x7658_0002])
        #expect(v4.routes.map(\.dst) == [IPv4Prefix("10.244.2.0/24")!])
        #expect(v4.neighbors.count == 1 && v4.fdb.count == 1)
        #expect(Self.shape(v6.nexthops) == Self.shape(wanted6.nexthops))
        #expect(Self.shape(v6.routes) == Self.shape(wanted6.routes))
        #expect(Set(v6.neighbors) == Set(wanted6.neighbors))
        #expect(Set(v6.fdb) == Set(wanted6.fdb))
    }

    @Test("kernel events on the IPv6 plane parse into IPv6 objects; NDP's own entries are no event")
    func events() throws {
        try requireKernel()
        let host = try Self.host()
        defer { host.close() }
        let ns = host.namespace
        let events = try host.inNamespace { () throws -> [KernelEvent6] in
            let dataplane = try Dataplane()
            let wanted = Layout(peers: 2, layout: .nexthop, underlay: try dataplane.underlay(holding: IPv6Address("2001:2::1")!))
            let report = dataplane.apply(wanted.changes, deviceName: Self.name)
            #expect(report.failures.isEmpty, "\(report.failures)")
            let index = try #require(report.deviceIndex)
            let monitor = try NetlinkSocket()
            for group in kernelEventGroups6 { try monitor.subscribe(group: group) }
            let parser = KernelEvents(deviceName: Self.name, deviceIndex: index, proto: Self.proto, ownPort: 0)
            try sh("""
            ip -n \(ns) -6 route del \(wanted.routes[0].dst) proto 152 metric 1024
            ip -n \(ns) nexthop del id \(wanted.nexthops[0].id)
            ip -n \(ns) -6 neigh del \(wanted.neighbors[0].ip) dev \(Self.name)
            bridge -n \(ns) fdb del \(wanted.fdb[0].mac) dev \(Self.name) dst \(wanted.fdb[0].dst) self
            ip -n \(ns) -6 neigh replace fd00:10:244:9::1 lladdr 0a:01:00:00:00:09 dev \(Self.name) nud reachable
            ip -n \(ns) -6 route add fd00:10:244:77::/64 dev \(Self.name) metric 1024
            """)
            var events: [KernelEvent6] = []
            // Everything was sent before the commands returned: drain until quiet.
            while try monitor.receiveEvents(timeoutMilliseconds: 500, { message in
                if let event = parser.parse6(message) { events.append(event) }
            }) {}
            return events
        }
        let deleted = events.filter(\.deleted).compactMap { event -> String? in
            guard case .entry(let entry) = event.subject else { return nil }
            return entry.kind
        }
        #expect(Set(deleted) == ["route", "nexthop", "neigh", "fdb"], "\(events)")
        #expect(events.contains { event in
            if case .entry(.route(let r)) = event.subject { return event.deleted && r.dst == IPv6Prefix("fd00:10:244:2::/64")! && r.priority == 1024 }
            return false
        })
        #expect(events.contains { event in
            if case .entry(.fdb(let f)) = event.subject { return event.deleted && f.dst == IPv6Address("2001:2::2")! }
            return false
        })
        #expect(events.contains { event in
            if case .entry(.route(let r)) = event.subject { return !event.deleted && r.dst == IPv6Prefix("fd00:10:244:77::/64")! }
            return false
        }, "a stray route on our device is an event")
        #expect(!events.contains { event in
            if case .entry(.neighbor(let n)) = event.subject { return n.ip == IPv6Address("fd00:10:244:9::1")! }
            return false
        }, "an NDP entry that is not permanent is the kernel's")
    }

    @Test("two hosts, this layer alone, over an IPv6 underlay: each programs the other, ping -6 crosses flannel-v6.1",
          arguments: RouteLayout.allCases)
    func twoHostsPing(layout: RouteLayout) throws {
        try requireKernel()
        let a = try Self.host(local: "2001:2::1")
        defer { a.close() }
        let b = try Self.host(local: "2001:2::2")
        defer { b.close() }
        // A veth between the two namespaces is the segment they share.
        try sh("""
        ip -n \(a.namespace) link add ul0 type veth peer name ul0 netns \(b.namespace)
        ip -n \(a.namespace) addr add 2001:2:1::1/64 dev ul0 nodad
        ip -n \(b.namespace) addr add 2001:2:1::2/64 dev ul0 nodad
        ip -n \(a.namespace) link set ul0 up
        ip -n \(b.namespace) link set ul0 up
        """)
        func program(_ host: TestHost, local: String, own: Int, peer: (ip: String, subnet: Int)) throws {
            let failures = try host.inNamespace { () throws -> [ChangeFailure6] in
                let dataplane = try Dataplane()
                let localIP = IPv6Address(local)!
                let underlay = try dataplane.underlay(holding: localIP)
                let device = VXLANDevice(name: Self.name, vni: 1, localIP: .zero, underlayIndex: underlay.index,
                                         underlayName: underlay.name, mtu: underlay.mtu - 70, mac: .vtep(vni: 1, publicIPv6: localIP),
                                         localIPv6: localIP)
                let peerIP = IPv6Address(peer.ip)!
                let mac = MACAddress.vtep(vni: 1, publicIPv6: peerIP)
                let gateway = Layout.gateway(peer.subnet)
                var changes: [Change6] = [
                    .createDevice(device), .add(.address(IPv6Prefix(Layout.gateway(own), 128))),
                    .add(.fdb(FDBEntry6(mac: mac, dst: peerIP))), .add(.neighbor(Neighbor6(ip: gateway, mac: mac))),
                ]
                if layout == .nexthop {
                    changes.append(.add(.nexthop(Nexthop6(id: Self.idBase + 100, gateway: gateway, proto: Self.proto))))
                    changes.append(.add(.route(Route6(dst: IPv6Prefix(gateway, 64), gateway: gateway, nexthopID: Self.idBase + 100,
                                                      proto: Self.proto, priority: 1024))))
                } else {
                    changes.append(.add(.route(Route6(dst: IPv6Prefix(gateway, 64), gateway: gateway, proto: Self.proto, priority: 1024))))
                }
                return dataplane.apply(changes, deviceName: Self.name).failures
            }
            #expect(failures.isEmpty, "\(failures)")
        }
        try program(a, local: "2001:2:1::1", own: 1, peer: ("2001:2:1::2", 2))
        try program(b, local: "2001:2:1::2", own: 2, peer: ("2001:2:1::1", 1))
        // The /128 goes through DAD first (as flanneld's does): wait for it, generously.
        let wait = """
            bash -c 'for i in $(seq 40); do ip -6 addr show dev \(Self.name) tentative | grep -q inet6 || exit 0; sleep 0.25; done; exit 1'
            """
        #expect(try a.exec(wait).status == 0 && b.exec(wait).status == 0, "an address stayed tentative")
        let ping = try a.exec("ping -6 -c 2 -W 2 -I fd00:10:244:1:: fd00:10:244:2::")
        #expect(ping.status == 0, "\(ping.stdout)\(ping.stderr)")
        #expect(ping.stdout.contains("2 received"))
        let back = try b.exec("ping -6 -c 1 -W 2 -I fd00:10:244:2:: fd00:10:244:1::")
        #expect(back.status == 0, "\(back.stdout)\(back.stderr)")
    }
}
