import Foundation
import Testing
import TestSupport

/// The kernel-tampering family of the hardening suite: every kind of entry the
/// agent owns, changed, added or removed behind its back, and every VXLAN device
/// attribute the kernel reports, drifted. For each: `diff` names the change
/// (exit 2), one `sync` repairs it (exit 0), the next `diff` is empty, and what
/// `ip`/`bridge` show is byte for byte what it was after the first sync.
@Suite("Hardening: kernel tampering is seen and repaired", kernelTests, .blocking)
struct TamperingTests {
    struct Case: Sendable, CustomStringConvertible {
        var description: String
        /// Run in the host's namespace (bash) after the first sync.
        var command: String
        /// A line (or part of one) the dry-run must print.
        var expected: String
    }

    /// Peer node-2: VTEP MAC 0e:01:c6:13:00:02, public IP 198.19.0.2, subnet 10.244.2.0/24.
    static let peerMAC = "0e:01:c6:13:00:02"
    static let recreate = "ip link del flannel.1 && ip link add flannel.1 type vxlan id 1 local 198.18.0.1 dev eth0 dstport 8472 nolearning"

    /// Item 1: an FDB entry whose port, VNI or underlay differs from the device's is
    /// not in sync (traffic to that peer would be black-holed), and is replaced.
    static let fdbIdentity: [Case] = [
        Case(description: "a peer's FDB entry with another UDP port",
             command: "bridge fdb replace \(peerMAC) dev flannel.1 dst 198.19.0.2 port 9999 self permanent",
             expected: "~ fdb \(peerMAC) dev flannel.1 dst 198.19.0.2 (was: port 9999)"),
        Case(description: "a peer's FDB entry with another VNI",
             command: "bridge fdb replace \(peerMAC) dev flannel.1 dst 198.19.0.2 vni 55 self permanent",
             expected: "~ fdb \(peerMAC) dev flannel.1 dst 198.19.0.2 (was: vni 55)"),
        Case(description: "a peer's FDB entry pinned to lo",
             command: "bridge fdb replace \(peerMAC) dev flannel.1 dst 198.19.0.2 via lo self permanent",
             expected: "~ fdb \(peerMAC) dev flannel.1 dst 198.19.0.2 (was: via if1)"),
        Case(description: "a peer's FDB entry with another port, VNI and destination at once",
             command: "bridge fdb replace \(peerMAC) dev flannel.1 dst 198.19.9.9 port 4789 vni 7 self permanent",
             expected: "~ fdb \(peerMAC) dev flannel.1 dst 198.19.0.2 (was: dst 198.19.9.9 port 4789 vni 7)"),
    ]

    /// Item 2: strays that carry port, VNI or via are deleted for real (the delete
    /// names every attribute the kernel keys a remote by), and so is a flood entry.
    static let strays: [Case] = [
        Case(description: "a stray FDB entry with port 4789",
             command: "bridge fdb add 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99 port 4789 self permanent",
             expected: "- fdb 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99 port 4789"),
        Case(description: "a stray FDB entry with vni 77",
             command: "bridge fdb add 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99 vni 77 self permanent",
             expected: "- fdb 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99 vni 77"),
        Case(description: "a stray FDB entry via eth0",
             command: "bridge fdb add 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99 via eth0 self permanent",
             expected: "- fdb 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99 via if"),
        Case(description: "an all-zero flood entry (broadcast to a host outside the cluster)",
             command: "bridge fdb append 00:00:00:00:00:00 dev flannel.1 dst 198.18.0.200 self permanent",
             expected: "- fdb 00:00:00:00:00:00 dev flannel.1 dst 198.18.0.200"),
        Case(description: "a stray permanent neighbor",
             command: "ip neigh add 10.244.99.0 lladdr 0e:00:00:00:00:99 dev flannel.1 nud permanent",
             expected: "- neigh 10.244.99.0 lladdr 0e:00:00:00:00:99 dev flannel.1"),
        Case(description: "a stray address on flannel.1",
             command: "ip addr add 10.244.1.7/24 dev flannel.1",
             expected: "- address 10.244.1.7/24 dev flannel.1"),
        Case(description: "a stray route of ours (our protocol, on eth0)",
             command: "ip route add 10.244.98.0/24 via 198.18.0.9 dev eth0 proto 152",
             expected: "- route 10.244.98.0/24 via 198.18.0.9 dev eth0"),
        Case(description: "a stray nexthop of ours",
             command: "ip nexthop add id 1985478755 via 10.244.99.0 dev flannel.1 onlink proto 152",
             expected: "- nexthop id 1985478755 via 10.244.99.0 dev flannel.1 onlink"),
        Case(description: "a static route on flannel.1",
             command: "ip route add 10.244.77.0/24 dev flannel.1 proto static",
             expected: "- route 10.244.77.0/24 dev flannel.1 proto static"),
    ]

