import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// An etcd v3 client over etcd's JSON gateway (`POST /v3/...`, HTTP/1.1), the
/// subset that a flannel-compatible agent needs: keys, prefix lists,
/// create-if-absent, leases and prefix watches.
///
/// Requests go to the endpoint that last answered; when it cannot be reached
/// (refused, unreachable, TLS handshake failed) the next one is tried, in order.
/// Reads are also retried on the next endpoint after a timeout or a broken
/// connection; writes are not, since etcd may have applied them.
///
/// Call `shutdown()` when done.
public final class EtcdClient: Sendable {
    /// The endpoints, normalised to `scheme://host:port`.
    public let endpoints: [String]
    public let requestTimeout: Duration
    /// How often an open watch asks etcd for a progress notification.
    public let watchProgressInterval: Duration
    /// How long an open watch may hear nothing (no event, no progress answer)
    /// before its connection counts as dead: the larger of the request
    /// timeout and three progress intervals.
    public var watchDeadline: Duration { max(requestTimeout, watchProgressInterval * 3) }

    /// Unary calls: the request timeout bounds the wait for the answer's head
    /// and each wait for more of its body.
    let unary: HTTPClient
    /// Watches: no read timeout, a watch may be quiet for hours.
    let streams: HTTPClient
    /// The index of the endpoint that answered last.
    let preferred = Atomic<Int>(0)
    private let isShutDown = Atomic<Bool>(false)

    /// The largest answer read into memory (a list of every key under a prefix).
    static let maxBodyBytes = 64 << 20

    /// - Parameters:
    ///   - endpoints: `http://host:port` or `https://host:port`; without a
    ///     scheme, `https` when `tls` is given and `http` otherwise.
    ///   - tls: trust roots and client certificate for `https` endpoints. Files
    ///     are read now, so a missing or unreadable file is reported here.
    ///   - requestTimeout: how long one endpoint may take to answer one request.
    ///   - watchProgressInterval: how often an open watch asks etcd whether it
    ///     is still there (a progress request on the watch's own connection); a
    ///     watch that hears nothing for `watchDeadline` fails with `.connectionLost`.
    public init(endpoints: [String], tls: EtcdTLS? = nil, requestTimeout: Duration = .seconds(5),
                watchProgressInterval: Duration = .seconds(2)) throws(EtcdError) {
        func invalid(_ message: String) -> EtcdError {
            EtcdError(.invalidArgument, endpoint: endpoints.joined(separator: ","), operation: "configure client", message: message)
        }
        guard !endpoints.isEmpty else { throw invalid("no endpoint given") }
        self.endpoints = try endpoints.map { (text) throws(EtcdError) -> String in
            guard let normalised = Self.normalise(endpoint: text, tls: tls != nil) else {
                throw invalid("endpoint \"\(text)\" is not http(s)://host:port")
            }
            return normalised
        }
        guard requestTimeout > .zero else { throw invalid("the request timeout must be positive") }
        guard watchProgressInterval > .zero else { throw invalid("the watch progress interval must be positive") }
        self.requestTimeout = requestTimeout
        self.watchProgressInterval = watchProgressInterval

        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        if let tls {
            if (tls.certFile == nil) != (tls.keyFile == nil) {
                throw invalid("a client certificate needs both certFile and keyFile")
            }
            if let caFile = tls.caFile {
                do {
                    tlsConfiguration.trustRoots = .certificates(try Self.loadCertificates(caFile))
                } catch {
                    throw invalid("cannot read the CA file \(caFile): \(error)")
                }
            }
            if let certFile = tls.certFile, let keyFile = tls.keyFile {
                do {
                    tlsConfiguration.certificateChain = try Self.loadCertificates(certFile).map { .certificate($0) }
                } catch {
                    throw invalid("cannot read the client certificate \(certFile): \(error)")
                }
                do {
                    tlsConfiguration.privateKey = .privateKey(try Self.loadPrivateKey(keyFile))
                } catch {
                    throw invalid("cannot read the client key \(keyFile): \(error)")
                }
            }
        }

        let timeout = TimeAmount(requestTimeout)
        // Half the request timeout to connect, so that a silent endpoint is
        // known as unreachable (and the next one tried, even for a write)
        // before the request as a whole times out.
        let connectTimeout = TimeAmount.nanoseconds(max(timeout.nanoseconds / 2, 1))
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tlsConfiguration,
            redirectConfiguration: .disallow,
            timeout: .init(connect: connectTimeout, read: timeout),
            decompression: .disabled)
        configuration.httpVersion = .http1Only
        // Fail at once when an endpoint cannot be reached, so the next can be tried.
        configuration.connectionPool.retryConnectionEstablishment = false
        self.unary = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        // No read timeout: a watch may be quiet for hours. Its liveness is
        // checked with progress requests instead (EtcdWatch.swift).
        configuration.timeout = .init(connect: connectTimeout, read: nil)
        // One connection per watch; the default limit of 8 would queue a ninth watch.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 256
        self.streams = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    deinit {
        // A client dropped without shutdown() must not leak its connections
        // (nor trip async-http-client's debug check).
        if !isShutDown.load(ordering: .acquiring) {
            unary.shutdown { _ in }
            streams.shutdown { _ in }
        }
    }

