import Foundation
import Testing
import TestSupport

/// The demo's cluster as a test: three hosts, two real CNI pods each, pings
/// across VXLAN, a host leaving the inventory.
@Suite("a cluster of namespaces with real CNI pods", kernelTests)
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
