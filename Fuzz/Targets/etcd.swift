// libFuzzer target: etcd's JSON gateway answers, as EtcdClient reads them.
// The input is one HTTP answer body. It is decoded as every unary answer
// (range, put, delete, txn, lease grant/keepalive/time-to-live/revoke, error
// bodies; a streamed answer by its first line, as `call` does), and split into
// lines as a watch stream is, each line through `watchBatch`. A batch must
// give a resume revision, as the daemon asks of it. The byte-level range reader
// (list, get) answers as JSONDecoder or not at all.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    let firstLine = data.firstIndex(of: UInt8(ascii: "\n")).map { data[..<$0] } ?? data
    let decoder = JSONDecoder()

    if let range = try? decoder.decode(Gateway.RangeResponse.self, from: data) {
        let kvs = (range.kvs ?? []).map(\.keyValue)
        _ = (kvs.map(\.string), range.header?.rev, range.count?.value, range.more)
    }
    // The byte-level range reader answers as JSONDecoder or not at all.
    if let read = data.withUnsafeBytes(Gateway.RangeReader.read) {
        precondition(read == (try? Gateway.RangeAnswer(decoding: data)), "the range reader parts from JSONDecoder")
    }
    _ = (try? decoder.decode(Gateway.PutResponse.self, from: data))?.header?.rev
    _ = (try? decoder.decode(Gateway.DeleteRangeResponse.self, from: data))?.deleted?.value
    _ = (try? decoder.decode(Gateway.TxnResponse.self, from: data))?.succeeded
    if let grant = try? decoder.decode(Gateway.LeaseGrantResponse.self, from: data) {
        _ = (grant.ID?.value, grant.TTL?.value, grant.error)
    }
    if let keepAlive = try? decoder.decode(Gateway.StreamMessage<Gateway.LeaseKeepAliveResponse>.self, from: firstLine) {
        if let error = keepAlive.error {
            _ = EtcdClient.streamError(error, endpoint: "http://127.0.0.1:2379", operation: "keep alive", key: "lease 1").description
        }
        _ = keepAlive.result?.TTL?.value
    }
    _ = (try? decoder.decode(Gateway.LeaseTimeToLiveResponse.self, from: data))?.grantedTTL?.value
    _ = (try? decoder.decode(Gateway.LeaseRevokeResponse.self, from: data))?.header?.rev
    if let body = try? decoder.decode(Gateway.ErrorBody.self, from: data), let message = body.message ?? body.error {
        _ = EtcdClient.errorCode(grpcCode: body.code ?? 0, message: message)
    }
    _ = EtcdClient.snippet(data)

    // The watch stream: newline-separated messages, blank lines skipped (EtcdWatch.runWatch).
    let fail = { (code: EtcdError.Code, message: String) in
        EtcdError(code, endpoint: "http://127.0.0.1:2379", operation: "watch", key: "/coreos.com/network/subnets/", message: message)
    }
    for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
        if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
        do {
            guard let batch = try EtcdClient.watchBatch(Data(line), fail: fail) else { continue }
            precondition(!batch.events.isEmpty)
            _ = batch.nextRevision
            for event in batch.events { _ = (event.key, event.modRevision) }
        } catch {
            precondition(!error.description.isEmpty)
            _ = error.compactRevision
        }
    }
    return 0
}
