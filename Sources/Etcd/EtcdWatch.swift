import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

extension EtcdClient {
    /// Every change to keys under `prefix` from `startRevision` on (inclusive),
    /// those already past included, one batch per etcd watch response.
    ///
    /// The stream does not end by itself: it goes on until the consumer stops
    /// iterating (which closes the watch) or fails with an `EtcdError`:
    /// `.compacted(compactRevision:)` when `startRevision` is older than etcd's
    /// history (list again, then watch from the list's revision + 1),
    /// `.connectionLost` when the connection breaks or etcd ends the stream,
    /// `.unreachable` when no endpoint could be reached, `.watchCanceled` or
    /// `.server` when etcd refuses. To resume after an error, watch again from
    /// the last batch's `nextRevision`.
    ///
    /// Uses one connection per watch, on the first endpoint that answers.
    public func watch(prefix: String, startRevision: Int64) -> AsyncThrowingStream<WatchBatch, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WatchBatch.self, throwing: (any Error).self)
        let task = Task {
            do throws(EtcdError) {
                try await self.runWatch(prefix: prefix, startRevision: startRevision, continuation: continuation)
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func runWatch(prefix: String, startRevision: Int64,
                          continuation: AsyncThrowingStream<WatchBatch, any Error>.Continuation) async throws(EtcdError) {
        let operation = "watch"
        let key = prefix
        let start = prefix.isEmpty ? [0] : Array(prefix.utf8)
        let request = Gateway.WatchRequest(create_request: .init(
            key: Gateway.base64(start),
            range_end: Gateway.base64(Gateway.prefixEnd(Array(prefix.utf8))),
            start_revision: Gateway.int64(startRevision),
            // etcd then says every 10 minutes (its default) that it is still there.
            progress_notify: true))
        // Open the stream on the first endpoint that answers. Opening a watch
        // changes nothing, so any transport failure moves on to the next.
        let (endpoint, response) = try await exchange(
            "/v3/watch", request, over: streams, operation: operation, key: key, idempotent: true
        ) { (endpoint, response) throws -> (String, HTTPClientResponse) in
            guard response.status == .ok else {
                let answer = try await response.body.collect(upTo: 1 << 20)
                throw Self.serverError(status: response.status, body: answer, endpoint: endpoint,
                                       operation: operation, key: key)
            }
            return (endpoint, response)
        }

        func fail(_ code: EtcdError.Code, _ message: String) -> EtcdError {
            EtcdError(code, endpoint: endpoint, operation: operation, key: key, message: message)
        }
        // Newline-separated JSON messages, split across chunks as TCP pleases.
        var pending: [UInt8] = []
        do {
            for try await chunk in response.body {
                pending.append(contentsOf: chunk.readableBytesView)
                var consumed = 0
                while let newline = pending[consumed...].firstIndex(of: UInt8(ascii: "\n")) {
                    let line = pending[consumed..<newline]
                    consumed = newline + 1
                    if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
                    if let batch = try Self.watchBatch(Data(line), fail: fail) {
                        continuation.yield(batch)
                    }
                }
                pending.removeFirst(consumed)
                if pending.count > Self.maxBodyBytes {
                    throw fail(.malformedResponse, "a watch message longer than \(Self.maxBodyBytes) bytes")
                }
            }
        } catch {
            if Task.isCancelled {
                continuation.finish()
                return
            }
            throw transportError(error, endpoint: endpoint, operation: operation, key: key)
        }
        if Task.isCancelled {
            continuation.finish()
            return
        }
        throw fail(.connectionLost, "etcd ended the watch stream")
    }
}