    /// Changed entries of every kind.
    static let changed: [Case] = [
        Case(description: "a neighbor with another MAC",
             command: "ip neigh replace 10.244.2.0 lladdr 0e:00:00:00:00:42 dev flannel.1 nud permanent",
             expected: "~ neigh 10.244.2.0 lladdr \(peerMAC) dev flannel.1 (was: lladdr 0e:00:00:00:00:42)"),
        Case(description: "a neighbor made reachable (not permanent)",
             command: "ip neigh replace 10.244.2.0 lladdr \(peerMAC) dev flannel.1 nud reachable",
             expected: "~ neigh 10.244.2.0 lladdr \(peerMAC) dev flannel.1 (was: not permanent)"),
        Case(description: "a nexthop pointed at another gateway",
             command: "ip nexthop replace id 1985478658 via 10.244.9.0 dev flannel.1 onlink proto 152",
             expected: "~ nexthop id 1985478658 via 10.244.2.0 dev flannel.1 onlink"),
        Case(description: "a route replaced by a static one",
             command: "ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto static",
             expected: "~ route 10.244.2.0/24 nhid 1985478658"),
        Case(description: "a route deleted", command: "ip route del 10.244.3.0/24",
             expected: "+ route 10.244.3.0/24 nhid 1985478659"),
        Case(description: "a nexthop deleted (the kernel takes its route with it)", command: "ip nexthop del id 1985478659",
             expected: "+ nexthop id 1985478659 via 10.244.3.0 dev flannel.1 onlink"),
        Case(description: "the VTEP address deleted", command: "ip addr del 10.244.1.0/32 dev flannel.1",
             expected: "+ address 10.244.1.0/32 dev flannel.1"),
        Case(description: "the device's MAC changed", command: "ip link set flannel.1 address 0e:00:00:00:00:01",
             expected: "~ link flannel.1 address 0e:00:00:00:00:01 -> 0e:01:c6:12:00:01"),
    ]

    /// Item 6: every VXLAN attribute the kernel reports, drifted. The device is
    /// recreated with it (the kernel changes only some in place; a recreate is one
    /// path for all), and the dry-run names the attribute in iproute2's words.
    static let deviceDrift: [Case] = [
        ("ttl 1", "ttl 1 -> auto"), ("tos 16", "tos 0x16 -> 0"), ("tos inherit", "tos inherit -> 0"),
        ("df set", "df set -> unset"), ("df inherit", "df inherit -> unset"),
        ("srcport 1000 2000", "srcport 1000 2000 -> 0 0"), ("noudpcsum", "noudpcsum -> udpcsum"),
        ("proxy", "noproxy"), ("rsc", "norsc"), ("l2miss", "nol2miss"), ("l3miss", "nol3miss"),
        ("ageing 10", "ageing 10 -> 300"), ("maxaddress 5", "maxaddress 5 -> unlimited"), ("gbp", "gbp -> nogbp"),
        ("remote 198.18.0.200", "remote 198.18.0.200 -> none"), ("group 239.1.1.1", "remote 239.1.1.1 -> none"),
        ("ttl inherit", "ttl inherit -> ttl fixed"), ("remcsumtx", "remcsumtx -> noremcsumtx"),
        ("remcsumrx", "remcsumrx -> noremcsumrx"), ("udp6zerocsumtx", "udp6zerocsumtx -> noudp6zerocsumtx"),
        ("udp6zerocsumrx", "udp6zerocsumrx -> noudp6zerocsumrx"),
    ].map { option, words in
        Case(description: "flannel.1 recreated with \(option)", command: "\(recreate) \(option)", expected: words)
    } + [
        Case(description: "flannel.1 recreated with learning",
             command: recreate.replacingOccurrences(of: " nolearning", with: " learning"), expected: "learning -> nolearning"),
        Case(description: "flannel.1 recreated with dstport 4789",
             command: recreate.replacingOccurrences(of: "dstport 8472", with: "dstport 4789"), expected: "dstport 4789 -> 8472"),
        Case(description: "flannel.1 recreated without an underlay",
             command: recreate.replacingOccurrences(of: " dev eth0", with: ""), expected: "(recreate: dev"),
        Case(description: "flannel.1 recreated with another local address",
             command: recreate.replacingOccurrences(of: "local 198.18.0.1", with: "local 198.18.0.77"),
             expected: "(recreate: local 198.18.0.77 -> 198.18.0.1"),
        Case(description: "flannel.1 replaced by a device made with the kernel's defaults (learning on, no local)",
             command: "ip link del flannel.1 && ip link add flannel.1 type vxlan id 1 dstport 8472", expected: "(recreate:"),
    ]

