import Foundation
import Testing
import TestSupport

/// The demo's cluster as a test: three hosts, two real CNI pods each, pings
/// across VXLAN, a host leaving the inventory.
@Suite("a cluster of namespaces with real CNI pods", kernelTests, .blocking)
struct ClusterTests {
    @Test("make demo passes: every pod reaches every pod on the other hosts, a removed host's routes are gone")
    func demo() throws {
        try requireKernel()
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge"),
                     "containernetworking-plugins is required (make test installs it)")
        let result = try run("bash \(packageRoot)/Tests/cluster/demo.sh \(agentBinary)")
        #expect(result.status == 0, "demo failed:\n\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("demo passed"))
        #expect(!result.stdout.contains("FAIL"))
        // The pods of the three hosts pinged each other: 6 pods x 4 remote pods.
        let oks = result.stdout.split(separator: "\n").first { $0.contains("10.244.1.2") && $0.contains("(local)") }
        #expect(oks.map { $0.components(separatedBy: "ok").count - 1 } == 4)
    }
}

@Suite("the benchmark harness", kernelTests, .blocking)
struct BenchmarkSmokeTests {
    @Test("make bench's harness runs at N = 100 and reports zero writes for a no-op sync")
    func smoke() throws {
        try requireKernel()
        let out = NSTemporaryDirectory() + "vxa-bench-smoke-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try run("python3 \(packageRoot)/Benchmarks/bench.py \(agentBinary) smoke --out \(out)")
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let data = try #require(FileManager.default.contents(atPath: "\(out)/smoke.json"))
        let doc = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let rows = try #require(doc["100"] as? [String: Any])
        #expect((rows["agent no-op"] as? [String: Any])?["writes"] as? Int == 0)
        #expect((rows["agent cold"] as? [String: Any])?["writes"] as? Int == 403)
        #expect((rows["C limit cold"] as? [String: Any])?["messages"] as? Int == 403)
        #expect((rows["agent churn 4x1%"] as? [String: Any])?["writes"] as? Int == 14)
    }
}
