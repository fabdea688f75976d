import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Reconcile
import Registry

/// What went wrong talking to the Kubernetes API server: the operation, the
/// server, the HTTP status if one came, and the server's own message.
public struct KubeError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var server: String
    /// The HTTP status (or a watch ERROR event's code); nil: no answer.
    public var status: Int?
    public var message: String

    public init(operation: String, server: String, status: Int? = nil, message: String) {
        self.operation = operation
        self.server = server
        self.status = status
        self.message = message
    }

    /// The resourceVersion asked for is too old (410 Gone): list again.
    public var isGone: Bool { status == 410 }

    public var description: String {
        var text = "kubernetes \(server): \(operation): " + (status.map { "HTTP \($0): " } ?? "") + message
        if status == 401 { text += " (the token or client certificate is not accepted)" }
        if status == 403 {
            text += " (RBAC: the service account needs get, list, watch on nodes and patch on nodes/status: deploy/kube-rbac.yaml)"
        }
        return text
    }
}

/// How to reach and authenticate to the API server: from a kubeconfig, or the
/// pod's service account (in-cluster), as client-go's `BuildConfigFromFlags`.
public struct KubeCredentials: Sendable, Hashable {
    /// `https://host:port` (no trailing slash).
    public var server: String
    /// The cluster CA (PEM); nil: the system's roots.
    public var caPEM: [UInt8]?
    /// A bearer token; or `tokenFile`, read again for every request (service
    /// account tokens are rotated).
    public var token: String?
    public var tokenFile: String?
    public var clientCertificatePEM: [UInt8]?
    public var clientKeyPEM: [UInt8]?
    public var insecureSkipTLSVerify = false
    /// Where these came from, for messages.
    public var origin: String

    public init(server: String, caPEM: [UInt8]? = nil, token: String? = nil, tokenFile: String? = nil,
                clientCertificatePEM: [UInt8]? = nil, clientKeyPEM: [UInt8]? = nil, insecureSkipTLSVerify: Bool = false,
                origin: String) {
        self.server = server
        self.caPEM = caPEM
        self.token = token
        self.tokenFile = tokenFile
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.origin = origin
    }

    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The kubeconfig's (with `apiURL` overriding its server), or `apiURL` with
    /// the service account's token and CA, or in-cluster.
    public static func resolve(_ settings: KubernetesSettings, environment: [String: String] = ProcessInfo.processInfo.environment,
                               serviceAccount: String = serviceAccountDirectory) throws -> KubeCredentials {
        if let path = settings.kubeconfig {
            var credentials = try Kubeconfig.credentials(path: path)
            if let url = settings.apiURL { credentials.server = trimmed(url) }
            return credentials
        }
        let token = serviceAccount + "/token", ca = serviceAccount + "/ca.crt"
        let caPEM = FileManager.default.fileExists(atPath: ca) ? try readFile(ca, what: "the service account's CA") : nil
        let tokenFile = FileManager.default.fileExists(atPath: token) ? token : nil
        if let url = settings.apiURL {
            return KubeCredentials(server: trimmed(url), caPEM: caPEM, tokenFile: tokenFile, origin: "kubernetes.apiURL")
        }
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
              let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty else {
            throw DaemonError("kubernetes: not running in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set) "
                              + "and no kubeconfig: set kubernetes.kubeconfig (--kubeconfig-file) or kubernetes.apiURL (--kube-api-url)")
        }
        guard tokenFile != nil else {
            throw DaemonError("kubernetes: in-cluster, but \(token) does not exist (automountServiceAccountToken: false?)")
        }
        let server = "https://" + (host.contains(":") ? "[\(host)]" : host) + ":" + port
        return KubeCredentials(server: server, caPEM: caPEM, tokenFile: tokenFile, origin: "in-cluster service account")
    }

    static func trimmed(_ url: String) -> String {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    static func readFile(_ path: String, what: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DaemonError("kubernetes: \(what) \(escaped(path)) \(FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist")")
        }
        return Array(data)
    }

