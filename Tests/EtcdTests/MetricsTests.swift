@testable import Daemon
import Foundation
import Testing
import TestSupport
import Tunnel

// /metrics as Prometheus scrapes it: the status server's answer, parsed; every
// metric Docs/operations.md lists, with its type, and the values the daemon
// recorded. Each Metrics has a registry of its own.

@Suite("/metrics: swift-metrics into the daemon's own Prometheus registry", .blocking)
struct MetricsTests {
    /// What two reconcile passes and a registry blip leave behind.
    static func recorded() -> Metrics {
        let metrics = Metrics()
        metrics.registry(connected: true, error: nil, now: 1)
        metrics.update {
            $0.registryReady = true
            $0.leasesInvalid = 2
            $0.reconciles["registry", default: 0] += 1
            $0.peers = 2
            $0.kernelWrites += 6
            $0.changes["route add", default: 0] += 2
            $0.changes["fdb add", default: 0] += 2
        }
        metrics.update { $0.kernelEvents += 4 }
        metrics.registry(connected: false, error: "watch: no answer", now: 2)
        metrics.registry(connected: true, error: nil, now: 3)
        metrics.update {
            $0.reconciles["kernel", default: 0] += 2
            $0.reconcileErrors += 1
        }
        metrics.update {
            $0.peers = 3
            $0.peersSkipped = 1
            $0.kernelWrites += 3
            $0.changes["route add", default: 0] += 3
            $0.changes["fdb remove", default: 0] += 1
            $0.changeFailures += 1
            $0.firewallErrors += 1
            $0.lastDuration = 0.25
            $0.lastSuccess = 1_764_480_000.5
        }
        return metrics
    }

    /// A status server on a free loopback port for `metrics`, stopped after `body`.
    static func serving<T>(_ metrics: Metrics, _ body: (StatusServer) throws -> T) async throws -> T {
        let server = try await StatusServer.start(host: "127.0.0.1", port: 0, metrics: metrics)
        let result = Swift.Result { try body(server) }
        await server.stop()
        return try result.get()
    }

    /// GET `path` on a status server on loopback (bash's /dev/tcp, as the daemon tests do).
    static func get(_ path: String, from server: StatusServer, method: String = "GET") throws -> String {
        let port = try #require(server.port)
        return try sh("""
        bash -c 'exec 3<>/dev/tcp/127.0.0.1/\(port); printf "\(method) \(path) HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3'
        """)
    }

    /// The metric table of Docs/operations.md: name (labels left out) -> type;
    /// the udp backend's (its data path's) apart.
    static func documented(udp: Bool = false) throws -> [String: String] {
        let text = try String(contentsOfFile: "\(packageRoot)/Docs/operations.md", encoding: .utf8)
        var table: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| `vxlan_agent_") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells[2].hasPrefix("udp backend only") == udp else { continue }
            let name = cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`")).split(separator: "{")[0]
            table[String(name)] = cells[1]
        }
        return table
    }

    @Test("a scrape shows every documented metric with its documented type and a help line, and nothing else")
    func documentedNamesAndTypes() async throws {
        let response = try await Self.serving(Self.recorded()) { try Self.get("/metrics", from: $0) }
        #expect(response.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(response.prefix(200))")
        #expect(response.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        let scrape = try Exposition(httpBody(response))
        let documented = try Self.documented()
        #expect(documented.count == 14, "the table in Docs/operations.md: \(documented)")
        #expect(scrape.types == documented, "\(scrape)")
        for name in documented.keys {
            #expect(!(scrape.help[name] ?? "").isEmpty, "no # HELP for \(name)")
        }
    }

    @Test("with the udp backend's data path, a scrape also shows its documented metrics, read at the scrape")
    func udpMetrics() async throws {
        let metrics = Self.recorded()
        var statistics = TunnelStatistics(txPackets: 10, txBytes: 14_000, rxPackets: 7, rxBytes: 9_000)
        statistics.drops = [.unknownSender: 2, .noRoute: 0]
        statistics.mergedWrites = 3
        let moved = statistics
        metrics.tunnel.withLock { $0 = { moved } }
        let scrape = try Exposition(httpBody(try await Self.serving(metrics) { try Self.get("/metrics", from: $0) }))
        let udp = try Self.documented(udp: true)
        #expect(udp.count == 4, "\(udp)")
        for (name, type) in udp {
            #expect(scrape.types[name] == type, "\(name): \(scrape)")
            #expect(!(scrape.help[name] ?? "").isEmpty, "no # HELP for \(name)")
        }
        #expect(scrape["vxlan_agent_tunnel_packets_total", ["direction": "tx"]] == 10)
        #expect(scrape["vxlan_agent_tunnel_bytes_total", ["direction": "rx"]] == 9_000)
        #expect(scrape["vxlan_agent_tunnel_drops_total", ["reason": "unknown_sender"]] == 2)
        #expect(scrape["vxlan_agent_tunnel_merged_writes_total"] == 3)
    }

