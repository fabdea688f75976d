import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

extension EtcdClient {
    /// Every change to keys under `prefix` from `startRevision` on (inclusive),
    /// those already past included, one batch per etcd watch response.
    ///
    /// The stream does not end by itself: it goes on until the consumer stops
    /// iterating (which closes the watch) or fails with an `EtcdError`:
    /// `.compacted(compactRevision:)` when `startRevision` is older than etcd's
    /// history (list again, then watch from the list's revision + 1),
    /// `.connectionLost` when the connection breaks, etcd ends the stream, or
    /// nothing at all arrives for `watchDeadline` although progress was asked
    /// for every `watchProgressInterval` (a silent partition, a frozen etcd),
    /// `.unreachable` when no endpoint could be reached, `.watchCanceled` or
    /// `.server` when etcd refuses. To resume after an error, watch again from
    /// the last batch's `nextRevision`.
    ///
    /// Uses one connection per watch, on the first endpoint that answers; an
    /// endpoint whose watch broke or went silent is no longer tried first.
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
        // The request body stays open: the gateway passes each JSON message in
        // it to etcd's watch stream, so progress requests can follow the create
        // request on the watch's own connection. `Expect: 100-continue` makes
        // Go's HTTP/1.1 server answer while the body is still open (without it,
        // writing the response head first drains the unread body: with a body
        // that never ends, the head never comes). Measured with etcd 3.4.23.
        let requests = WatchRequests()
        defer { requests.close() }
        // Open the stream on the first endpoint that answers. Opening a watch
        // changes nothing, so any transport failure moves on to the next.
        let (endpoint, response) = try await exchange(
            "/v3/watch", request, over: streams, operation: operation, key: key, idempotent: true,
            body: { requests.open(first: $0 + [UInt8(ascii: "\n")]) }, headers: [("Expect", "100-continue")]
        ) { (endpoint, response) throws -> (String, HTTPClientResponse) in
            guard response.status == .ok else {
                let answer = try await response.body.collect(upTo: 1 << 20)
                throw Self.serverError(status: response.status, body: answer, endpoint: endpoint,
                                       operation: operation, key: key)
            }
            return (endpoint, response)
        }

        let fail: @Sendable (EtcdError.Code, String) -> EtcdError = { code, message in
            EtcdError(code, endpoint: endpoint, operation: operation, key: key, message: message)
        }
        let heard = Heartbeat()
        let interval = watchProgressInterval, deadline = watchDeadline
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await Self.readWatch(response.body, heard: heard, continuation: continuation, fail: fail)
                    throw fail(.connectionLost, "etcd ended the watch stream")
                }
                // Liveness: a partition that drops packets both ways leaves the
                // connection open and silent for as long as TCP retries (about
                // 15 minutes), and a server that gave up on it meanwhile never
                // says so. Ask for progress every interval; hearing nothing at
                // all for the deadline means the connection is dead.
                group.addTask {
                    let progress = Array(try JSONEncoder().encode(Gateway.WatchRequest(progress_request: .init()))) + [UInt8(ascii: "\n")]
                    while true {
                        try await Task.sleep(for: interval)
                        let silence = heard.silence
                        if silence >= deadline {
                            throw fail(.connectionLost, "no answer on the watch for \(Self.seconds(silence)) "
                                       + "(progress requested every \(Self.seconds(interval))); the connection is dead")
                        }
                        requests.send(progress)
                    }
                }
                defer { group.cancelAll() }
                try await group.next()
            }
        } catch {
            if Task.isCancelled {
                continuation.finish()
                return
            }
            let failure = transportError(error, endpoint: endpoint, operation: operation, key: key)
            if failure.code == .connectionLost || failure.code == .timedOut { demote(endpoint: endpoint) }
            throw failure
        }
    }

    /// Reads newline-separated JSON messages, split across chunks as TCP
    /// pleases, until the body ends; every chunk counts as a sign of life.
    private static func readWatch(_ body: HTTPClientResponse.Body, heard: Heartbeat,
                                  continuation: AsyncThrowingStream<WatchBatch, any Error>.Continuation,
                                  fail: (EtcdError.Code, String) -> EtcdError) async throws {
        var pending: [UInt8] = []
        for try await chunk in body {
            heard.beat()
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
    }

    static func seconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(format: "%.1f s", Double(seconds) + Double(attoseconds) / 1e18)
    }
}

/// When a watch last heard from etcd (monotonic clock).
final class Heartbeat: Sendable {
    private let last = Atomic<UInt64>(DispatchTime.now().uptimeNanoseconds)

    func beat() { last.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed) }

    /// How long since the last beat.
    var silence: Duration {
        let now = DispatchTime.now().uptimeNanoseconds, then = last.load(ordering: .relaxed)
        return .nanoseconds(Int64(now > then ? now - then : 0))
    }
}

/// A watch's request body: the create request, then progress requests, on
/// the connection of the last attempt (each endpoint tried gets a new body).
final class WatchRequests: Sendable {
    private let current = Mutex<AsyncStream<ByteBuffer>.Continuation?>(nil)

    func open(first: [UInt8]) -> HTTPClientRequest.Body {
        let (stream, continuation) = AsyncStream.makeStream(of: ByteBuffer.self)
        continuation.yield(ByteBuffer(bytes: first))
        current.withLock {
            $0?.finish()
            $0 = continuation
        }
        return .stream(stream, length: .unknown)
    }

    func send(_ bytes: [UInt8]) { current.withLock { _ = $0?.yield(ByteBuffer(bytes: bytes)) } }

    func close() {
        current.withLock {
            $0?.finish()
            $0 = nil
        }
    }
}
