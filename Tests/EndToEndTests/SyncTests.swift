import Foundation
import Testing
import TestSupport

/// `vxlan-agent sync` and its dry-run against the real kernel, one host namespace each.
@Suite("sync on a real kernel", kernelTests, .blocking)
struct SyncTests {
    @Test("a sync programs every peer; a second sync issues zero kernel writes and the kernel sees no event")
    func noopSyncWritesNothing() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try host.write("inv.json", inventory(peers: 50))
        let first = try host.agent("sync --config \(config)")
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("applied: 202 added"), "\(first.stdout)")
        #expect(try host.json("ip -j route show proto vxlan-agent").count == 50)

        // An independent witness: ip monitor prints every change the kernel makes.
        // Bracket the sync between two changes of our own (neighbors on eth0, which
        // the agent does not own), each waited for in the
        // log, so a slow-starting monitor cannot pass the test by missing events.
        // It runs under `timeout`, so it ends by itself whatever happens here.
        let log = "\(host.directory)/monitor.log"
        let ns = host.namespace
        try sh("timeout 60 ip -n \(ns) monitor link address route neigh nexthop > \(log) 2>&1 & echo $! > \(log).pid")
        defer { _ = try? run("kill $(cat \(log).pid) 2>/dev/null") }
        func mark(_ ip: String) throws {
            try sh("""
            for i in $(seq 10 99); do
              # A new MAC each round: a replace that changes nothing sends no event,
              # and the monitor may have subscribed after the first one.
              ip -n \(ns) neigh replace \(ip) lladdr 0e:00:00:00:00:$i dev eth0
              grep -q '\(ip) ' \(log) && exit 0
              sleep 0.1
            done
            echo "ip monitor never reported \(ip)" >&2; exit 1
            """)
        }
        try mark("198.18.0.251")
        let second = try host.agent("sync --config \(config)")
        try mark("198.18.0.250")
        #expect(second.status == 0)
        #expect(second.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "in sync: nothing to do (50 peers, 0 kernel writes)")
        let events = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        let from = try #require(events.lastIndex { $0.contains("198.18.0.251 ") })
        let to = try #require(events.firstIndex { $0.contains("198.18.0.250 ") })
        let during = events[(from + 1)..<to]
        #expect(during.isEmpty, "the kernel saw changes during a no-op sync: \(during)")

        let dry = try host.agent("diff --config \(config)")
        #expect(dry.status == 0)
        #expect(dry.stdout.hasPrefix("in sync: nothing to do (50 peers)"))
    }

    struct Tamper: Sendable, CustomStringConvertible {
        var description: String
        var command: String
        var expected: String
    }

    static let tampering: [Tamper] = [
        Tamper(description: "a route deleted with ip route del", command: "ip route del 10.244.2.0/24",
               expected: "+ route 10.244.2.0/24 nhid 1985478658 via 10.244.2.0 dev flannel.1 onlink"),
        Tamper(description: "ip neigh flush dev flannel.1 (permanent too)", command: "ip neigh flush dev flannel.1 nud permanent",
               expected: "+ neigh 10.244.3.0 lladdr 0e:01:c6:13:00:03 dev flannel.1"),
        Tamper(description: "a stale FDB entry added by hand",
               command: "bridge fdb add 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99 self permanent",
               expected: "- fdb 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99"),
        Tamper(description: "an FDB entry pointed elsewhere",
               command: "bridge fdb replace 0e:01:c6:13:00:02 dev flannel.1 dst 198.19.9.9 self permanent",
               expected: "~ fdb 0e:01:c6:13:00:02 dev flannel.1 dst 198.19.0.2 (was: dst 198.19.9.9)"),
        Tamper(description: "a foreign route on flannel.1", command: "ip route add 10.244.77.0/24 dev flannel.1",
               expected: "- route 10.244.77.0/24 dev flannel.1 proto boot"),
        Tamper(description: "flannel.1 deleted", command: "ip link del flannel.1",
               expected: "+ link flannel.1 type vxlan id 1 local 198.18.0.1 dev eth0 dstport 8472 nolearning mtu 1450"),
        Tamper(description: "flannel.1 recreated with another VNI",
               command: "ip link del flannel.1 && ip link add flannel.1 type vxlan id 2 local 198.18.0.1 dev eth0 dstport 8472 nolearning",
               expected: "(recreate: vni 2 -> 1)"),
        Tamper(description: "flannel.1 set down (the kernel flushes its routes)", command: "ip link set flannel.1 down",
               expected: "~ link flannel.1 down -> up"),
        Tamper(description: "the MTU changed", command: "ip link set flannel.1 mtu 1300",
               expected: "~ link flannel.1 mtu 1300 -> 1450"),
    ]

    @Test("tampering is shown by the dry-run and repaired by sync", arguments: tampering)
    func tamperingIsRepaired(_ tamper: Tamper) throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try host.write("inv.json", inventory(peers: 5))
        #expect(try host.agent("sync --config \(config)").status == 0)
        let pristine = try host.kernelState()

        try sh("ip netns exec \(host.namespace) bash -c '\(tamper.command)'")
        let dry = try host.agent("sync --dry-run --config \(config)")
        #expect(dry.status == 2, "dry-run must report pending changes: \(dry.stdout) \(dry.stderr)")
        #expect(dry.stdout.contains(tamper.expected), "\(dry.stdout)")

        let repair = try host.agent("sync --config \(config)")
        #expect(repair.status == 0, "\(repair.stdout) \(repair.stderr)")
        #expect(try host.agent("diff --config \(config)").status == 0)
        let difference = try host.kernelStateDifference(settlingTo: pristine)
        #expect(difference == nil, "\(difference ?? "")")
    }

    @Test("a peer removed from the inventory: its route, nexthop, neighbor and FDB entry are gone")
    func removedPeer() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        #expect(try host.agent("sync --config \(try host.write("a.json", inventory(peers: 3)))").status == 0)
        let config = try host.write("b.json", inventory(peers: 3, skip: [3]))
        let dry = try host.agent("diff --config \(config)")
        #expect(dry.status == 2)
        #expect(dry.stdout.contains("- route 10.244.3.0/24"))
        #expect(try host.agent("sync --config \(config)").status == 0)
        #expect(try host.json("ip -j route show 10.244.3.0/24").isEmpty)
        #expect(try host.json("ip -j neigh show 10.244.3.0 dev flannel.1").isEmpty)
        #expect(try host.json("bridge -j fdb show dev flannel.1").allSatisfy { $0["dst"] as? String != "198.19.0.3" })
        #expect(try host.json("ip -j nexthop show").allSatisfy { $0["id"] as? Int != 1985478659 })
        #expect(try host.json("ip -j route show 10.244.2.0/24").count == 1)
    }

    @Test("a bad configuration exits 1, names the field, and changes nothing in the kernel")
    func badConfigChangesNothing() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        #expect(try host.agent("sync --config \(try host.write("a.json", inventory(peers: 3)))").status == 0)
        let before = try host.kernelState()
        let bad = inventory(peers: 3, extraNodes: #"{"name": "node-9", "publicIP": "198.19.0.9", "subnet": "10.245.9.0/24"}"#)
        let result = try host.agent("sync --config \(try host.write("bad.json", bad))")
        #expect(result.status == 1)
        #expect(result.stderr.contains("nodes[4].subnet: 10.245.9.0/24 is outside the network 10.244.0.0/16"), "\(result.stderr)")
        let difference = try host.kernelStateDifference(settlingTo: before)
        #expect(difference == nil, "\(difference ?? "")")
        let missing = try host.agent("sync --config \(host.directory)/absent.json")
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("absent.json: the configuration file does not exist"))
    }

    /// `sync` reads the kernel for this node while the other nodes are validated:
    /// an error of the configuration still comes first, and nothing is written.
    @Test("a bad inventory is reported before what the kernel said, and before waiting for a held lock")
    func configErrorFirst() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let badPeer = #"{"name": "node-9", "publicIP": "198.19.0.9", "subnet": "10.245.9.0/24"}"#
        // This node's publicIP is on no interface here (the kernel read fails), and a peer is bad.
        let elsewhere = inventory(peers: 2, extraNodes: badPeer).replacingOccurrences(of: #""publicIP": "198.18.0.1""#,
                                                                                       with: #""publicIP": "198.18.0.77""#)
        for verb in ["sync", "diff"] {
            let result = try host.agent("\(verb) --config \(try host.write("elsewhere.json", elsewhere))")
            #expect(result.status == 1)
            #expect(result.stderr.contains("nodes[3].subnet: 10.245.9.0/24 is outside the network 10.244.0.0/16"), "\(result.stderr)")
        }
        // Another sync holds the lock: the bad file is reported at once, not after the lock timeout (exit 75).
        let fd = open("\(host.directory)/sync.lock", O_RDWR | O_CREAT, 0o644)
        try #require(fd >= 0 && flock(fd, LOCK_EX) == 0)
        defer { close(fd) }
        let held = try host.agent("sync --config \(try host.write("bad.json", inventory(peers: 2, extraNodes: badPeer))) --lock-timeout 0.5")
        #expect(held.status == 1)
        #expect(held.stderr.contains("nodes[3].subnet: 10.245.9.0/24 is outside the network 10.244.0.0/16"), "\(held.stderr)")
        #expect(try host.json("ip -j link show flannel.1 2>/dev/null || echo []").isEmpty)
    }

    @Test("a peer wrong on its own is skipped and reported, the rest programmed, exit 3")
    func wrongPeerSkipped() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try host.write("inv.json", inventory(peers: 2, extraNodes:
            #"{"name": "node-lo", "publicIP": "127.0.0.9", "subnet": "10.244.9.0/24"}"#))
        let result = try host.agent("sync --config \(config)")
        #expect(result.status == 3)
        #expect(result.stderr.contains("peer node-lo"), "\(result.stderr)")
        #expect(result.stderr.contains("publicIP 127.0.0.9 is loopback"))
        #expect(try host.json("ip -j route show proto vxlan-agent").count == 2)
    }

    @Test("the device's MTU is the underlay's minus 50")
    func mtuFollowsUnderlay() throws {
        try requireKernel()
        let host = try TestHost(underlayMTU: 9000)
        defer { host.close() }
        #expect(try host.agent("sync --config \(try host.write("inv.json", inventory(peers: 1)))").status == 0)
        let link = try #require(try host.json("ip -j -d link show flannel.1").first)
        #expect(link["mtu"] as? Int == 8950)
    }

    @Test("a second sync waits for the lock, then gives up with exit 75")
    func lockIsExclusive() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try host.write("inv.json", inventory(peers: 1))
        // Hold the lock as another sync would: flock(2) on the same file.
        let fd = open("\(host.directory)/sync.lock", O_RDWR | O_CREAT, 0o644)
        try #require(fd >= 0 && flock(fd, LOCK_EX) == 0)
        _ = "4242\n".withCString { write(fd, $0, 5) }
        defer { close(fd) }
        let result = try host.agent("sync --config \(config) --lock-timeout 0.5")
        #expect(result.status == 75)
        #expect(result.stderr.contains("holds the lock \(host.directory)/sync.lock"), "\(result.stderr)")
        #expect(try host.json("ip -j link show flannel.1 2>/dev/null || echo []").isEmpty)
    }

    @Test("a sync killed with SIGKILL midway (5,000 peers) leaves a state the next sync completes")
    func killedSyncConverges() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try host.write("inv.json", inventory(peers: 5000, network: "10.0.0.0/8"))
        try sh("""
        ip netns exec \(host.namespace) \(agentBinary) sync --config \(config) --route-layout classic \
            --lock-file \(host.directory)/sync.lock > /dev/null 2>&1 & pid=$!
        for i in $(seq 1 2000); do
          ip -n \(host.namespace) link show flannel.1 >/dev/null 2>&1 && break
          sleep 0.005
        done
        kill -9 $pid; wait $pid || true
        """)
        let dry = try host.agent("diff --config \(config) --route-layout classic")
        // Killed before the end: something is left to do (and if the kernel was
        // faster than the kill, the diff is empty; both are states a sync must complete).
        #expect(dry.status == 2 || dry.status == 0)
        let result = try host.agent("sync --config \(config) --route-layout classic --lock-timeout 5")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try host.agent("diff --config \(config) --route-layout classic").status == 0)
        #expect(try host.json("ip -j route show proto vxlan-agent").count == 5000)
    }
}