    static let all = fdbIdentity + strays + changed + deviceDrift

    @Test("tampered state is named by diff and repaired by one sync, byte for byte", arguments: all)
    func repaired(_ tamper: Case) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try host.write("inv.json", inventory(peers: 4))
        let first = try host.agent("sync --config \(config)")
        try #require(first.status == 0, "\(first.stdout) \(first.stderr)")
        let pristine = try host.kernelState()

        try sh("ip netns exec \(host.namespace) bash -ec '\(tamper.command)'")
        #expect(try host.kernelStateDifference(settlingTo: pristine, seconds: 0) != nil, "the tampering command changed nothing: the case tests nothing")
        let dry = try host.agent("diff --config \(config)")
        #expect(dry.status == 2, "diff must report pending changes: \(dry.stdout) \(dry.stderr)")
        #expect(dry.stdout.contains(tamper.expected), "expected `\(tamper.expected)` in:\n\(dry.stdout)")

        let repair = try host.agent("sync --config \(config)")
        #expect(repair.status == 0, "\(repair.stdout) \(repair.stderr)")
        let after = try host.agent("diff --config \(config)")
        #expect(after.status == 0, "one sync must converge: \(after.stdout)")
        let difference = try host.kernelStateDifference(settlingTo: pristine)
        #expect(difference == nil, "\(difference ?? "")")
    }

    @Test("a flannel.1 created by hand with a remote is not adopted: it is recreated without the flood entry")
    func deviceWithRemoteIsRecreated() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        try host.exec("ip link add flannel.1 type vxlan id 1 local 198.18.0.1 dev eth0 dstport 8472 nolearning remote 198.18.0.200")
            .requireSuccess()
        #expect(try host.exec("bridge fdb show dev flannel.1").stdout.contains("00:00:00:00:00:00 dst 198.18.0.200"))
        let config = try host.write("inv.json", inventory(peers: 2))
        let dry = try host.agent("diff --config \(config)")
        #expect(dry.stdout.contains("(recreate: remote 198.18.0.200 -> none)"), "\(dry.stdout)")
        #expect(try host.agent("sync --config \(config)").status == 0)
        #expect(!(try host.exec("bridge fdb show dev flannel.1").stdout.contains("198.18.0.200")))
        #expect(try host.agent("diff --config \(config)").status == 0)
    }

    /// Item 7: deleting a nexthop makes the kernel delete every route that uses it
    /// and shrink every group that holds it, whoever owns them.
    @Test("a removed peer's nexthop that a foreign route (table 100) or group uses is kept, and said so")
    func nexthopInUseIsKept() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        #expect(try host.agent("sync --config \(try host.write("a.json", inventory(peers: 3)))").status == 0)
        // Someone else's policy route and group on our nexthops of node-3 and node-4.
        try host.exec("""
        bash -ec 'ip route add 10.98.0.0/24 nhid 1985478659 table 100 proto static
                  ip nexthop add id 4242 group 1985478659/1985478660 proto static
                  ip route add 10.97.0.0/24 nhid 4242 proto static'
        """).requireSuccess()
        let config = try host.write("b.json", inventory(peers: 3, skip: [3, 4]))
        let dry = try host.agent("diff --config \(config)")
        #expect(dry.stdout.contains("- route 10.244.3.0/24"), "\(dry.stdout)")
        #expect(!dry.stdout.contains("- nexthop id 1985478659"), "\(dry.stdout)")
        #expect(dry.stdout.contains("! nexthop id 1985478659 via 10.244.3.0 dev flannel.1 onlink: kept, "), "\(dry.stdout)")
        let result = try host.agent("sync --config \(config)")
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("kept"), "\(result.stderr)")
        // The foreign route and the whole group are still there; our routes are gone.
        #expect(try host.exec("ip route show table 100").stdout.contains("10.98.0.0/24 nhid 1985478659"))
        let group = try host.exec("ip nexthop show id 4242").stdout
        #expect(group.contains("group 1985478659/1985478660"), "\(group)")
        #expect(try host.exec("ip route show 10.97.0.0/24").stdout.contains("nhid 4242"))
        #expect(try host.json("ip -j route show 10.244.3.0/24").isEmpty)
        #expect(try host.json("ip -j route show 10.244.4.0/24").isEmpty)
        // Once the foreign users are gone, the next sync removes the nexthops.
        try host.exec("bash -ec 'ip route del 10.98.0.0/24 table 100; ip route del 10.97.0.0/24; ip nexthop del id 4242'").requireSuccess()
        #expect(try host.agent("sync --config \(config)").status == 0)
        #expect(try host.json("ip -j nexthop show proto 152").count == 1)
        #expect(try host.agent("diff --config \(config)").status == 0)
    }

    @Test("routes in other tables and of other protocols on other devices are never touched")
    func foreignEntriesUntouched() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try host.write("inv.json", inventory(peers: 2))
        #expect(try host.agent("sync --config \(config)").status == 0)
        try host.exec("""
        bash -ec 'ip route add 10.244.50.0/24 dev flannel.1 table 100
                  ip route add 10.96.0.0/24 via 198.18.0.9 dev eth0 proto static
                  ip route add 10.95.0.0/24 via 198.18.0.9 dev eth0 table 200 proto 152'
        """).requireSuccess()
        let before = try host.kernelState()
        let dry = try host.agent("diff --config \(config)")
        #expect(dry.status == 0, "\(dry.stdout)")
        #expect(try host.agent("sync --config \(config)").status == 0)
        let difference = try host.kernelStateDifference(settlingTo: before)
        #expect(difference == nil, "\(difference ?? "")")
    }

    /// Item 8: this node's old subnet goes to a peer in the same change.
    @Test("subnets swapped between this node and a peer converge in one sync")
    func renumberingConvergesInOneSync() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        func config(_ mine: Int, _ theirs: Int) -> String {
            """
            {"node": "node-1", "network": {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}},
             "nodes": [{"name": "node-1", "publicIP": "198.18.0.1", "subnet": "10.244.\(mine).0/24"},
                       {"name": "node-2", "publicIP": "198.19.0.2", "subnet": "10.244.\(theirs).0/24"},
                       {"name": "node-3", "publicIP": "198.19.0.3", "subnet": "10.244.3.0/24"}]}
            """
        }
        #expect(try host.agent("sync --config \(try host.write("a.json", config(1, 2)))").status == 0)
        for layout in ["nexthop", "classic"] {
            let swapped = try host.write("b-\(layout).json", config(2, 1))
            let result = try host.agent("sync --config \(swapped) --route-layout \(layout)")
            #expect(result.status == 0, "\(layout): \(result.stdout) \(result.stderr)")
            #expect(try host.agent("diff --config \(swapped) --route-layout \(layout)").status == 0)
            #expect(try host.exec("ip -4 addr show dev flannel.1").stdout.contains("inet 10.244.2.0/32"))
            #expect(try host.exec("ip route show 10.244.1.0/24").stdout.contains("10.244.1.0"))
            let back = try host.write("c-\(layout).json", config(1, 2))
            #expect(try host.agent("sync --config \(back) --route-layout \(layout)").status == 0)
            #expect(try host.agent("diff --config \(back) --route-layout \(layout)").status == 0)
        }
    }
}

extension Result {
    func requireSuccess(sourceLocation: SourceLocation = #_sourceLocation) throws {
        try #require(status == 0, "exit \(status): \(stdout) \(stderr)", sourceLocation: sourceLocation)
    }
}