    /// Closes every connection; open watches end with an error. Idempotent.
    public func shutdown() async throws(EtcdError) {
        guard !isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        do {
            try await unary.shutdown()
            try await streams.shutdown()
        } catch {
            throw EtcdError(.invalidArgument, endpoint: endpoints.joined(separator: ","), operation: "shut down",
                            message: "\(error)")
        }
    }

    // MARK: Keys

    /// The key's current value, or nil when there is none.
    public func get(_ key: String) async throws(EtcdError) -> KeyValue? {
        let request = Gateway.RangeRequest(key: Gateway.base64(key))
        let (_, answer) = try await call("/v3/kv/range", request, operation: "get", key: key, idempotent: true,
                                         decode: Gateway.RangeAnswer.init)
        return answer.kvs.first
    }

    /// Every key that starts with `prefix`, in key order, and the store revision
    /// they were read at: a watch from `revision + 1` misses nothing after it.
    public func list(prefix: String) async throws(EtcdError) -> (kvs: [KeyValue], revision: Int64) {
        let start = prefix.isEmpty ? [0] : Array(prefix.utf8)
        let request = Gateway.RangeRequest(key: Gateway.base64(start),
                                           range_end: Gateway.base64(Gateway.prefixEnd(Array(prefix.utf8))))
        let (endpoint, answer) = try await call("/v3/kv/range", request, operation: "list", key: prefix, idempotent: true,
                                                decode: Gateway.RangeAnswer.init)
        if answer.more {
            throw EtcdError(.malformedResponse, endpoint: endpoint, operation: "list", key: prefix,
                            message: "etcd returned a partial list without being asked to")
        }
        return (answer.kvs, answer.revision)
    }

    /// The keys under `prefix` created at `revision` or later, without their
    /// values (`min_create_revision`, `keys_only`): what other clients created
    /// since a list, at the cost of those keys alone.
    public func keys(prefix: String, createdSince revision: Int64) async throws(EtcdError) -> [KeyValue] {
        let request = Gateway.RangeRequest(key: Gateway.base64(Array(prefix.utf8)),
                                           range_end: Gateway.base64(Gateway.prefixEnd(Array(prefix.utf8))),
                                           min_create_revision: Gateway.int64(revision), keys_only: true)
        let (_, answer) = try await call("/v3/kv/range", request, operation: "list", key: prefix, idempotent: true,
                                         decode: Gateway.RangeAnswer.init)
        return answer.kvs
    }

