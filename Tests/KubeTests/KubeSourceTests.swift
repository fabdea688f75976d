@testable import Daemon
import Foundation
import Logging
import Model
import Reconcile
import Registry
import Synchronization
import Testing

/// Waits (generously: under the whole suite on 2 cores, 20 s was once not enough for a first list) until `condition` holds.
func eventually(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("timed out waiting for \(what)")
    throw CancellationError()
}

/// A fake API server, a kubeconfig and net-conf.json for it, and a KubeSource
/// running against them whose events are applied to a view as the daemon does.
final class KubeFixture: Sendable {
    let api: FakeKubeAPI
    let directory: String
    let events = Mutex<[RegistryEvent]>([])
    /// The view as the events build it: local, and peers by origin.
    let view = Mutex<(local: NodeRecord?, peers: [String: NodeRecord], connected: String?)>((nil, [:], nil))
    let task = Mutex<Task<Void, Never>?>(nil)

    init(backend: String = "vxlan") async throws {
        api = try FakeKubeAPI()
        directory = NSTemporaryDirectory() + "vxa-kube-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try #"{"Network": "10.244.0.0/16", "Backend": {"Type": "\#(backend)"}}"#
            .write(toFile: directory + "/net-conf.json", atomically: true, encoding: .utf8)
        try writeKubeconfig(token: api.token)
    }

    func writeKubeconfig(token: String) throws {
        try """
        apiVersion: v1
        kind: Config
        clusters:
        - cluster:
            server: \(api.url)
          name: fake
        contexts:
        - context:
            cluster: fake
            user: flannel
          name: fake
        current-context: fake
        users:
        - name: flannel
          user:
            token: "\(token)"
        """.write(toFile: directory + "/kubeconfig", atomically: true, encoding: .utf8)
    }

    func config(publicIP: String? = "198.18.0.1", setNodeNetworkUnavailable: Bool = true) throws -> AgentConfig {
        let ip = publicIP.map { #""publicIP": "\#($0)","# } ?? ""
        return try AgentConfig.parse(Data("""
            {"node": "n1", \(ip) "kubernetes": {"kubeconfig": "\(directory)/kubeconfig", "netConfPath": "\(directory)/net-conf.json",
             "setNodeNetworkUnavailable": \(setNodeNetworkUnavailable)}}
            """.utf8), source: "agent.json")
    }

    func source(_ config: AgentConfig? = nil, watchTimeout: Duration = .seconds(300)) throws -> KubeSource {
        let config = try config ?? self.config()
        return try KubeSource(config: config, settings: config.kubernetes!, node: "n1", log: Logger(label: "test"),
                              environment: [:], serviceAccount: directory + "/none", watchTimeout: watchTimeout)
    }

    func start(_ source: KubeSource) {
        task.withLock {
            $0 = Task {
                await source.run { event in
                    self.events.withLock { $0.append(event) }
                    self.view.withLock { view in
                        switch event {
                        case .state(let state, _):
                            view.local = state.local
                            view.peers = Dictionary(state.peers.map { ($0.origin, $0) }, uniquingKeysWith: { $1 })
                        case .peers(let upserts, let removals, _):
                            for key in removals { view.peers[key] = nil }
                            for record in upserts { view.peers[record.origin] = record }
                        case .connection(let up, let why):
                            view.connected = up ? nil : (why ?? "down")
                        }
                    }
                }
            }
        }
    }

    var peers: [String: String] { view.withLock { $0.peers.mapValues { "\($0.publicIP) \($0.subnet)" } } }
    var local: NodeRecord? { view.withLock { $0.local } }
    var states: Int { events.withLock { $0.filter { if case .state = $0 { true } else { false } }.count } }

    func close() async {
        let task = task.withLock { $0 }
        task?.cancel()
        await api.shutdown()
        await task?.value
        try? FileManager.default.removeItem(atPath: directory)
    }
}

func annotated(_ name: String, ip: String, subnet: String?, backend: String = "vxlan") -> [String: Any] {
    let data = backend == "vxlan" ? #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIP: IPv4Address(ip)!))"}"# : "null"
    return nodeJSON(name, podCIDR: subnet, annotations: [flannel + "backend-type": backend == "udp" ? "" : backend,
                                                         flannel + "backend-data": data, flannel + "public-ip": ip,
                                                         flannel + "kube-subnet-manager": "true"])
}

@Suite(.serialized) struct KubeSourceTests {
    @Test func listThenWatchAddsChangesAndRemovesPeers() async throws {
        let fixture = try await KubeFixture()
        do {
            fixture.api.put(nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:]))
            fixture.api.put(annotated("n2", ip: "198.18.0.2", subnet: "10.244.2.0/24"))
            fixture.api.put(nodeJSON("n9", podCIDR: "10.244.9.0/24", annotations: [:]))   // no flannel on it: not a peer
            fixture.start(try fixture.source())
            try await eventually("the first state") { fixture.local != nil }
            #expect(fixture.local?.subnet == IPv4Prefix("10.244.1.0/24"))
            #expect(fixture.peers == ["node/n2": "198.18.0.2 10.244.2.0/24"])

