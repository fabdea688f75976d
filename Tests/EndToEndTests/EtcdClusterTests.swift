import Foundation
import Synchronization
import Testing
import TestSupport

/// etcd as users run it: three members (Debian's etcd 3.4), each in its own
/// host namespace of a cluster.sh cluster (member I on 198.18.0.I, client port
/// 2379, peer port 2380), and one `vxlan-agent run` on host 4 configured with
/// all three endpoints. etcdctl runs in the underlay namespace (198.18.0.254).
/// Everything goes in `close()`.
final class EtcdTrio {
    static let counter = Mutex(0)
    static let members = 1...3
    static let agent = 4

    let prefix: String
    let directory: String
    var pids: [Int: pid_t] = [:]
    var daemon: pid_t?

    init() throws {
        let n = Self.counter.withLock { value -> Int in value += 1; return value }
        prefix = "vxa-ec\(getpid() % 100_000)-\(n)"
        directory = "/run/\(prefix)"
        do {
            try sh("\(packageRoot)/Tests/cluster/cluster.sh up \(prefix) 4 0")
            try sh("ip -n \(prefix)-ul addr add 198.18.0.254/24 dev br0")
            for member in Self.members { try start(member) }
            try waitUntil("the three members form a cluster", seconds: 30) { (try? self.etcdctl("endpoint health")) != nil }
        } catch {
            close()
            throw error
        }
    }

    func close() {
        if let daemon { kill(daemon, SIGTERM); _ = waitForExit(daemon) }
        daemon = nil
        for member in Self.members { heal(ns(member)) ; stop(member) }
        _ = try? run("\(packageRoot)/Tests/cluster/cluster.sh down \(prefix)")
    }

    func ns(_ host: Int) -> String { "\(prefix)-h\(host)" }
    static func endpoint(_ member: Int) -> String { "http://198.18.0.\(member):2379" }

    // MARK: members

    /// Starts member I (again: its data dir is kept, so it rejoins).
    func start(_ member: Int) throws {
        guard let etcd = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first(where: FileManager.default.isExecutableFile) else {
            throw CommandFailure(command: "etcd", status: 127, output: "etcd is not installed (apt-get install etcd-server etcd-client)")
        }
        let cluster = Self.members.map { "m\($0)=http://198.18.0.\($0):2380" }.joined(separator: ",")
        pids[member] = try spawn(["ip", "netns", "exec", ns(member), etcd, "--name", "m\(member)",
                                  "--data-dir", "\(directory)/m\(member)",
                                  "--listen-client-urls", Self.endpoint(member), "--advertise-client-urls", Self.endpoint(member),
                                  "--listen-peer-urls", "http://198.18.0.\(member):2380",
                                  "--initial-advertise-peer-urls", "http://198.18.0.\(member):2380",
                                  "--initial-cluster", cluster, "--initial-cluster-token", prefix,
                                  "--initial-cluster-state", "new"],
                                 stdout: "\(directory)/m\(member).log")
    }

    /// Stops member I: SIGKILL (as a crash) or SIGTERM; waits for it.
    func stop(_ member: Int, signal: Int32 = SIGTERM) {
        guard let pid = pids.removeValue(forKey: member) else { return }
        kill(pid, signal)
        _ = waitForExit(pid)
    }

    /// etcdctl against `members` (default: those running and not cut off).
    @discardableResult
    func etcdctl(_ arguments: String, members: [Int]? = nil) throws -> String {
        let endpoints = (members ?? Self.members.filter { pids[$0] != nil }).map(Self.endpoint).joined(separator: ",")
        return try sh("ip netns exec \(prefix)-ul etcdctl --endpoints \(endpoints) --command-timeout 5s \(arguments)")
    }

    /// Writes through `members`, trying again while a leader is being elected.
    func write(_ arguments: String, members: [Int]? = nil) throws {
        try waitUntil("etcdctl \(arguments) succeeds", seconds: 30) { (try? self.etcdctl(arguments, members: members)) != nil }
    }