    /// Sets the key, attached to `lease` when given; returns the new store revision.
    @discardableResult
    public func put(_ key: String, value: String, lease: Int64? = nil) async throws(EtcdError) -> Int64 {
        try await put(key, bytes: Array(value.utf8), lease: lease)
    }

    /// Sets the key to raw bytes, attached to `lease` when given; returns the new store revision.
    @discardableResult
    public func put(_ key: String, bytes: [UInt8], lease: Int64? = nil) async throws(EtcdError) -> Int64 {
        let request = Gateway.PutRequest(key: Gateway.base64(key), value: Gateway.base64(bytes),
                                         lease: lease.map(Gateway.int64))
        let (_, answer) = try await call("/v3/kv/put", request, as: Gateway.PutResponse.self,
                                         operation: "put", key: key, idempotent: false)
        return answer.header?.rev ?? 0
    }

    /// Deletes the key; returns how many keys were deleted (0 or 1).
    @discardableResult
    public func delete(_ key: String) async throws(EtcdError) -> Int64 {
        let request = Gateway.DeleteRangeRequest(key: Gateway.base64(key))
        let (_, answer) = try await call("/v3/kv/deleterange", request, as: Gateway.DeleteRangeResponse.self,
                                         operation: "delete", key: key, idempotent: false)
        return answer.deleted?.value ?? 0
    }

    /// Creates the key only if it does not exist, in one transaction
    /// `If(Version(key) == 0).Then(Put(key, value, lease))`, as flannel takes a
    /// subnet. Returns false, changing nothing, when the key exists.
    public func createIfAbsent(_ key: String, value: String, lease: Int64?) async throws(EtcdError) -> Bool {
        let encodedKey = Gateway.base64(key)
        let request = Gateway.TxnRequest(
            compare: [.init(key: encodedKey, target: "VERSION", result: "EQUAL", version: "0")],
            success: [.init(request_put: .init(key: encodedKey, value: Gateway.base64(value),
                                               lease: lease.map(Gateway.int64)))],
            failure: [])
        let (_, answer) = try await call("/v3/kv/txn", request, as: Gateway.TxnResponse.self,
                                         operation: "create", key: key, idempotent: false)
        return answer.succeeded ?? false
    }

    // MARK: Leases

    /// Grants a lease of `ttlSeconds` (etcd raises very short ones to its
    /// minimum); returns its ID.
    public func grantLease(ttlSeconds: Int64) async throws(EtcdError) -> Int64 {
        let request = Gateway.LeaseGrantRequest(TTL: Gateway.int64(ttlSeconds), ID: "0")
        let (endpoint, answer) = try await call("/v3/lease/grant", request, as: Gateway.LeaseGrantResponse.self,
                                                operation: "grant lease", key: "of \(ttlSeconds) s", idempotent: false)
        if let error = answer.error, !error.isEmpty {
            throw EtcdError(.server(grpcCode: 0), endpoint: endpoint, operation: "grant lease", key: "of \(ttlSeconds) s",
                            message: error)
        }
        guard let id = answer.ID?.value, id != 0 else {
            throw EtcdError(.malformedResponse, endpoint: endpoint, operation: "grant lease", key: "of \(ttlSeconds) s",
                            message: "no lease ID in the answer")
        }
        return id
    }

    /// Renews the lease once; returns its TTL in seconds from now. Throws
    /// `.leaseNotFound` when the lease is gone (expired or revoked), which
    /// etcd's gateway reports as a keepalive answer without a TTL.
    @discardableResult
    public func keepAlive(lease: Int64) async throws(EtcdError) -> Int64 {
        let name = Self.leaseName(lease)
        let request = Gateway.LeaseIDRequest(ID: Gateway.int64(lease))
        let (endpoint, message) = try await call("/v3/lease/keepalive", request,
                                                 as: Gateway.StreamMessage<Gateway.LeaseKeepAliveResponse>.self,
                                                 operation: "keep alive", key: name, idempotent: true, streamed: true)
        if let error = message.error {
            throw Self.streamError(error, endpoint: endpoint, operation: "keep alive", key: name)
        }
        let ttl = message.result?.TTL?.value ?? 0
        guard ttl > 0 else {
            throw EtcdError(.leaseNotFound, endpoint: endpoint, operation: "keep alive", key: name,
                            message: "etcdserver: requested lease not found (expired or revoked)")
        }
        return ttl
    }

