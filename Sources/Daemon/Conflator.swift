import Synchronization

/// Reads a stream on a task of its own and hands its consumer everything that
/// arrived since the consumer last asked, in order. A consumer slower than the
/// stream (the registry turning 20,000 leases into a cluster view after each
/// 128-key transaction) handles a burst in one go instead of one pass per
/// element, and a lone element is handed over at once: no delay is added.
final class Conflator<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        /// Set when the stream ended: nil error for a normal end.
        var end: (any Error)??
        var waiter: CheckedContinuation<Void, Never>?
    }

    /// Shared with the reading task (which must not keep the conflator alive).
    private final class Shared: Sendable {
        let state = Mutex(State())
    }

    private let shared = Shared()
    private let reader = Mutex<Task<Void, Never>?>(nil)

    init(_ source: AsyncThrowingStream<Element, any Error>) {
        let task = Task { [shared] in
            var end: (any Error)?
            do {
                for try await item in source {
                    let waiter = shared.state.withLock { s -> CheckedContinuation<Void, Never>? in
                        s.items.append(item)
                        defer { s.waiter = nil }
                        return s.waiter
                    }
                    waiter?.resume()
                }
            } catch {
                end = error
            }
            let waiter = shared.state.withLock { s -> CheckedContinuation<Void, Never>? in
                s.end = .some(end)
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume()
        }
        reader.withLock { $0 = task }
    }

    deinit { reader.withLock { $0?.cancel() } }

    /// Everything that arrived since the last call (waiting for at least one
    /// element), or nil when the stream ended; throws the stream's error once
    /// the elements before it are taken. Cancelling the caller ends the stream.
    func next() async throws -> [Element]? {
        try await withTaskCancellationHandler {
            while true {
                let taken = shared.state.withLock { s -> ([Element], (any Error)??) in
                    defer { s.items = [] }
                    return (s.items, s.end)
                }
                if !taken.0.isEmpty { return taken.0 }
                if let end = taken.1 {
                    if let error = end { throw error }
                    return nil
                }
                await withCheckedContinuation { continuation in
                    let ready = shared.state.withLock { s -> Bool in
                        if !s.items.isEmpty || s.end != nil { return true }
                        s.waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
        } onCancel: {
            reader.withLock { $0?.cancel() }
        }
    }
}
