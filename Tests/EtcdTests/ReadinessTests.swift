@testable import Daemon
import Testing
import TestSupport

/// /readyz: ready once the registry gave this node its lease and the first sync
/// was applied; /healthz is the one that turns bad again later.
@Suite("/readyz beside /healthz")
struct ReadinessTests {
    @Test("503 before the lease, 503 before the first sync, 200 after; it stays ready when a later sync fails")
    func stages() async throws {
        let metrics = Metrics()
        func check(_ code: String, _ text: String) async throws {
            let response = try await MetricsTests.serving(metrics) { try MetricsTests.get("/readyz", from: $0) }
            #expect(response.hasPrefix("HTTP/1.0 \(code)"), "\(response)")
            #expect(response.contains(text), "\(response)")
        }
        try await check("503", "not ready: waiting for the registry (no lease yet)")
        metrics.update {
            $0.registryReady = true
            $0.subnet = "10.244.7.0/24"
            $0.lastError = "kernel refused the device"
        }
        try await check("503", "not ready: the first sync has not been applied yet: kernel refused the device")
        metrics.update {
            $0.lastSuccess = 1_764_480_000
            $0.lastError = nil
            $0.peers = 2
        }
        try await check("200 OK", "ready: subnet 10.244.7.0/24, 2 peers")
        metrics.update { $0.lastError = "a route failed" }
        try await check("200 OK", "ready:")
        #expect(!metrics.health().ok, "/healthz reports the failed sync")
    }

    @Test("HEAD /readyz answers without a body; POST is refused")
    func methods() async throws {
        let metrics = Metrics()
        let head = try await MetricsTests.serving(metrics) { try MetricsTests.get("/readyz", from: $0, method: "HEAD") }
        #expect(head.hasPrefix("HTTP/1.0 503"))
        #expect(!head.contains("not ready"))
        let post = try await MetricsTests.serving(metrics) { try MetricsTests.get("/readyz", from: $0, method: "POST") }
        #expect(post.hasPrefix("HTTP/1.0 405"))
    }
}
