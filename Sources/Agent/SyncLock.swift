import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive lock so two syncs on one host never interleave. `flock(2)` on a
/// file: released by the kernel when the process ends, even by SIGKILL, so a
/// killed sync never leaves a stale lock behind.
public final class SyncLock {
    private let descriptor: Int32
    public let path: String

    /// The default lock: one per network namespace (hosts simulated in
    /// namespaces on one machine do not block each other).
    public static var defaultPath: String {
        var info = stat()
        let id = stat("/proc/self/ns/net", &info) == 0 ? "-\(info.st_ino)" : ""
        return "/run/vxlan-agent/sync\(id).lock"
    }

    public enum Failure: Error, CustomStringConvertible {
        case busy(path: String, holder: String?, waited: Duration)
        case cannotOpen(path: String, reason: String)

        public var description: String {
            switch self {
            case .busy(let path, let holder, let waited):
                "another vxlan-agent\(holder.map { " (pid \($0))" } ?? "") holds the lock \(path); gave up after \(waited)"
            case .cannotOpen(let path, let reason):
                "cannot open the lock file \(path): \(reason)"
            }
        }
    }

    /// Takes the lock, waiting up to `timeout`.
    public init(path: String, timeout: Duration) throws(Failure) {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw .cannotOpen(path: path, reason: reason)
            }
            if clock.now >= deadline {
                var buffer = [UInt8](repeating: 0, count: 32)
                let count = pread(fd, &buffer, buffer.count, 0)
                let holder = count > 0 ? String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : nil
                close(fd)
                throw .busy(path: path, holder: holder, waited: timeout)
            }
            usleep(50_000)
        }
        descriptor = fd
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    deinit {
        _ = ftruncate(descriptor, 0)
        close(descriptor)
    }
}