    /// The lease's remaining TTL in seconds, or nil when it does not exist.
    public func timeToLive(lease: Int64) async throws(EtcdError) -> Int64? {
        let request = Gateway.LeaseIDRequest(ID: Gateway.int64(lease))
        let answer: Gateway.LeaseTimeToLiveResponse
        do {
            (_, answer) = try await call("/v3/lease/timetolive", request, as: Gateway.LeaseTimeToLiveResponse.self,
                                         operation: "time to live", key: Self.leaseName(lease), idempotent: true)
        } catch where error.code == Self.noSuchRoute {
            // The path of etcd before 3.4 (3.4 serves both).
            (_, answer) = try await call("/v3/kv/lease/timetolive", request, as: Gateway.LeaseTimeToLiveResponse.self,
                                         operation: "time to live", key: Self.leaseName(lease), idempotent: true)
        }
        // etcd answers TTL -1 for a lease it does not know.
        guard let ttl = answer.TTL?.value, ttl >= 0 else { return nil }
        return ttl
    }

    /// Revokes the lease, deleting every key attached to it. Throws
    /// `.leaseNotFound` when there is no such lease.
    public func revoke(lease: Int64) async throws(EtcdError) {
        let request = Gateway.LeaseIDRequest(ID: Gateway.int64(lease))
        do {
            _ = try await call("/v3/lease/revoke", request, as: Gateway.LeaseRevokeResponse.self,
                               operation: "revoke", key: Self.leaseName(lease), idempotent: false)
        } catch where error.code == Self.noSuchRoute {
            _ = try await call("/v3/kv/lease/revoke", request, as: Gateway.LeaseRevokeResponse.self,
                               operation: "revoke", key: Self.leaseName(lease), idempotent: false)
        }
    }

    /// "lease 694d7d8b4e8a4b12", in hexadecimal as etcdctl prints it.
    static func leaseName(_ lease: Int64) -> String { "lease " + String(UInt64(bitPattern: lease), radix: 16) }
}

// MARK: Transport

extension EtcdClient {
    /// POSTs `request` to `path` on the first endpoint that answers and decodes
    /// the answer. With `streamed`, the answer is a stream of `{"result":...}`
    /// lines of which the first is decoded.
    func call<Request: Encodable, Response: Decodable>(
        _ path: String, _ request: Request, as: Response.Type,
        operation: String, key: String?, idempotent: Bool, streamed: Bool = false
    ) async throws(EtcdError) -> (endpoint: String, response: Response) {
        try await exchange(path, request, over: unary, operation: operation, key: key, idempotent: idempotent) {
            (endpoint, response) throws -> (endpoint: String, response: Response) in
            let answer = try await response.body.collect(upTo: Self.maxBodyBytes)
            guard response.status == .ok else {
                throw Self.serverError(status: response.status, body: answer, endpoint: endpoint,
                                       operation: operation, key: key)
            }
            var data = Data(answer.readableBytesView)
            if streamed, let newline = data.firstIndex(of: UInt8(ascii: "\n")) {
                data = data[..<newline]
            }
            do {
                return (endpoint, try JSONDecoder().decode(Response.self, from: data))
            } catch {
                throw EtcdError(.malformedResponse, endpoint: endpoint, operation: operation, key: key,
                                message: "cannot decode \(Self.snippet(data)): \(error)")
            }
        }
    }

