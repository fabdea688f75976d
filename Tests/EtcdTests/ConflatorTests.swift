@testable import Daemon
import Testing

/// The registry takes watch batches through a Conflator: what arrived while it
/// was busy comes in one go, a lone batch at once, and the stream's end or error
/// after the batches before it.
@Suite("Conflator: a busy consumer takes a burst in one go")
struct ConflatorTests {
    struct Broken: Error, Equatable {}

    @Test("elements that arrived meanwhile are handed over together, in order; then the error")
    func burstThenError() async throws {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: Int.self, throwing: (any Error).self)
        let conflator = Conflator(stream)
        continuation.yield(1)
        #expect(try await conflator.next() == [1])
        for i in 2...5 { continuation.yield(i) }
        continuation.finish(throwing: Broken())
        // The reader task may not have read all of them yet: collect until the error.
        var seen: [Int] = []
        await #expect(throws: Broken.self) {
            while let items = try await conflator.next() { seen += items }
        }
        #expect(seen == [2, 3, 4, 5])
    }

    @Test("a consumer waiting for the next element gets it when it comes; the end is nil")
    func waitsThenEnds() async throws {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: Int.self, throwing: (any Error).self)
        let conflator = Conflator(stream)
        let waiting = Task { try await conflator.next() }
        try await Task.sleep(for: .milliseconds(50))
        continuation.yield(7)
        #expect(try await waiting.value == [7])
        continuation.finish()
        #expect(try await conflator.next() == nil)
    }

    @Test("cancelling the consumer ends the wait and the stream")
    func cancellation() async throws {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: Int.self, throwing: (any Error).self)
        let terminated = AsyncStream.makeStream(of: Void.self)
        continuation.onTermination = { _ in terminated.continuation.yield() }
        let conflator = Conflator(stream)
        let waiting = Task { try await conflator.next() }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        #expect(try await waiting.value == nil)
        var iterator = terminated.stream.makeAsyncIterator()
        #expect(await iterator.next() != nil, "the source stream was not terminated")
    }
}