    @Test("a scrape shows the values the daemon recorded", arguments: [
        ("vxlan_agent_peers", [:], 3.0),
        ("vxlan_agent_peers_skipped", [:], 1),
        ("vxlan_agent_leases_invalid", [:], 2),
        ("vxlan_agent_reconciles_total", ["trigger": "registry"], 1),
        ("vxlan_agent_reconciles_total", ["trigger": "kernel"], 2),
        ("vxlan_agent_reconcile_errors_total", [:], 1),
        ("vxlan_agent_changes_applied_total", ["kind": "route", "action": "add"], 5),
        ("vxlan_agent_changes_applied_total", ["kind": "fdb", "action": "add"], 2),
        ("vxlan_agent_changes_applied_total", ["kind": "fdb", "action": "remove"], 1),
        ("vxlan_agent_change_failures_total", [:], 1),
        ("vxlan_agent_kernel_writes_total", [:], 9),
        ("vxlan_agent_kernel_events_total", [:], 4),
        ("vxlan_agent_last_successful_sync_timestamp_seconds", [:], 1_764_480_000.5),
        ("vxlan_agent_last_reconcile_duration_seconds", [:], 0.25),
        ("vxlan_agent_registry_connected", [:], 1),
        ("vxlan_agent_registry_errors_total", [:], 1),
        ("vxlan_agent_firewall_errors_total", [:], 1),
    ] as [(String, [String: String], Double)])
    func values(name: String, labels: [String: String], value: Double) async throws {
        let scrape = try Exposition(httpBody(try await Self.serving(Self.recorded()) { try Self.get("/metrics", from: $0) }))
        #expect(scrape[name, labels] == value, "\(scrape)")
    }

    @Test("no label set appears that was never recorded (no trigger or change kind the daemon did not count)")
    func onlyRecordedSeries() throws {
        let scrape = try Exposition(Self.recorded().render())
        #expect(scrape.samples.keys.filter { !$0.labels.isEmpty }.count == 5, "2 triggers, 3 kinds of change: \(scrape)")
    }

    @Test("a daemon that has done nothing yet shows 0 for every unlabeled metric (absent would look like a dead target)")
    func freshIsZero() throws {
        let scrape = try Exposition(Metrics().render())
        let unlabeled = try Self.documented().keys.filter { !["vxlan_agent_reconciles_total", "vxlan_agent_changes_applied_total"].contains($0) }
        for name in unlabeled {
            #expect(scrape[name] == 0, "\(name): \(scrape)")
        }
    }

    @Test("two daemons in one process keep their own numbers (no global MetricsSystem)")
    func ownRegistry() throws {
        let first = Self.recorded(), second = Metrics()
        second.update {
            $0.peers = 7
            $0.changes["route remove", default: 0] += 1
        }
        let one = try Exposition(first.render()), two = try Exposition(second.render())
        #expect(one["vxlan_agent_peers"] == 3)
        #expect(two["vxlan_agent_peers"] == 7)
        #expect(one["vxlan_agent_changes_applied_total", ["kind": "route", "action": "remove"]] == nil)
        #expect(two["vxlan_agent_changes_applied_total", ["kind": "route", "action": "add"]] == nil)
        #expect(two["vxlan_agent_kernel_writes_total"] == 0)
    }

    @Test("HEAD answers the headers only; another method is 405, another path 404")
    func otherRequests() async throws {
        let (head, post, other) = try await Self.serving(Self.recorded()) { server in
            (try Self.get("/metrics", from: server, method: "HEAD"), try Self.get("/metrics", from: server, method: "POST"),
             try Self.get("/", from: server))
        }
        #expect(head.hasPrefix("HTTP/1.0 200 OK\r\n") && httpBody(head).isEmpty, "\(head)")
        #expect(post.hasPrefix("HTTP/1.0 405"), "\(post)")
        #expect(other.hasPrefix("HTTP/1.0 404"), "\(other)")
    }
}