    /// The same with the answer's bytes read by `decode`, in place (a list of
    /// 10,000 leases is 3 MB: `Gateway.RangeAnswer` reads it without a copy).
    func call<Request: Encodable, Response>(
        _ path: String, _ request: Request,
        operation: String, key: String?, idempotent: Bool, decode: (UnsafeRawBufferPointer) throws -> Response
    ) async throws(EtcdError) -> (endpoint: String, response: Response) {
        try await exchange(path, request, over: unary, operation: operation, key: key, idempotent: idempotent) {
            (endpoint, response) throws -> (endpoint: String, response: Response) in
            let answer = try await response.body.collect(upTo: Self.maxBodyBytes)
            guard response.status == .ok else {
                throw Self.serverError(status: response.status, body: answer, endpoint: endpoint,
                                       operation: operation, key: key)
            }
            do {
                return (endpoint, try answer.withUnsafeReadableBytes(decode))
            } catch {
                throw EtcdError(.malformedResponse, endpoint: endpoint, operation: operation, key: key,
                                message: "cannot decode \(Self.snippet(Data(answer.readableBytesView))): \(error)")
            }
        }
    }

    /// POSTs `request` to `path` on each endpoint in turn, from the one that
    /// answered last, until one answers; `read` takes that answer. An
    /// `EtcdError` from `read` (etcd said no) ends the exchange; a transport
    /// failure moves on to the next endpoint when the request cannot have
    /// reached etcd, or when it is `idempotent`.
    func exchange<Request: Encodable, Result>(
        _ path: String, _ request: Request, over client: HTTPClient,
        operation: String, key: String?, idempotent: Bool,
        body makeBody: ([UInt8]) -> HTTPClientRequest.Body = { .bytes($0) }, headers: [(String, String)] = [],
        read: (String, HTTPClientResponse) async throws -> Result
    ) async throws(EtcdError) -> Result {
        let body: [UInt8]
        do {
            body = Array(try JSONEncoder().encode(request))
        } catch {
            throw EtcdError(.invalidArgument, endpoint: endpoints.joined(separator: ","), operation: operation, key: key,
                            message: "cannot encode the request: \(error)")
        }
        var failures: [EtcdError] = []
        let first = preferred.load(ordering: .relaxed)
        for offset in endpoints.indices {
            let index = (first + offset) % endpoints.count
            let endpoint = endpoints[index]
            var attempt = 0
            while true {
                attempt += 1
                do {
                    var http = HTTPClientRequest(url: endpoint + path)
                    http.method = .POST
                    http.headers.add(name: "Content-Type", value: "application/json")
                    for (name, value) in headers { http.headers.add(name: name, value: value) }
                    http.body = makeBody(body)
                    let response = try await client.execute(http, timeout: TimeAmount(requestTimeout))
                    if index != first { preferred.store(index, ordering: .relaxed) }
                    return try await read(endpoint, response)
                } catch let error as EtcdError {
                    throw error
                } catch {
                    // A pooled connection that etcd closed while it was idle
                    // (etcd restarted, or its idle timeout) fails before the
                    // request is written: try once more on a new connection.
                    if attempt == 1 && Self.isStaleConnection(error, idempotent: idempotent) { continue }
                    let failure = transportError(error, endpoint: endpoint, operation: operation, key: key)
                    // An endpoint that was never reached cannot have applied the
                    // request; one that broke off or went silent may have.
                    let tryNext = failure.code == .unreachable
                        || (idempotent && (failure.code == .timedOut || failure.code == .connectionLost))
                    guard tryNext else { throw failure }
                    failures.append(failure)
                    break
                }
            }
        }
        throw Self.allFailed(failures, operation: operation, key: key)
    }

    /// Moves on from `endpoint` when it is the preferred one: it stopped
    /// answering on one connection (a dead watch), and a partition takes every
    /// connection to it, so the next request should not wait for it first.
    func demote(endpoint: String) {
        guard endpoints.count > 1, let index = endpoints.firstIndex(of: endpoint) else { return }
        _ = preferred.compareExchange(expected: index, desired: (index + 1) % endpoints.count, ordering: .relaxed)
    }

