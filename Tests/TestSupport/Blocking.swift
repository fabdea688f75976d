import Foundation
import Testing

/// Threads for test code that blocks: `sh`, `waitpid`, `Thread.sleep`, a
/// semaphore. Swift's global executor has one cooperative thread per core (two
/// here) and never adds one when a thread blocks, so two tests inside a
/// `ping -c 3` stop every other test in the process, and an async test that
/// waits with a deadline (a watch, a Kubernetes list) times out without ever
/// having run: clean-clone CI runs failed that way, with unit tests reported
/// as taking 80 s. Suites that block run here instead (`.blocking`), and the
/// global executor stays free for the code that only awaits.
///
/// A job goes to an idle thread; when every thread is busy (running or
/// blocked) a new one is started, up to `limit`, so a blocked test holds only
/// its own thread.
public final class BlockingExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: every field is guarded by `condition`.
    public static let shared = BlockingExecutor(limit: 64)

    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var head = 0
    private var idle = 0
    private var threads = 0
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        if jobs.count - head > idle && threads < limit {
            threads += 1
            let thread = Thread { [self] in work() }
            thread.name = "test-blocking-\(threads)"
            thread.stackSize = 8 << 20
            thread.start()
        } else {
            condition.signal()
        }
        condition.unlock()
    }

    private func work() {
        condition.lock()
        while true {
            while head == jobs.count {
                idle += 1
                condition.wait()
                idle -= 1
            }
            let job = jobs[head]
            head += 1
            if head == jobs.count { jobs.removeAll(keepingCapacity: true); head = 0 }
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
            condition.lock()
        }
    }
}

/// Runs each test of a suite (and the tasks it starts with `async let` or a
/// task group) on `BlockingExecutor.shared`.
public struct BlockingTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        try await withTaskExecutorPreference(BlockingExecutor.shared) { try await function() }
    }
}

extension Trait where Self == BlockingTrait {
    /// The suite's tests block threads (commands, sleeps): run them on threads of their own.
    public static var blocking: Self { BlockingTrait() }
}

/// Runs a blocking call on a thread of its own and awaits it: for the few
/// blocking steps of a suite that otherwise only awaits (starting etcd).
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Swift.Result { try body() }) }.start()
    }
}