    /// The bearer token for the next request.
    func currentToken() throws -> String? {
        if let token { return token }
        guard let tokenFile else { return nil }
        let bytes = try Self.readFile(tokenFile, what: "the token file")
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A Kubernetes Node, the fields the subnet manager reads.
public struct KubeNode: Sendable, Hashable {
    public var name: String
    public var resourceVersion: String
    public var annotations: [String: String]
    public var podCIDR: String?
    public var podCIDRs: [String]
    /// `status.addresses` of type InternalIP, in order.
    public var internalIPs: [String]

    public init(name: String, resourceVersion: String = "", annotations: [String: String] = [:], podCIDR: String? = nil,
                podCIDRs: [String] = [], internalIPs: [String] = []) {
        self.name = name
        self.resourceVersion = resourceVersion
        self.annotations = annotations
        self.podCIDR = podCIDR
        self.podCIDRs = podCIDRs
        self.internalIPs = internalIPs
    }
}

extension KubeNode: Decodable {
    private struct Metadata: Decodable {
        var name: String
        var resourceVersion: String?
        var annotations: [String: String]?
    }
    private struct Spec: Decodable {
        var podCIDR: String?
        var podCIDRs: [String]?
    }
    private struct Address: Decodable {
        var type: String
        var address: String
    }
    private struct Status: Decodable {
        var addresses: [Address]?
    }
    private enum Keys: String, CodingKey { case metadata, spec, status }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        let metadata = try container.decode(Metadata.self, forKey: .metadata)
        let spec = try container.decodeIfPresent(Spec.self, forKey: .spec)
        let status = try container.decodeIfPresent(Status.self, forKey: .status)
        self.init(name: metadata.name, resourceVersion: metadata.resourceVersion ?? "", annotations: metadata.annotations ?? [:],
                  podCIDR: spec?.podCIDR, podCIDRs: spec?.podCIDRs ?? [],
                  internalIPs: (status?.addresses ?? []).filter { $0.type == "InternalIP" }.map(\.address))
    }
}

/// One event of a Node watch.
public enum KubeWatchEvent: Sendable, Hashable {
    case added(KubeNode)
    case modified(KubeNode)
    case deleted(KubeNode)
    /// Only the resourceVersion is meaningful.
    case bookmark(resourceVersion: String)
    /// A Status: 410 means the resourceVersion expired.
    case error(code: Int, message: String)
}

extension KubeWatchEvent: Decodable {
    private enum Keys: String, CodingKey { case type, object }
    private struct Status: Decodable {
        var code: Int?
        var message: String?
        var reason: String?
    }
    private struct Bookmark: Decodable {
        struct Metadata: Decodable { var resourceVersion: String? }
        var metadata: Metadata
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        let type = try container.decode(String.self, forKey: .type)
        switch type {
        case "ADDED": self = .added(try container.decode(KubeNode.self, forKey: .object))
        case "MODIFIED": self = .modified(try container.decode(KubeNode.self, forKey: .object))
        case "DELETED": self = .deleted(try container.decode(KubeNode.self, forKey: .object))
        case "BOOKMARK":
            self = .bookmark(resourceVersion: try container.decode(Bookmark.self, forKey: .object).metadata.resourceVersion ?? "")
        case "ERROR":
            let status = try container.decode(Status.self, forKey: .object)
            self = .error(code: status.code ?? 0, message: status.message ?? status.reason ?? "")
        default:
            throw DecodingError.dataCorruptedError(forKey: .type, in: container, debugDescription: "unknown watch event type \(type)")
        }
    }
}

/// The Node API: list, watch, get and patch (the few REST calls flannel's
/// subnet manager makes), over AsyncHTTPClient, HTTP/1.1, TLS with the cluster
/// CA, bearer tokens or client certificates. Call `shutdown()` when done.
public final class KubeClient: Sendable {
    public let credentials: KubeCredentials
    let unary: HTTPClient
    let streams: HTTPClient
    let requestTimeout: Duration
    /// How long the server keeps a watch open (`timeoutSeconds`); a watch
    /// still open 30 s after that is a dead connection.
    public let watchTimeout: Duration

