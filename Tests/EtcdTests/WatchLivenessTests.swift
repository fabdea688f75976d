import Etcd
import Foundation
import Testing

// A watch is a long-lived HTTP response that can be quiet for hours. When
// etcd stops answering without closing the connection (a partition that drops
// packets, a frozen process), nothing on the socket says so for as long as TCP
// retries. The client asks for progress on the watch's own connection and
// gives up on a connection that answers nothing for its deadline.

@Suite("EtcdClient: a watch notices a silent etcd", etcdTests)
struct WatchLivenessTests {
    @Test("a quiet watch stays open; a frozen etcd (SIGSTOP: connection open, no answer) fails it with connectionLost; watching again from the last revision misses nothing")
    func frozenServer() async throws {
        try await withEtcd { server in
            // Deadline: max(request timeout 10 s, 3 x 1 s) = 10 s: short enough for a
            // test, long enough that a machine busy with the rest of the suite (iperf3
            // through the udp tunnel, kernel tests, other etcds on 2 cores) still gets
            // etcd's progress answers in time (5 s was missed twice under that load).
            let client = try EtcdClient(endpoints: [server.endpoint], requestTimeout: .seconds(10),
                                        watchProgressInterval: .seconds(1))
            #expect(client.watchDeadline == .seconds(10))
            let first = try await client.put("/live/a", value: "1")
            let recorder = WatchRecorder(client.watch(prefix: "/live/", startRevision: first))
            defer { recorder.stop() }
            _ = try await recorder.waitForEvents(1)

            // Quiet for longer than a deadline: etcd's progress answers keep it open.
            try await Task.sleep(for: .seconds(13))
            #expect(recorder.failure == nil, "a quiet, healthy watch must stay open: \(String(describing: recorder.failure))")

            server.pause()
            let frozen = ContinuousClock.now
            let failure: any Error
            do {
                defer { server.resume() }
                failure = try await recorder.waitForFailure()
            }
            let detected = ContinuousClock.now - frozen
            let error = try #require(failure as? EtcdError, "\(failure)")
            #expect(error.code == .connectionLost, "\(error)")
            #expect(error.description.contains("no answer on the watch"), "\(error)")
            print("watch liveness: a frozen etcd was noticed after \(detected) (deadline \(client.watchDeadline))")

            // What was written meanwhile arrives on a new watch from the last batch's nextRevision.
            let resume = try #require(recorder.batches.last).nextRevision
            try await client.put("/live/b", value: "2")
            let again = WatchRecorder(client.watch(prefix: "/live/", startRevision: resume))
            defer { again.stop() }
            let events = try await again.waitForEvents(1)
            #expect(events.map(\.key) == ["/live/b"])
            try await client.shutdown()
        }
    }
}
