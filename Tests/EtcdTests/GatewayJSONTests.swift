import Foundation
@testable import Etcd
import Testing

/// The gateway's JSON, decoded from answers recorded from etcd 3.4.23.
struct GatewayJSONTests {
    @Test(arguments: [
        ("/a/", "/a0"),
        ("a", "b"),
        ("", "\0"),
    ])
    func prefixEnd(prefix: String, end: String) {
        #expect(Gateway.prefixEnd(Array(prefix.utf8)) == Array(end.utf8))
    }

    @Test func prefixEndCarriesPast0xff() {
        #expect(Gateway.prefixEnd([0x61, 0xff]) == [0x62])
        #expect(Gateway.prefixEnd([0xff, 0xff]) == [0])
    }

    private func fail(_ code: EtcdError.Code, _ message: String) -> EtcdError {
        EtcdError(code, endpoint: "http://127.0.0.1:2379", operation: "watch", key: "/a/", message: message)
    }

    @Test func watchBatchWithPutAndDelete() throws {
        // A catch-up batch: events of revisions 6 and 9, sent at store revision 9.
        let line = #"{"result":{"header":{"cluster_id":"1","member_id":"2","revision":"9","raft_term":"2"},"events":[{"kv":{"key":"L2Evdg==","create_revision":"6","mod_revision":"6","version":"1","value":"bmV3"}},{"type":"DELETE","kv":{"key":"L2EveA==","mod_revision":"9"}}]}}"#
        let batch = try #require(try EtcdClient.watchBatch(Data(line.utf8), fail: fail))
        #expect(batch.revision == 9)
        #expect(batch.events == [
            .put(KeyValue(key: "/a/v", value: Array("new".utf8), createRevision: 6, modRevision: 6, version: 1, lease: 0)),
            .delete(key: "/a/x", modRevision: 9),
        ])
        #expect(batch.nextRevision == 10)
    }

    @Test func createdAndProgressMessagesAreNoBatch() throws {
        let created = #"{"result":{"header":{"cluster_id":"1","member_id":"2","revision":"9","raft_term":"2"},"created":true}}"#
        #expect(try EtcdClient.watchBatch(Data(created.utf8), fail: fail) == nil)
        let progress = #"{"result":{"header":{"cluster_id":"1","member_id":"2","revision":"12","raft_term":"2"}}}"#
        #expect(try EtcdClient.watchBatch(Data(progress.utf8), fail: fail) == nil)
    }

    @Test func compactedWatch() throws {
        // No header revision at all in this one.
        let line = #"{"result":{"header":{"cluster_id":"1","member_id":"2","raft_term":"2"},"canceled":true,"compact_revision":"5"}}"#
        let error = try #require(throws: EtcdError.self) { try EtcdClient.watchBatch(Data(line.utf8), fail: fail) }
        #expect(error.code == .compacted(compactRevision: 5))
        #expect(error.description == "etcd http://127.0.0.1:2379: watch /a/: etcdserver: mvcc: required revision has been compacted (history starts at 5)")
    }

    @Test func errorsInsideTheStream() throws {
        let canceled = #"{"result":{"header":{"revision":"3"},"canceled":true,"cancel_reason":"permission denied"}}"#
        let cancelError = try #require(throws: EtcdError.self) { try EtcdClient.watchBatch(Data(canceled.utf8), fail: fail) }
        #expect(cancelError.code == .watchCanceled)
        #expect(cancelError.message.contains("permission denied"))

        let failed = #"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
        let streamError = try #require(throws: EtcdError.self) { try EtcdClient.watchBatch(Data(failed.utf8), fail: fail) }
        #expect(streamError.code == .server(grpcCode: 14))
        #expect(streamError.description.contains("etcdserver: no leader"))
        #expect(streamError.description.hasPrefix("etcd http://127.0.0.1:2379: watch /a/: "))

        #expect(throws: EtcdError.self) { try EtcdClient.watchBatch(Data("{not json".utf8), fail: fail) }
    }
}