    /// The member that leads now, from `etcdctl endpoint status` (IS LEADER column).
    func leader() throws -> Int {
        let table = try etcdctl("endpoint status -w table")
        for line in table.split(separator: "\n") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count > 5, cells[4] == "true", let member = Self.members.first(where: { cells[0] == Self.endpoint($0) }) {
                return member
            }
        }
        throw CommandFailure(command: "find the leader", status: 1, output: table)
    }

    // MARK: the agent

    var agentDirectory: String { "\(directory)/h\(Self.agent)" }
    var logPath: String { "\(directory)/h\(Self.agent).log" }
    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func startAgent(leaseTTL: Int) throws {
        try FileManager.default.createDirectory(atPath: agentDirectory, withIntermediateDirectories: true)
        let endpoints = Self.members.map { "\"\(Self.endpoint($0))\"" }.joined(separator: ", ")
        let config = """
            {"node": "h\(Self.agent)", "publicIP": "198.18.0.\(Self.agent)",
             "etcd": {"endpoints": [\(endpoints)]}, "leaseTTL": \(leaseTTL),
             "subnetFile": "\(agentDirectory)/subnet.env", "cniConfFile": "\(agentDirectory)/cni.conflist",
             "metricsAddress": "127.0.0.1:9472"}
            """
        try config.write(toFile: "\(agentDirectory).json", atomically: true, encoding: .utf8)
        daemon = try spawn(["ip", "netns", "exec", ns(Self.agent), agentBinary, "run", "--config", "\(agentDirectory).json",
                            "--lock-file", "\(agentDirectory)/sync.lock", "--log-level", "debug"], stdout: logPath)
    }

    func routes() throws -> Set<String> {
        Set(try sh("ip -n \(ns(Self.agent)) route show proto vxlan-agent").split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
    }

    func http(_ path: String) throws -> String {
        try sh("""
        ip netns exec \(ns(Self.agent)) bash -c 'exec 3<>/dev/tcp/127.0.0.1/9472; printf "GET \(path) HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3'
        """)
    }

    func connected() throws -> Bool { try Exposition(httpBody(http("/metrics")))["vxlan_agent_registry_connected"] == 1 }
    func healthy() throws -> Bool { try http("/healthz").contains("200 OK") }

    /// The members the agent holds connections to, most connections first.
    func agentMembers() throws -> [Int] {
        let lines = try sh("ip netns exec \(ns(Self.agent)) ss -tnH state established '( dport = :2379 )'")
        var counts: [Int: Int] = [:]
        for line in lines.split(separator: "\n") {
            if let match = line.firstMatch(of: /198\.18\.0\.([0-9]+):2379/), let member = Int(match.1) { counts[member, default: 0] += 1 }
        }
        return counts.sorted { $0.value > $1.value }.map(\.key)
    }

    /// This node's lease: its key and the etcd lease ID holding it.
    func ownLease() throws -> (key: String, lease: Int) {
        let json = try etcdctl("get --prefix /coreos.com/network/subnets/ -w json")
        let kvs = (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["kvs"] as? [[String: Any]] ?? []
        for kv in kvs {
            guard let key = (kv["key"] as? String).flatMap({ Data(base64Encoded: $0) }).map({ String(decoding: $0, as: UTF8.self) }),
                  let value = (kv["value"] as? String).flatMap({ Data(base64Encoded: $0) }).map({ String(decoding: $0, as: UTF8.self) }),
                  value.contains("\"198.18.0.\(Self.agent)\"") else { continue }
            return (key, kv["lease"] as? Int ?? 0)
        }
        throw CommandFailure(command: "find h\(Self.agent)'s lease", status: 1, output: json)
    }

    func waitUntil(_ what: String, seconds: Double = 20, _ probe: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? probe()) == true { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw CommandFailure(command: "wait until \(what)", status: 1,
                             output: "not reached within \(Int(seconds)) s\n--- agent ---\n\(log().suffix(4000))")
    }
}

@Suite("vxlan-agent run against a 3-member etcd cluster", kernelTests, .blocking, .serialized)
struct EtcdClusterTests {
    @Test("leader killed, the agent's member partitioned, all three restarted: the agent keeps its lease, keeps watching, loses no update, and health and metrics tell the truth")
    func threeMembers() throws {
        try requireKernel()
        let trio = try EtcdTrio()
        defer { trio.close() }
        try trio.write(#"put /coreos.com/network/config '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'"#)
        // A short TTL, renewed every 10 s: the lease must survive every fault by renewal.
        try trio.startAgent(leaseTTL: 30)
        try trio.waitUntil("the agent takes a lease and is healthy", seconds: 30) { try trio.healthy() && trio.connected() }
        let lease = try trio.ownLease()
        // Four peers' subnets, none of them the one the agent took (it picks at random: 211 was seen).
        let picked = (211...250).filter { !lease.key.hasSuffix("/10.244.\($0).0-24") }.prefix(4)
        let (a, b, c, d) = (picked[picked.startIndex], picked[picked.startIndex + 1], picked[picked.startIndex + 2],
                            picked[picked.startIndex + 3])
        func net(_ n: Int) -> String { "10.244.\(n).0/24" }
        func put(_ n: Int, members: [Int]? = nil) throws {
            try trio.write("put /coreos.com/network/subnets/10.244.\(n).0-24 '\(flannelLease("198.18.0.\(n)", mac: String(format: "22:33:44:55:66:%02x", n)))'",
                           members: members)
        }
        try put(a)
        try trio.waitUntil("the first peer is programmed") { try trio.routes() == [net(a)] }

        // 1. The leader is killed (SIGKILL): a quorum remains, a new leader is elected.
        let leader = try trio.leader()
        let before = try trio.agentMembers()
        trio.stop(leader, signal: SIGKILL)
        try put(b)
        try trio.waitUntil("a lease written after the leader died is programmed", seconds: 30) {
            try trio.routes().contains(net(b))
        }
        try trio.waitUntil("connected and healthy with two members") { try trio.connected() && trio.healthy() }
        try trio.start(leader)
        try trio.waitUntil("the old leader rejoins", seconds: 30) { (try? trio.etcdctl("endpoint health")) != nil }

        // 2. The member the agent talks to is partitioned (nftables in its own
        // namespace drops everything on its eth0, both ways: peers, agent, etcdctl).
        let cut = try #require(try trio.agentMembers().first, "the agent holds no connection to etcd")
        try partition(trio.ns(cut))
        let others = EtcdTrio.members.filter { $0 != cut }
        try put(c, members: others)
        try trio.write("del /coreos.com/network/subnets/10.244.\(a).0-24", members: others)
        try trio.waitUntil("the put and the delete written during the partition are programmed", seconds: 40) {
            let routes = try trio.routes()
            return routes.contains(net(c)) && !routes.contains(net(a))
        }
        try trio.waitUntil("connected and healthy through the quorum") { try trio.connected() && trio.healthy() }
        // (Idle pooled connections to the cut member may linger, half-open: the agent no longer uses them.)
        #expect(try trio.agentMembers().contains { others.contains($0) }, "the agent talks to the quorum")
        heal(trio.ns(cut))
        try trio.waitUntil("the partitioned member is back", seconds: 30) { (try? trio.etcdctl("endpoint health")) != nil }

        // 3. All three restarted: no quorum, then the cluster comes back.
        for member in EtcdTrio.members { trio.stop(member) }
        try trio.waitUntil("not connected while no member answers") { try !trio.connected() }
        try trio.waitUntil("/healthz 503 once the outage outlasts the grace period") {
            let health = try trio.http("/healthz")
            return health.contains("503") && health.contains("registry unreachable")
        }
        #expect(try trio.routes() == [net(b), net(c)], "an outage flushes nothing")
        for member in EtcdTrio.members { try trio.start(member) }
        try put(d)
        try trio.waitUntil("a lease written right after the restart is programmed", seconds: 40) {
            try trio.routes().contains(net(d))
        }
        try trio.waitUntil("connected and healthy again") { try trio.connected() && trio.healthy() }
        #expect(try trio.routes() == [net(b), net(c), net(d)])

        // The same key under the same etcd lease throughout, still alive.
        let after = try trio.ownLease()
        #expect(after.key == lease.key && after.lease == lease.lease, "before: \(lease), after: \(after)")
        let ttl = try trio.etcdctl("lease timetolive \(String(after.lease, radix: 16))")
        #expect(ttl.contains("remaining("), "\(ttl)")
        #expect(!trio.log().contains("taking a lease again"))
        print("3-member etcd: killed the leader m\(leader) (the agent talked to m\(before.map(String.init).joined(separator: ",m"))), "
              + "partitioned m\(cut), restarted all three; lease \(String(lease.lease, radix: 16)) kept")
    }
}
