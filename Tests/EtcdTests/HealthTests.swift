@testable import Daemon
import Model
import Reconcile
import Testing
import TestSupport

// /healthz's contract for a registry that stops answering: 200 that says so
// during the grace period, 503 with the reason after it; registry_connected
// is 0 from the first failure.

@Suite("/healthz and registry_connected while the registry is away")
struct HealthTests {
    /// A daemon that synced at t = 100 and then saw the registry go at t = 200.
    static func metrics(grace: Double = 10) -> Metrics {
        let metrics = Metrics(registryGrace: grace)
        metrics.registry(connected: true, error: nil, now: 90)
        metrics.update {
            $0.registryReady = true
            $0.lastSuccess = 100
            $0.peers = 3
        }
        metrics.registry(connected: false, error: "etcd http://198.18.0.254:2379: watch /coreos.com/network/: no answer", now: 200)
        return metrics
    }

    @Test("registry down: ok during the grace period (and says so), 503 with the reason after it", arguments: [
        (200.0, true, "(registry unreachable for 0 s; forwarding state kept)"),
        (209.0, true, "(registry unreachable for 9 s; forwarding state kept)"),
        (210.0, false, "registry unreachable for 10 s (changes in the cluster are not seen; forwarding state kept): etcd http://198.18.0.254:2379"),
        (900.0, false, "registry unreachable for 700 s"),
    ])
    func down(now: Double, ok: Bool, text: String) throws {
        let health = Self.metrics().health(now: now)
        #expect(health.ok == ok, "\(health.text)")
        #expect(health.text.contains(text), "\(health.text)")
        #expect(try Exposition(Self.metrics().render())["vxlan_agent_registry_connected"] == 0)
    }

    @Test("the first failure starts the clock; further failures do not restart it; an answer ends it")
    func clock() throws {
        let metrics = Self.metrics()
        metrics.registry(connected: false, error: "again", now: 205)
        #expect(!metrics.health(now: 211).ok, "the outage began at 200, not 205")
        #expect(metrics.health(now: 211).text.contains(": again"), "the latest reason is shown")
        metrics.registry(connected: true, error: nil, now: 212)
        let health = metrics.health(now: 213)
        #expect(health.ok && !health.text.contains("unreachable"), "\(health.text)")
        let exposition = try Exposition(metrics.render())
        #expect(exposition["vxlan_agent_registry_connected"] == 1, "\(exposition)")
        #expect(exposition["vxlan_agent_registry_errors_total"] == 2, "\(exposition)")
    }

    @Test("never reached since the start: 503 waiting, with the registry's error")
    func neverReached() {
        let metrics = Metrics()
        metrics.registry(connected: false, error: "etcd http://198.18.0.254:2379: list: cannot connect: Connection refused", now: 1)
        let health = metrics.health(now: 2)
        #expect(!health.ok)
        #expect(health.text == "waiting for the registry: etcd http://198.18.0.254:2379: list: cannot connect: Connection refused\n")
    }

    @Test("a changed network configuration is described field by field, in net-conf.json's names")
    func configDifferences() throws {
        let old = NetworkConfig(network: try #require(IPv4Prefix("10.244.0.0/16")))
        var new = NetworkConfig(network: try #require(IPv4Prefix("10.245.0.0/16")), vni: 2)
        new.mtu = 1400
        #expect(EtcdRegistry.differences(old, old).isEmpty)
        #expect(EtcdRegistry.differences(old, new) == [
            "Network 10.244.0.0/16 -> 10.245.0.0/16", "SubnetMin 10.244.1.0 -> 10.245.1.0",
            "SubnetMax 10.244.255.0 -> 10.245.255.0", "Backend.VNI 1 -> 2", "Backend.MTU default -> 1400",
        ])
    }
}
