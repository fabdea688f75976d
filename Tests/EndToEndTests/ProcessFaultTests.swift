import Foundation
import Testing
import TestSupport

/// The process-fault family of the hardening suite, and the daemon's side of
/// kernel tampering: what a process that is killed, stopped, raced or
/// signalled leaves behind is completed by the next run, and a running daemon
/// repairs what `sync` repairs.
@Suite("Hardening: process faults, and the daemon repairs tampering", kernelTests, .blocking)
struct ProcessFaultTests {
    /// A `vxlan-agent run` on a static inventory in `host`, logging to a file.
    final class Daemon {
        let host: TestHost
        let pid: pid_t
        let log: String

        init(_ host: TestHost, config: String) throws {
            self.host = host
            log = "\(host.directory)/daemon.log"
            pid = try spawn(["ip", "netns", "exec", host.namespace, agentBinary, "run", "--config", config,
                             "--lock-file", "\(host.directory)/sync.lock", "--log-level", "trace"], stdout: log)
        }

        var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

        func stop(_ signal: Int32 = SIGTERM) -> Int32 {
            kill(pid, signal)
            return waitForExit(pid)
        }

        /// Polls `probe` until it holds; a failure shows the daemon's log.
        func waitUntil(_ what: String, seconds: Double = 20, _ probe: () throws -> Bool) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if (try? probe()) == true { return }
                Thread.sleep(forTimeInterval: 0.05)
            }
            // A daemon that died says so (and how), not "not within 20 s".
            var status: Int32 = 0
            let gone = waitpid(pid, &status, WNOHANG) == pid
            let how = !gone ? "" : (status & 0x7f) == 0 ? "; the daemon exited with status \((status >> 8) & 0xff)"
                : "; the daemon was killed by signal \(status & 0x7f)"
            throw CommandFailure(command: "wait until \(what)", status: 1, output: "not within \(Int(seconds)) s\(how)\n\(output.suffix(4000))")
        }
    }

    /// The static inventory of `inventory(peers:)` with the daemon's files in the host's directory.
    static func daemonConfig(_ host: TestHost, peers: Int, network: String = "10.244.0.0/16") throws -> String {
        var text = inventory(peers: peers, network: network)
        text.removeLast()
        text += #", "subnetFile": "\#(host.directory)/subnet.env", "ipMasq": false, "metricsAddress": "", "cniConfFile": ""}"#
        return try host.write("daemon.json", text)
    }

    @Test("the daemon repairs FDB identity, device drift and strays within moments, as sync does")
    func daemonRepairs() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try Self.daemonConfig(host, peers: 4)
        let daemon = try Daemon(host, config: config)
        defer { _ = daemon.stop() }
        try daemon.waitUntil("4 routes") { try host.json("ip -j route show proto vxlan-agent").count == 4 }
        try daemon.waitUntil("in sync") { try host.agent("diff --config \(config) --lock-timeout 5").status == 0 }
        let pristine = try host.kernelState()
        let mac = TamperingTests.peerMAC
        for command in [
            "bridge fdb replace \(mac) dev flannel.1 dst 198.19.0.2 port 9999 self permanent",
            "bridge fdb replace \(mac) dev flannel.1 dst 198.19.0.2 vni 55 self permanent",
            "bridge fdb replace \(mac) dev flannel.1 dst 198.19.0.2 via lo self permanent",
            "bridge fdb add 0e:00:00:00:00:99 dev flannel.1 dst 198.19.0.99 port 4789 self permanent",
            "bridge fdb append 00:00:00:00:00:00 dev flannel.1 dst 198.18.0.200 self permanent",
            "ip link set flannel.1 type vxlan ttl 1",
            "ip link set flannel.1 type vxlan ageing 10",
            "ip route del 10.244.3.0/24",
            "ip neigh flush dev flannel.1 nud permanent",
        ] {
            try host.exec("bash -ec '\(command)'").requireSuccess()
            try daemon.waitUntil("repair of `\(command)`") { try host.kernelState() == pristine }
        }
    }

    @Test("a daemon killed with SIGKILL midway through 20,000 peers: a new daemon completes the state")
    func killedDaemonConverges() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try Self.daemonConfig(host, peers: 20_000, network: "10.0.0.0/8")
        let first = try Daemon(host, config: config)
        try first.waitUntil("flannel.1 exists", seconds: 60) { try host.exec("ip link show flannel.1").status == 0 }
        #expect(first.stop(SIGKILL) == 128 + SIGKILL)
        let second = try Daemon(host, config: config)
        defer { _ = second.stop() }
        try second.waitUntil("20,000 routes", seconds: 120) {
            try host.exec("ip route show proto vxlan-agent | wc -l").stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "20000"
        }
        try second.waitUntil("in sync", seconds: 60) { try host.agent("diff --config \(config) --lock-timeout 10").status == 0 }
    }

    @Test("a stopped sync (SIGSTOP) holds the lock: the next one says whose it is and exits 75; once it is killed, the next converges")
    func stoppedSyncHoldsTheLock() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        // 10,000 classic routes take the kernel seconds: the first sync is still
        // running, holding the lock, when it is stopped.
        let config = try host.write("inv.json", inventory(peers: 10_000, network: "10.0.0.0/8"))
        let pid = try spawn(["ip", "netns", "exec", host.namespace, agentBinary, "sync", "--config", config,
                             "--route-layout", "classic", "--lock-file", "\(host.directory)/sync.lock"],
                            stdout: "\(host.directory)/first.log")
        // Stop it once it holds the lock (the lock file names its pid).
        let deadline = Date().addingTimeInterval(30)
        var agentPID = ""
        while Date() < deadline {
            agentPID = ((try? String(contentsOfFile: "\(host.directory)/sync.lock", encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if !agentPID.isEmpty { break }
            Thread.sleep(forTimeInterval: 0.002)
        }
        try #require(!agentPID.isEmpty, "the first sync never took the lock")
        kill(pid_t(agentPID)!, SIGSTOP)
        let command = (try? String(contentsOfFile: "/proc/\(agentPID)/cmdline", encoding: .utf8)) ?? ""
        try #require(command.contains("sync"), "the first sync ended before it could be stopped: the case tests nothing")
        let second = try host.agent("sync --config \(config) --lock-timeout 0.5")
        #expect(second.status == 75, "\(second.stdout) \(second.stderr)")
        #expect(second.stderr.contains(agentPID), "\(second.stderr)")
        kill(pid_t(agentPID)!, SIGKILL)
        _ = waitForExit(pid)
        // The kernel released the lock with the process: no stale lock file blocks.
        let third = try host.agent("sync --config \(config) --route-layout classic --lock-timeout 5")
        #expect(third.status == 0, "\(third.stdout) \(third.stderr)")
        #expect(try host.agent("diff --config \(config) --route-layout classic").status == 0)
    }

    @Test("four syncs started at once: each exits 0 (they take turns), and the kernel is in sync once")
    func concurrentSyncs() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try host.write("inv.json", inventory(peers: 500, network: "10.0.0.0/8"))
        let pids = try (1...4).map { i in
            try spawn(["ip", "netns", "exec", host.namespace, agentBinary, "sync", "--config", config,
                       "--lock-file", "\(host.directory)/sync.lock", "--lock-timeout", "60"], stdout: "\(host.directory)/s\(i).log")
        }
        let statuses = pids.map(waitForExit)
        #expect(statuses == [0, 0, 0, 0])
        let outputs = try (1...4).map { try String(contentsOfFile: "\(host.directory)/s\($0).log", encoding: .utf8) }
        #expect(outputs.filter { $0.hasPrefix("applied: 2002 added") }.count == 1, "\(outputs)")
        #expect(outputs.filter { $0.contains("in sync: nothing to do") }.count == 3, "\(outputs)")
    }

    @Test("a storm of 50 SIGHUPs: the daemon reloads, stays up and in sync, and stops cleanly on SIGTERM")
    func sighupStorm() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let config = try Self.daemonConfig(host, peers: 50)
        let daemon = try Daemon(host, config: config)
        try daemon.waitUntil("50 routes") { try host.json("ip -j route show proto vxlan-agent").count == 50 }
        for _ in 0..<50 { kill(daemon.pid, SIGHUP) }
        try host.exec("ip route del 10.244.7.0/24").requireSuccess()
        try daemon.waitUntil("repaired after the storm") { try host.json("ip -j route show proto vxlan-agent").count == 50 }
        #expect(kill(daemon.pid, 0) == 0, "the daemon died")
        #expect(daemon.stop() == 0)
        #expect(daemon.output.contains("configuration reloaded"))
        // SIGTERM leaves the forwarding state in place.
        #expect(try host.json("ip -j route show proto vxlan-agent").count == 50)
    }

    @Test("the daemon with a configuration that is wrong exits 1 naming the field, and changes nothing")
    func daemonRefusesBadConfig() throws {
        try requireKernel()
        let host = try TestHost()
        defer { host.close() }
        let before = try host.exec("ip -d link show; ip route show table all").stdout
        let bad = try host.write("bad.json", inventory(peers: 2, extraNodes: #"{"name": "node-x", "publicIP": "198.19.0.9", "subnet": "10.244.2.0/24"}"#))
        let daemon = try Daemon(host, config: bad)
        #expect(waitForExit(daemon.pid) == 1)
        #expect(daemon.output.contains("nodes[3].subnet"), "\(daemon.output)")
        #expect(try host.exec("ip -d link show; ip route show table all").stdout == before)
    }
}
