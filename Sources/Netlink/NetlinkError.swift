#if canImport(Glibc)
import Glibc
#endif

/// The one error type of the Netlink module: which operation on which object
/// failed, the errno (by name and text), and the kernel's extended-ACK message.
///
/// Rendered as, for example:
/// `add route 10.244.7.0/24 via 10.244.7.0 dev flannel.1: EEXIST (File exists); kernel: Nexthop has invalid gateway`
public struct NetlinkError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was being done, in words a person knows (`"add neighbor 10.244.2.0 lladdr ... dev flannel.1"`).
    public var operation: String
    /// The positive errno value.
    public var code: Int32
    /// The kernel's extended-ACK text, when it gave one.
    public var kernelMessage: String?

    public init(operation: String, code: Int32, kernelMessage: String? = nil) {
        self.operation = operation
        self.code = code
        self.kernelMessage = kernelMessage
    }

    /// The same error about another operation (batches learn the object only later).
    public func about(_ operation: String) -> NetlinkError {
        NetlinkError(operation: operation, code: code, kernelMessage: kernelMessage)
    }

    /// `EEXIST`, `ENOENT`, ... or `errno 123` for the rare ones.
    public var codeName: String { Self.names[code] ?? "errno \(code)" }

    public var reason: String { String(cString: strerror(code)) }

    public var description: String {
        var text = "\(operation): \(codeName) (\(reason))"
        if let kernelMessage, !kernelMessage.isEmpty { text += "; kernel: \(kernelMessage)" }
        return text
    }

    // Pairs, not a literal dictionary: some names share a value (ENOTSUP is
    // EOPNOTSUPP on Linux) and a duplicate key in a literal traps.
    static let names: [Int32: String] = Dictionary([
        (EPERM, "EPERM"), (ENOENT, "ENOENT"), (ESRCH, "ESRCH"), (EINTR, "EINTR"), (EIO, "EIO"),
        (ENXIO, "ENXIO"), (E2BIG, "E2BIG"), (EBADF, "EBADF"), (EAGAIN, "EAGAIN"), (ENOMEM, "ENOMEM"),
        (EACCES, "EACCES"), (EFAULT, "EFAULT"), (EBUSY, "EBUSY"), (EEXIST, "EEXIST"), (ENODEV, "ENODEV"),
        (ENOTDIR, "ENOTDIR"), (EINVAL, "EINVAL"), (ENFILE, "ENFILE"), (EMFILE, "EMFILE"), (ENOSPC, "ENOSPC"),
        (ERANGE, "ERANGE"), (EMSGSIZE, "EMSGSIZE"), (EPROTONOSUPPORT, "EPROTONOSUPPORT"),
        (EOPNOTSUPP, "EOPNOTSUPP"), (EAFNOSUPPORT, "EAFNOSUPPORT"), (EADDRINUSE, "EADDRINUSE"),
        (EADDRNOTAVAIL, "EADDRNOTAVAIL"), (ENETDOWN, "ENETDOWN"), (ENETUNREACH, "ENETUNREACH"),
        (ENOBUFS, "ENOBUFS"), (ETIMEDOUT, "ETIMEDOUT"), (ECONNREFUSED, "ECONNREFUSED"),
        (EHOSTUNREACH, "EHOSTUNREACH"), (EPROTO, "EPROTO"), (ENOTCONN, "ENOTCONN"),
    ], uniquingKeysWith: { first, _ in first })
}

/// Runs a raw call, retrying on EINTR, and turns a failure into a `NetlinkError`.
@inline(__always)
func retryingEINTR<T: BinaryInteger>(_ operation: @autoclosure () -> String, _ call: () -> T) throws(NetlinkError) -> T {
    while true {
        let result = call()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        throw NetlinkError(operation: operation(), code: code)
    }
}