    static let maxBodyBytes = 256 << 20

    public init(credentials: KubeCredentials, requestTimeout: Duration = .seconds(10), watchTimeout: Duration = .seconds(300)) throws {
        self.credentials = credentials
        self.requestTimeout = requestTimeout
        self.watchTimeout = watchTimeout
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            if let ca = credentials.caPEM {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(ca))
            }
            if let cert = credentials.clientCertificatePEM, let key = credentials.clientKeyPEM {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: key, format: .pem))
            }
        } catch {
            throw DaemonError("kubernetes (\(credentials.origin)): cannot read the CA or client certificate: \(error)")
        }
        if credentials.insecureSkipTLSVerify { tls.certificateVerification = .none }
        let timeout = TimeAmount(requestTimeout)
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow,
                                                     timeout: .init(connect: timeout, read: timeout), decompression: .disabled)
        configuration.httpVersion = .http1Only
        // A refused connection or a failed handshake is an answer now (with the
        // TLS error's text), not a wait for the request's deadline.
        configuration.connectionPool.retryConnectionEstablishment = false
        unary = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        configuration.timeout = .init(connect: timeout, read: nil)
        streams = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    public func shutdown() async {
        try? await unary.shutdown()
        try? await streams.shutdown()
    }

    func request(_ path: String, method: HTTPMethod = .GET) throws -> HTTPClientRequest {
        var request = HTTPClientRequest(url: credentials.server + path)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "vxlan-agent (flannel kube subnet manager)")
        if let token = try credentials.currentToken(), !token.isEmpty {
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
        }
        return request
    }

    func fail(_ operation: String, _ error: any Error) -> KubeError {
        if let error = error as? KubeError { return error }
        return KubeError(operation: operation, server: credentials.server, message: "\(error)")
    }

    /// A non-2xx answer as an error carrying the Status's message.
    func statusError(_ operation: String, _ response: HTTPClientResponse) async -> KubeError {
        let body = (try? await response.body.collect(upTo: 1 << 20)).map { Data($0.readableBytesView) } ?? Data()
        struct Status: Decodable { var message: String? }
        let message = (try? JSONDecoder().decode(Status.self, from: body))?.message
            ?? String(decoding: body.prefix(512), as: UTF8.self)
        return KubeError(operation: operation, server: credentials.server, status: Int(response.status.code),
                         message: message.isEmpty ? response.status.reasonPhrase : message)
    }

    /// Every Node, and the list's resourceVersion (where a watch starts).
    /// `fromCache`: `resourceVersion=0`, served from the API server's watch
    /// cache (client-go's first list; no read of etcd); otherwise a consistent
    /// read (after a 410, so the state never goes back in time).
    public func listNodes(fromCache: Bool = false) async throws(KubeError) -> (nodes: [KubeNode], resourceVersion: String) {
        let operation = "list nodes"
        do {
            let path = fromCache ? "/api/v1/nodes?resourceVersion=0" : "/api/v1/nodes"
            let response = try await unary.execute(try request(path), timeout: TimeAmount(requestTimeout))
            guard response.status == .ok else { throw await statusError(operation, response) }
            let body = try await response.body.collect(upTo: Self.maxBodyBytes)
            struct List: Decodable {
                struct Metadata: Decodable { var resourceVersion: String? }
                var metadata: Metadata
                var items: [KubeNode]?
            }
            let list = try JSONDecoder().decode(List.self, from: Data(body.readableBytesView))
            return (list.items ?? [], list.metadata.resourceVersion ?? "")
        } catch {
            throw fail(operation, error)
        }
    }

    /// A strategic merge patch of Node `name` through its status subresource
    /// (what flanneld sends, and what its RBAC allows: patch on nodes/status).
    public func patchNodeStatus(_ name: String, patch: [UInt8]) async throws(KubeError) -> KubeNode {
        let operation = "patch node \(name)"
        do {
            var request = try request("/api/v1/nodes/\(Self.pathSegment(name))/status", method: .PATCH)
            request.headers.add(name: "Content-Type", value: "application/strategic-merge-patch+json")
            request.body = .bytes(patch)
            let response = try await unary.execute(request, timeout: TimeAmount(requestTimeout))
            guard response.status == .ok else { throw await statusError(operation, response) }
            let body = try await response.body.collect(upTo: Self.maxBodyBytes)
            return try JSONDecoder().decode(KubeNode.self, from: Data(body.readableBytesView))
        } catch {
            throw fail(operation, error)
        }
    }

    static func pathSegment(_ name: String) -> String {
        name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? name
    }

    /// Watches every Node from `resourceVersion`, calling `handle` for each
    /// event as it arrives, until the server ends the watch (its
    /// `timeoutSeconds`), which returns normally. A 410 Gone (at the start or
    /// as an ERROR event) throws a `KubeError` with `isGone`.
    public func watchNodes(from resourceVersion: String, handle: (KubeWatchEvent) async throws -> Void) async throws(KubeError) {
        let operation = "watch nodes"
        let seconds = Int(watchTimeout.components.seconds)
        do {
            let path = "/api/v1/nodes?watch=1&allowWatchBookmarks=true&timeoutSeconds=\(seconds)&resourceVersion="
                + (resourceVersion.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? resourceVersion)
            let response = try await streams.execute(try request(path), timeout: TimeAmount(requestTimeout))
            guard response.status == .ok else { throw await statusError(operation, response) }
            let deadline = ContinuousClock.now + watchTimeout + .seconds(30)
            var pending: [UInt8] = []
            let decoder = JSONDecoder()
            for try await chunk in response.body {
                pending.append(contentsOf: chunk.readableBytesView)
                var consumed = 0
                while let newline = pending[consumed...].firstIndex(of: UInt8(ascii: "\n")) {
                    let line = pending[consumed..<newline]
                    consumed = newline + 1
                    if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
                    let event = try decoder.decode(KubeWatchEvent.self, from: Data(line))
                    if case .error(let code, let message) = event {
                        throw KubeError(operation: operation, server: credentials.server, status: code, message: message)
                    }
                    try await handle(event)
                }
                pending.removeFirst(consumed)
                if pending.count > Self.maxBodyBytes {
                    throw KubeError(operation: operation, server: credentials.server, message: "a watch event longer than 256 MiB")
                }
                if ContinuousClock.now > deadline {
                    throw KubeError(operation: operation, server: credentials.server,
                                    message: "the watch outlived its timeoutSeconds=\(seconds) by 30 s; the connection is taken as dead")
                }
            }
        } catch {
            throw fail(operation, error)
        }
    }
}

