/// Everything that can go wrong talking to etcd, with where and what:
/// `etcd https://10.0.0.1:2379: put /coreos.com/network/subnets/10.244.1.0-24:
/// etcdserver: requested lease not found (gRPC code 5, HTTP 404)`.
public struct EtcdError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// No endpoint could be connected to: refused, unreachable, connect
        /// timeout, or the TLS handshake failed (wrong CA, certificate refused).
        case unreachable
        /// The endpoint took longer than the request timeout to answer.
        case timedOut
        /// The connection broke after the request was sent, or etcd ended a
        /// stream (a watch) that should have gone on.
        case connectionLost
        /// etcd answered with an error; its gRPC status code
        /// (3 invalid argument, 5 not found, 9 failed precondition, 11 out of range, ...).
        case server(grpcCode: Int)
        /// The lease does not exist (never did, expired, or was revoked).
        case leaseNotFound
        /// The requested revision was compacted away; etcd keeps history from
        /// `compactRevision` on. List again and watch from the list's revision + 1.
        case compacted(compactRevision: Int64)
        /// etcd cancelled a watch for a reason other than compaction.
        case watchCanceled
        /// etcd's answer could not be understood.
        case malformedResponse
        /// A caller's mistake: a bad endpoint, missing TLS files, a client already shut down.
        case invalidArgument
        /// The calling task was cancelled.
        case cancelled
    }

    public var code: Code
    /// The endpoint that failed, or all endpoints tried, comma-separated.
    public var endpoint: String
    /// What was being done: `get`, `list`, `put`, `delete`, `create`, `grant lease`, ...
    public var operation: String
    /// The key, prefix or lease concerned, if any.
    public var key: String?
    /// etcd's own message, or the transport's.
    public var message: String

    public init(_ code: Code, endpoint: String, operation: String, key: String? = nil, message: String) {
        self.code = code
        self.endpoint = endpoint
        self.operation = operation
        self.key = key
        self.message = message
    }

    public var description: String {
        let subject = key.map { "\(operation) \($0)" } ?? operation
        return "etcd \(endpoint): \(subject): \(message)"
    }

    /// The first revision etcd still has, when the error is `.compacted`.
    public var compactRevision: Int64? {
        if case .compacted(let revision) = code { return revision }
        return nil
    }
}