            // This node's annotations, as flanneld writes them, and NetworkUnavailable False.
            try await eventually("this node annotated") { fixture.api.node("n1").map(annotationsOf)?[flannel + "kube-subnet-manager"] == "true" }
            let own = annotationsOf(try #require(fixture.api.node("n1")))
            #expect(own[flannel + "public-ip"] == "198.18.0.1")
            #expect(own[flannel + "backend-type"] == "vxlan")
            #expect(own[flannel + "backend-data"] == #"{"VNI":1,"VtepMAC":"\#(MACAddress.vtep(vni: 1, publicIP: IPv4Address("198.18.0.1")!))"}"#)
            try await eventually("NetworkUnavailable False") { conditionsOf(fixture.api.node("n1")).contains { $0["type"] as? String == "NetworkUnavailable" && $0["status"] as? String == "False" && $0["reason"] as? String == "FlannelIsUp" } }
            #expect(fixture.api.requests.contains { $0.hasPrefix("PATCH /api/v1/nodes/n1/status") })
            #expect(fixture.api.requests.filter { $0.hasPrefix("PATCH") }.allSatisfy { $0 == "PATCH /api/v1/nodes/n1/status" },
                    "only through nodes/status, the right flannel's RBAC grants")

            fixture.api.put(annotated("n3", ip: "198.18.0.3", subnet: "10.244.3.0/24"))
            try await eventually("n3 added") { fixture.peers["node/n3"] == "198.18.0.3 10.244.3.0/24" }
            fixture.api.put(annotated("n2", ip: "198.18.0.22", subnet: "10.244.2.0/24"))
            try await eventually("n2 changed") { fixture.peers["node/n2"] == "198.18.0.22 10.244.2.0/24" }
            fixture.api.delete("n3")
            try await eventually("n3 gone") { fixture.peers["node/n3"] == nil }
            fixture.api.bookmark()
            // A node that loses flannel's annotation leaves too.
            fixture.api.put(nodeJSON("n2", podCIDR: "10.244.2.0/24", annotations: [:]))
            try await eventually("n2 gone") { fixture.peers.isEmpty }
            // Changes after the first state came as deltas, not new states.
            #expect(fixture.states == 1)
        } catch {}
        await fixture.close()
    }

    @Test func aNodeWithoutPodCIDRIsWaitedFor() async throws {
        let fixture = try await KubeFixture(backend: "host-gw")
        do {
            fixture.api.put(nodeJSON("n1", podCIDR: nil, annotations: [:], internalIP: "198.18.0.1"))
            fixture.api.put(annotated("n2", ip: "198.18.0.2", subnet: "10.244.2.0/24", backend: "host-gw"))
            fixture.start(try fixture.source(try fixture.config(publicIP: nil)))
            try await eventually("the watch opened") { fixture.api.requests.contains { $0.contains("watch=1") } }
            #expect(fixture.local == nil)
            #expect(fixture.api.node("n1").map(annotationsOf)?.isEmpty == true, "nothing written before the podCIDR")
            // The controller manager assigns it.
            var node = try #require(fixture.api.node("n1"))
            node["spec"] = ["podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]]
            fixture.api.put(node)
            try await eventually("the state once the podCIDR is there") { fixture.local != nil }
            #expect(fixture.local?.subnet == IPv4Prefix("10.244.1.0/24"))
            #expect(fixture.local?.publicIP == IPv4Address("198.18.0.1"), "the Node's InternalIP")
            #expect(fixture.peers == ["node/n2": "198.18.0.2 10.244.2.0/24"])
            try await eventually("host-gw annotations") { fixture.api.node("n1").map(annotationsOf)?[flannel + "backend-type"] == "host-gw" }
            #expect(annotationsOf(try #require(fixture.api.node("n1")))[flannel + "backend-data"] == "null")
            try await eventually("NetworkUnavailable False once ready") {
                conditionsOf(fixture.api.node("n1")).contains { $0["type"] as? String == "NetworkUnavailable" && $0["status"] as? String == "False" }
            }
        } catch {}
        await fixture.close()
    }

    /// A broken watch resumes from the last version; one whose version is gone
    /// (410) lists again; no change made meanwhile is lost.
    @Test func goneRelistsWithoutLosingAnUpdate() async throws {
        let fixture = try await KubeFixture()
        do {
            fixture.api.put(nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:]))
            fixture.api.put(annotated("n2", ip: "198.18.0.2", subnet: "10.244.2.0/24"))
            fixture.start(try fixture.source())
            try await eventually("the first state") { fixture.local != nil && fixture.peers.count == 1 }
            try await eventually("the watch opened") { fixture.api.state.withLock { !$0.watchers.isEmpty } }

            // Broken: resumed from the last version seen, no list.
            let lists = fixture.api.requests.filter { $0.hasPrefix("GET /api/v1/nodes") && !$0.contains("watch") }.count
            fixture.api.breakWatches()
            fixture.api.put(annotated("n3", ip: "198.18.0.3", subnet: "10.244.3.0/24"))
            try await eventually("n3 after the broken watch") { fixture.peers["node/n3"] != nil }
            #expect(fixture.api.requests.filter { $0.hasPrefix("GET /api/v1/nodes") && !$0.contains("watch") }.count == lists)

            // Gone: the history is compacted while the watch is down, and changes happen.
            try await eventually("the watch opened again") { fixture.api.state.withLock { !$0.watchers.isEmpty } }
            fixture.api.pause(true)
            fixture.api.delete("n2")
            fixture.api.put(annotated("n4", ip: "198.18.0.4", subnet: "10.244.4.0/24"))
            fixture.api.compact()
            fixture.api.breakWatches()
            fixture.api.pause(false)
            try await eventually("the relisted state") { fixture.peers.keys.sorted() == ["node/n3", "node/n4"] }
            #expect(fixture.api.requests.filter { $0.hasPrefix("GET /api/v1/nodes") && !$0.contains("watch") }.count > lists)
            // The first list from the watch cache (resourceVersion=0), the relist after 410 a consistent read.
            let listRequests = fixture.api.requests.filter { $0.hasPrefix("GET /api/v1/nodes") && !$0.contains("watch") }
            #expect(listRequests.first == "GET /api/v1/nodes?resourceVersion=0")
            #expect(listRequests.last == "GET /api/v1/nodes")
        } catch {}
        await fixture.close()
    }

    @Test func withoutAValidTokenTheSourceSaysWhy() async throws {
        let fixture = try await KubeFixture()
        do {
            fixture.api.put(nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:]))
            try fixture.writeKubeconfig(token: "wrong")
            fixture.start(try fixture.source())
            try await eventually("the connection reported down") { fixture.view.withLock { $0.connected } != nil }
            #expect(fixture.view.withLock { $0.connected }?.contains("HTTP 401") == true)
            #expect(fixture.local == nil)
            await fixture.close()

            let second = try await KubeFixture()
            second.api.put(nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:]))
            try second.writeKubeconfig(token: second.api.readOnlyToken)
            second.start(try second.source())
            try await eventually("the patch refused") { second.view.withLock { $0.connected } != nil }
            #expect(second.view.withLock { $0.connected }?.contains("HTTP 403") == true)
            #expect(second.view.withLock { $0.connected }?.contains("nodes/status") == true)
            await second.close()
        } catch {
            await fixture.close()
        }
    }

    @Test func readListsOnceForSync() async throws {
        let fixture = try await KubeFixture(backend: "udp")
        do {
            fixture.api.put(nodeJSON("n1", podCIDR: "10.244.1.0/24", annotations: [:]))
            fixture.api.put(annotated("n2", ip: "198.18.0.2", subnet: "10.244.2.0/24", backend: "udp"))
            fixture.api.put(annotated("n3", ip: "198.18.0.3", subnet: nil, backend: "udp"))
            let (view, warnings) = try await fixture.source().read()
            #expect(view.local.subnet == IPv4Prefix("10.244.1.0/24"))
            #expect(view.peers.map { "\($0.publicIP) \($0.subnet)" } == ["198.18.0.2 10.244.2.0/24"])
            #expect(warnings.count == 1 && warnings[0].contains("node/n3") && warnings[0].contains("no podCIDR"))
            #expect(!fixture.api.requests.contains { $0.hasPrefix("PATCH") }, "sync writes nothing")
            // Without a podCIDR on this node, sync says so.
            fixture.api.put(nodeJSON("n1", podCIDR: nil, annotations: [:]))
            await #expect { try await fixture.source().read() } throws: { "\($0)".contains("pod cidr not assigned") }
        } catch {}
        await fixture.close()
    }

    @Test func kubeconfigAsKubeadmWritesIt() throws {
        let ca = Data("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".utf8).base64EncodedString()
        let root = try Kubeconfig.parse("""
        apiVersion: v1
        clusters:
        - cluster:
            certificate-authority-data: \(ca)
            server: https://198.18.0.254:6443
          name: kubernetes
        contexts:
        - context:
            cluster: kubernetes
            user: kubernetes-admin
          name: kubernetes-admin@kubernetes
        current-context: kubernetes-admin@kubernetes # a comment
        kind: Config
        preferences: {}
        users:
        - name: other
          user:
            token: nope
        - name: kubernetes-admin
          user:
            token: 'abc''def'
        """)
        let credentials = try Kubeconfig.credentials(root, path: "/etc/kubernetes/admin.conf")
        #expect(credentials.server == "https://198.18.0.254:6443")
        #expect(credentials.token == "abc'def")
        #expect(credentials.caPEM.map { String(decoding: $0, as: UTF8.self) }?.hasPrefix("-----BEGIN CERTIFICATE-----") == true)
        // JSON is YAML too.
        let json = try Kubeconfig.parse(#"{"clusters": [{"name": "c", "cluster": {"server": "https://[fd00::1]:6443", "insecure-skip-tls-verify": true}}], "users": [{"name": "u", "user": {"token": "t"}}], "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}"#)
        let fromJSON = try Kubeconfig.credentials(json, path: "/k.json")
        #expect(fromJSON.server == "https://[fd00::1]:6443" && fromJSON.token == "t" && fromJSON.insecureSkipTLSVerify)
        // In-cluster: the service's address, the token file (read again for each request), the CA.
        let account = NSTemporaryDirectory() + "vxa-kube-sa-\(getpid())"
        try FileManager.default.createDirectory(atPath: account, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: account) }
        try "token-1\n".write(toFile: account + "/token", atomically: true, encoding: .utf8)
        try "-----BEGIN CERTIFICATE-----\n".write(toFile: account + "/ca.crt", atomically: true, encoding: .utf8)
        let inCluster = try KubeCredentials.resolve(KubernetesSettings(), environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                                                                         "KUBERNETES_SERVICE_PORT": "443"],
                                                    serviceAccount: account)
        #expect(inCluster.server == "https://10.96.0.1:443")
        #expect(try inCluster.currentToken() == "token-1")
        try "token-2\n".write(toFile: account + "/token", atomically: true, encoding: .utf8)
        #expect(try inCluster.currentToken() == "token-2", "a rotated token is read again")
        #expect(inCluster.caPEM != nil)
        // In-cluster without the environment: an error that says what to set.
        #expect { try KubeCredentials.resolve(KubernetesSettings(), environment: [:], serviceAccount: "/nonexistent") } throws: {
            "\($0)".contains("KUBERNETES_SERVICE_HOST")
        }
    }
}

func annotationsOf(_ node: [String: Any]) -> [String: String] {
    (node["metadata"] as? [String: Any])?["annotations"] as? [String: String] ?? [:]
}

func conditionsOf(_ node: [String: Any]?) -> [[String: Any]] {
    ((node?["status"] as? [String: Any])?["conditions"] as? [[String: Any]]) ?? []
}