// MARK: kubeconfig

/// The fields of a kubeconfig this agent needs, read by a small YAML reader
/// (block mappings, block sequences, plain and quoted scalars: what kubectl,
/// kubeadm and k3s write) or as JSON.
enum Kubeconfig {
    indirect enum Value: Equatable {
        case scalar(String)
        case map([(String, Value)])
        case list([Value])

        static func == (a: Value, b: Value) -> Bool {
            switch (a, b) {
            case (.scalar(let x), .scalar(let y)): x == y
            case (.list(let x), .list(let y)): x == y
            case (.map(let x), .map(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            default: false
            }
        }

        subscript(key: String) -> Value? {
            if case .map(let entries) = self { return entries.first { $0.0 == key }?.1 }
            return nil
        }
        var string: String? { if case .scalar(let text) = self { text } else { nil } }
        var items: [Value] { if case .list(let items) = self { items } else { [] } }
    }

    static func credentials(path: String) throws -> KubeCredentials {
        let bytes = try KubeCredentials.readFile(path, what: "the kubeconfig")
        let root: Value
        do {
            root = try parse(String(decoding: bytes, as: UTF8.self))
        } catch {
            throw DaemonError("kubeconfig \(escaped(path)): \(error)")
        }
        return try credentials(root, path: path)
    }

    static func credentials(_ root: Value, path: String) throws -> KubeCredentials {
        func fail(_ message: String) -> DaemonError { DaemonError("kubeconfig \(escaped(path)): \(message)") }
        func named(_ list: String, _ name: String?) -> Value? {
            let items = root[list]?.items ?? []
            if let name { return items.first { $0["name"]?.string == name } }
            return items.count == 1 ? items[0] : nil
        }
        let contextName = root["current-context"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        let context = named("contexts", contextName)?["context"]
        if contextName != nil && context == nil { throw fail("current-context \(quoted(contextName!)) is not in contexts") }
        guard let cluster = named("clusters", context?["cluster"]?.string)?["cluster"] else {
            throw fail("no cluster for the current context (clusters[].cluster)")
        }
        guard let server = cluster["server"]?.string, server.hasPrefix("https://") || server.hasPrefix("http://") else {
            throw fail("clusters[].cluster.server is missing or not an http(s) URL")
        }
        let user = named("users", context?["user"]?.string)?["user"]
        let directory = (path as NSString).deletingLastPathComponent
        func file(_ name: String) -> String { name.hasPrefix("/") ? name : (directory as NSString).appendingPathComponent(name) }
        func pem(_ map: Value?, _ key: String) throws -> [UInt8]? {
            if let data = map?[key + "-data"]?.string, !data.isEmpty {
                guard let decoded = Data(base64Encoded: data.filter { !$0.isWhitespace }) else { throw fail("\(key)-data is not base64") }
                return Array(decoded)
            }
            if let name = map?[key]?.string, !name.isEmpty { return try KubeCredentials.readFile(file(name), what: "the kubeconfig's \(key)") }
            return nil
        }
        let certificate = try pem(user, "client-certificate"), key = try pem(user, "client-key")
        if (certificate == nil) != (key == nil) { throw fail("a client certificate needs both client-certificate and client-key") }
        if user?["exec"] != nil || user?["auth-provider"] != nil, user?["token"] == nil, certificate == nil {
            throw fail("exec and auth-provider credentials are not supported: use a token or a client certificate")
        }
        return KubeCredentials(server: KubeCredentials.trimmed(server), caPEM: try pem(cluster, "certificate-authority"),
                               token: user?["token"]?.string, tokenFile: user?["tokenFile"]?.string.map(file),
                               clientCertificatePEM: certificate, clientKeyPEM: key,
                               insecureSkipTLSVerify: cluster["insecure-skip-tls-verify"]?.string == "true",
                               origin: "kubeconfig \(path)")
    }

    struct SyntaxError: Error, CustomStringConvertible {
        var line: Int
        var message: String
        var description: String { "line \(line): \(message)" }
    }

    /// YAML's block subset, or JSON (which is YAML).
    static func parse(_ text: String) throws -> Value {
        if text.drop(while: \.isWhitespace).first == "{" {
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) else {
                throw SyntaxError(line: 1, message: "not valid JSON")
            }
            return fromJSON(object)
        }
        var lines: [(number: Int, indent: Int, text: Substring)] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            let content = line.drop(while: { $0 == " " })
            if content.isEmpty || content.hasPrefix("#") || content == "---" { continue }
            if content.hasPrefix("\t") { throw SyntaxError(line: index + 1, message: "a tab in the indentation") }
            lines.append((index + 1, line.count - content.count, content))
        }
        var position = 0
        let value = try block(&lines, &position, indent: lines.first?.indent ?? 0)
        if position < lines.count { throw SyntaxError(line: lines[position].number, message: "unexpected indentation") }
        return value
    }

    static func fromJSON(_ object: Any) -> Value {
        switch object {
        case let map as [String: Any]: .map(map.map { ($0.key, fromJSON($0.value)) })
        case let list as [Any]: .list(list.map(fromJSON))
        case let flag as Bool: .scalar(flag ? "true" : "false")
        case let other: .scalar("\(other)")
        }
    }

    private static func block(_ lines: inout [(number: Int, indent: Int, text: Substring)], _ position: inout Int,
                              indent: Int) throws -> Value {
        guard position < lines.count else { return .scalar("") }
        if lines[position].text == "-" || lines[position].text.hasPrefix("- ") {
            var items: [Value] = []
            while position < lines.count, lines[position].indent == indent,
                  lines[position].text == "-" || lines[position].text.hasPrefix("- ") {
                let rest = lines[position].text.dropFirst(1).drop(while: { $0 == " " })
                if rest.isEmpty {
                    position += 1
                    items.append(position < lines.count && lines[position].indent > indent
                                 ? try block(&lines, &position, indent: lines[position].indent) : .scalar(""))
                } else if splitKey(rest) != nil {
                    // "- key: value": a map whose first entry is on the dash's line.
                    lines[position].indent = lines[position].text.count - rest.count + indent
                    lines[position].text = rest
                    items.append(try block(&lines, &position, indent: lines[position].indent))
                } else {
                    items.append(.scalar(try scalar(rest, line: lines[position].number)))
                    position += 1
                }
            }
            return .list(items)
        }
        var entries: [(String, Value)] = []
        while position < lines.count, lines[position].indent == indent {
            let line = lines[position]
            guard let (key, rest) = splitKey(line.text) else { throw SyntaxError(line: line.number, message: "expected key: value") }
            position += 1
            if !rest.isEmpty {
                entries.append((key, .scalar(try scalar(rest, line: line.number))))
            } else if position < lines.count, lines[position].indent > indent
                        || (lines[position].indent == indent && (lines[position].text == "-" || lines[position].text.hasPrefix("- "))) {
                entries.append((key, try block(&lines, &position, indent: lines[position].indent)))
            } else {
                entries.append((key, .scalar("")))
            }
        }
        return .map(entries)
    }

    /// `key: rest` (the key plain or quoted), or nil.
    private static func splitKey(_ text: Substring) -> (String, Substring)? {
        var key: String
        var rest: Substring
        if let quote = text.first, quote == "\"" || quote == "'" {
            guard let end = text.dropFirst().firstIndex(of: quote) else { return nil }
            key = String(text[text.index(after: text.startIndex)..<end])
            rest = text[text.index(after: end)...]
            guard rest.first == ":" else { return nil }
            rest = rest.dropFirst()
        } else {
            guard let colon = text.firstRange(of: ": ")?.lowerBound ?? (text.hasSuffix(":") ? text.index(before: text.endIndex) : nil) else {
                return nil
            }
            key = String(text[..<colon])
            rest = text[text.index(after: colon)...]
        }
        guard rest.isEmpty || rest.first == " " else { return nil }
        key = key.trimmingCharacters(in: .whitespaces)
        return (key, rest.drop(while: { $0 == " " }))
    }

    private static func scalar(_ text: Substring, line: Int) throws -> String {
        var text = text
        if let first = text.first, first == "\"" || first == "'" {
            guard let end = text.dropFirst().lastIndex(of: first) else { throw SyntaxError(line: line, message: "an unterminated quoted string") }
            let inner = text[text.index(after: text.startIndex)..<end]
            if first == "'" { return inner.replacingOccurrences(of: "''", with: "'") }
            guard let decoded = try? JSONDecoder().decode(String.self, from: Data(("\"" + inner + "\"").utf8)) else {
                throw SyntaxError(line: line, message: "a double-quoted string YAML's reader here cannot read")
            }
            return decoded
        }
        if let comment = text.firstRange(of: " #") { text = text[..<comment.lowerBound] }
        return text.trimmingCharacters(in: .whitespaces)
    }
}
