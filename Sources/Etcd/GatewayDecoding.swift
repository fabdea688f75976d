import Foundation

// What turns etcd's gateway answers into values and errors, apart from the
// transport: Foundation only, so the fuzz targets (Fuzz/) compile it without NIO.

extension EtcdClient {
    /// Decodes one watch message: a batch of events, nothing (created,
    /// progress), or the error that ends the watch.
    static func watchBatch(_ line: Data, fail: (EtcdError.Code, String) -> EtcdError) throws(EtcdError) -> WatchBatch? {
        let message: Gateway.StreamMessage<Gateway.WatchResponse>
        do {
            message = try JSONDecoder().decode(Gateway.StreamMessage<Gateway.WatchResponse>.self, from: line)
        } catch {
            throw fail(.malformedResponse, "cannot decode \(snippet(line)): \(error)")
        }
        if let error = message.error {
            let base = fail(.server(grpcCode: error.grpc_code ?? 0), "")
            throw streamError(error, endpoint: base.endpoint, operation: base.operation, key: base.key)
        }
        guard let result = message.result else {
            throw fail(.malformedResponse, "neither result nor error in \(snippet(line))")
        }
        if let compacted = result.compact_revision?.value, compacted > 0 {
            throw fail(.compacted(compactRevision: compacted),
                       "etcdserver: mvcc: required revision has been compacted (history starts at \(compacted))")
        }
        if result.canceled == true {
            let reason = result.cancel_reason.flatMap { $0.isEmpty ? nil : $0 } ?? "no reason given"
            throw fail(.watchCanceled, "etcd cancelled the watch: \(reason)")
        }
        let events = try (result.events ?? []).map { (event) throws(EtcdError) -> WatchEvent in
            guard let kv = event.kv else { throw fail(.malformedResponse, "an event without a key in \(snippet(line))") }
            switch event.type ?? "PUT" {
            case "PUT":
                return .put(kv.keyValue)
            case "DELETE":
                let deleted = kv.keyValue
                return .delete(key: deleted.key, modRevision: deleted.modRevision)
            case let other:
                throw fail(.malformedResponse, "an event of unknown type \(other)")
            }
        }
        guard !events.isEmpty else { return nil }
        return WatchBatch(revision: result.header?.rev ?? events.last?.modRevision ?? 0, events: events)
    }

    /// An error inside a streamed answer.
    static func streamError(_ error: Gateway.StreamError, endpoint: String, operation: String, key: String?) -> EtcdError {
        let message = error.message ?? "unknown error"
        let grpcCode = error.grpc_code ?? 0
        return EtcdError(errorCode(grpcCode: grpcCode, message: message), endpoint: endpoint, operation: operation,
                         key: key, message: "\(message) (gRPC code \(grpcCode))")
    }

    static func errorCode(grpcCode: Int, message: String) -> EtcdError.Code {
        if grpcCode == 5 && message.contains("lease not found") { return .leaseNotFound }
        return .server(grpcCode: grpcCode)
    }

    static func snippet(_ data: Data) -> String {
        let text = String(decoding: data.prefix(200), as: UTF8.self)
        return data.count > 200 ? "\"\(text)...\"" : "\"\(text)\""
    }
}