    /// One error for a request that no endpoint answered.
    static func allFailed(_ failures: [EtcdError], operation: String, key: String?) -> EtcdError {
        guard failures.count > 1, let last = failures.last else { return failures[0] }
        let code = failures.allSatisfy { $0.code == .unreachable } ? EtcdError.Code.unreachable : last.code
        return EtcdError(code, endpoint: failures.map(\.endpoint).joined(separator: ","), operation: operation, key: key,
                         message: "no endpoint answered: "
                             + failures.map { "\($0.endpoint): \($0.message)" }.joined(separator: "; "))
    }

    /// The code for a gateway path that this etcd does not serve: gRPC's UNIMPLEMENTED.
    static let noSuchRoute = EtcdError.Code.server(grpcCode: 12)

    /// An answer that is not 200: `{"error":"...","message":"...","code":N}`.
    static func serverError(status: HTTPResponseStatus, body: ByteBuffer, endpoint: String,
                            operation: String, key: String?) -> EtcdError {
        let data = Data(body.readableBytesView)
        guard let parsed = try? JSONDecoder().decode(Gateway.ErrorBody.self, from: data),
              let message = parsed.message ?? parsed.error else {
            // The gateway's router answers a path it does not know with a
            // plain-text 404; etcd's own errors are JSON.
            let code = status == .notFound ? noSuchRoute : .server(grpcCode: 0)
            let what = status == .notFound ? "; this etcd has no such JSON gateway endpoint" : ""
            return EtcdError(code, endpoint: endpoint, operation: operation, key: key,
                             message: "HTTP \(status.code) \(status.reasonPhrase): \(snippet(data))\(what)")
        }
        let grpcCode = parsed.code ?? 0
        var hint = ""
        if grpcCode == 14 && endpoint.hasPrefix("https://") {
            // etcd's gateway talks to etcd's own gRPC server with etcd's --cert-file
            // as its client certificate; under --client-cert-auth that
            // certificate is refused unless it allows client authentication.
            hint = "; etcd's gateway could not reach etcd itself: with --client-cert-auth, etcd's --cert-file"
                + " must allow client authentication (extendedKeyUsage clientAuth)"
        }
        return EtcdError(errorCode(grpcCode: grpcCode, message: message), endpoint: endpoint, operation: operation,
                         key: key, message: "\(message) (gRPC code \(grpcCode), HTTP \(status.code)\(hint))")
    }

    /// `host:port` becomes `http://host:port` (`https` with TLS); a trailing slash goes.
    static func normalise(endpoint: String, tls: Bool) -> String? {
        var text = endpoint.trimmingCharacters(in: .whitespaces)
        if !text.contains("://") { text = (tls ? "https://" : "http://") + text }
        while text.hasSuffix("/") { text.removeLast() }
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty, url.path.isEmpty, url.query == nil else { return nil }
        return text
    }

    static func loadCertificates(_ path: String) throws -> [NIOSSLCertificate] {
        try checkReadable(path)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw FileProblem(description: "not a PEM certificate (\(error))")
        }
        guard !certificates.isEmpty else { throw FileProblem(description: "no PEM certificate in it") }
        return certificates
    }

    static func loadPrivateKey(_ path: String) throws -> NIOSSLPrivateKey {
        try checkReadable(path)
        do {
            return try NIOSSLPrivateKey(file: path, format: .pem)
        } catch {
            throw FileProblem(description: "not an unencrypted PEM private key (\(error))")
        }
    }

    private static func checkReadable(_ path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else { throw FileProblem(description: "no such file") }
        guard FileManager.default.isReadableFile(atPath: path) else { throw FileProblem(description: "not readable") }
    }

    private struct FileProblem: Error, CustomStringConvertible {
        var description: String
    }
}
