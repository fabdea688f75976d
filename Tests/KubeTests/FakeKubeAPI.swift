import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// An in-process fake of the Kubernetes Node API, over HTTP/1.1 (no TLS) on
/// 127.0.0.1, keeping the contract the subnet manager relies on: a
/// resourceVersion on every object and list (one counter, as etcd's revision),
/// GET list, watch from a resourceVersion (ADDED/MODIFIED/DELETED/BOOKMARK as
/// JSON lines; a version older than the kept history gets an ERROR event with
/// code 410), strategic merge patch of a Node and of its status subresource
/// (annotations merged, null deletes, status.conditions merged by type), and
/// 401 without a valid bearer token, 403 for a read-only token's patch.
final class FakeKubeAPI: Sendable {
    struct Event { var revision: Int; var type: String; var object: Data }
    struct State {
        var revision = 1
        var nodes: [String: Data] = [:]
        var history: [Event] = []
        /// Watches from versions below this get 410 Gone.
        var oldest = 1
        var watchers: [ObjectIdentifier: (channel: any Channel, from: Int)] = [:]
        var requests: [String] = []
        /// Events are kept but not sent: a watch connection that is silently down.
        var paused = false
    }

    let state = Mutex(State())
    let token = "fake-token"
    let readOnlyToken = "read-only-token"
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: any Channel

    let host: String
    let scheme: String
    /// (An IPv6 host in brackets.)
    var url: String { "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(channel.localAddress!.port!)" }

    /// Synchronous: the listening socket is made on the calling thread (in its network namespace).
    /// With `tls`, HTTPS (and a client certificate required when the context asks for one).
    init(host: String = "127.0.0.1", tls: NIOSSLContext? = nil) throws {
        self.host = host
        scheme = tls == nil ? "http" : "https"
        let holder = Holder()
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(api: holder))
                }
            }
            .bind(host: host, port: 0).wait()
        holder.api.withLock { $0 = self }
    }

    let isShutDown = Mutex(false)

    /// Idempotent.
    func shutdown() async {
        guard !isShutDown.withLock({ let was = $0; $0 = true; return was }) else { return }
        breakWatches()
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    final class Holder: Sendable { let api = Mutex<FakeKubeAPI?>(nil) }

    // MARK: the tests' side

    /// Creates or replaces a Node (its resourceVersion is set here).
    func put(_ node: [String: Any]) {
        let name = (node["metadata"] as! [String: Any])["name"] as! String
        state.withLock { state in
            let type = state.nodes[name] == nil ? "ADDED" : "MODIFIED"
            record(&state, name: name, type: type, object: node)
        }
    }

    func delete(_ name: String) {
        state.withLock { state in
            guard let data = state.nodes.removeValue(forKey: name) else { return }
            state.revision += 1
            var object = Self.json(data)
            var metadata = object["metadata"] as! [String: Any]
            metadata["resourceVersion"] = "\(state.revision)"
            object["metadata"] = metadata
            publish(&state, Event(revision: state.revision, type: "DELETED", object: Self.data(object)))
        }
    }

    func node(_ name: String) -> [String: Any]? { state.withLock { $0.nodes[name].map(Self.json) } }

    /// Forgets the history: watches from an older version get 410.
    func compact() { state.withLock { $0.oldest = $0.revision + 1; $0.history = [] } }

    /// Closes every open watch, as a broken connection or the server's timeout would.
    func breakWatches() {
        let channels = state.withLock { state in
            defer { state.watchers = [:] }
            return state.watchers.values.map(\.channel)
        }
        for channel in channels { channel.close(promise: nil) }
    }

    func pause(_ paused: Bool) { state.withLock { $0.paused = paused } }

    func bookmark() {
        state.withLock { state in
            let line = Self.data(["type": "BOOKMARK", "object": ["kind": "Node", "apiVersion": "v1",
                                                                 "metadata": ["resourceVersion": "\(state.revision)"]]])
            for watcher in state.watchers.values { Self.send(line, to: watcher.channel) }
        }
    }

    var requests: [String] { state.withLock { $0.requests } }

    // MARK: the server's side

    private func record(_ state: inout State, name: String, type: String, object: [String: Any]) {
        state.revision += 1
        var object = object
        var metadata = object["metadata"] as! [String: Any]
        metadata["resourceVersion"] = "\(state.revision)"
        object["metadata"] = metadata
        object["kind"] = "Node"
        object["apiVersion"] = "v1"
        let data = Self.data(object)
        state.nodes[name] = data
        publish(&state, Event(revision: state.revision, type: type, object: data))
    }

    private func publish(_ state: inout State, _ event: Event) {
        state.history.append(event)
        let line = Self.line(event)
        if state.paused { return }
        for watcher in state.watchers.values where event.revision > watcher.from { Self.send(line, to: watcher.channel) }
    }

    static func line(_ event: Event) -> Data {
        Data("{\"type\":\"\(event.type)\",\"object\":".utf8) + event.object + Data("}".utf8)
    }

    static func send(_ line: Data, to channel: any Channel) {
        var buffer = channel.allocator.buffer(capacity: line.count + 1)
        buffer.writeBytes(line)
        buffer.writeString("\n")
        channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
    }

    static func json(_ data: Data) -> [String: Any] { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:] }
    static func data(_ object: Any) -> Data { try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) }

    struct Answer { var status: HTTPResponseStatus; var body: Data }

    static func status(_ code: HTTPResponseStatus, _ message: String) -> Answer {
        Answer(status: code, body: data(["kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                         "reason": code.reasonPhrase, "code": Int(code.code)]))
    }

    /// Answers one request; a watch registers `channel` instead (nil answer).
    func answer(method: HTTPMethod, uri: String, authorization: String?, body: Data, channel: any Channel) -> Answer? {
        let components = URLComponents(string: uri)
        let path = components?.path ?? uri
        let query = Dictionary((components?.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { a, _ in a })
        state.withLock { $0.requests.append("\(method.rawValue) \(uri)") }
        guard let authorization, authorization == "Bearer \(token)" || authorization == "Bearer \(readOnlyToken)" else {
            return Self.status(.unauthorized, "Unauthorized")
        }
        let parts = path.split(separator: "/").map(String.init)
        guard parts.count >= 3, parts[0] == "api", parts[1] == "v1", parts[2] == "nodes" else {
            return Self.status(.notFound, "the server could not find the requested resource")
        }
        switch (method, parts.count) {
        case (.GET, 3) where query["watch"] == "1" || query["watch"] == "true":
            let from = Int(query["resourceVersion"] ?? "") ?? 0
            state.withLock { state in
                var head = HTTPResponseHead(version: .http1_1, status: .ok)
                head.headers.add(name: "Content-Type", value: "application/json")
                head.headers.add(name: "Transfer-Encoding", value: "chunked")
                channel.writeAndFlush(HTTPServerResponsePart.head(head), promise: nil)
                if from != 0 && from < state.oldest - 1 {
                    Self.send(Self.data(["type": "ERROR", "object": ["kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                                     "message": "too old resource version: \(from) (\(state.oldest - 1))",
                                                                     "reason": "Expired", "code": 410]]), to: channel)
                    channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
                    return
                }
                for event in state.history where event.revision > from { Self.send(Self.line(event), to: channel) }
                state.watchers[ObjectIdentifier(channel)] = (channel, from)
            }
            return nil
        case (.GET, 3):
            return state.withLock { state in
                let items = state.nodes.keys.sorted().map { Self.json(state.nodes[$0]!) }
                return Answer(status: .ok, body: Self.data(["kind": "NodeList", "apiVersion": "v1",
                                                            "metadata": ["resourceVersion": "\(state.revision)"], "items": items]))
            }
        case (.GET, 4):
            return state.withLock { state in
                guard let node = state.nodes[parts[3]] else { return Self.status(.notFound, "nodes \"\(parts[3])\" not found") }
                return Answer(status: .ok, body: node)
            }
        case (.PATCH, let count) where count == 4 || (count == 5 && parts[4] == "status"):
            if authorization == "Bearer \(readOnlyToken)" {
                return Self.status(.forbidden, "nodes \"\(parts[3])\" is forbidden: User cannot patch resource \"nodes/status\"")
            }
            guard let patch = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else {
                return Self.status(.badRequest, "the patch is not a JSON object")
            }
            return state.withLock { state in
                guard let data = state.nodes[parts[3]] else { return Self.status(.notFound, "nodes \"\(parts[3])\" not found") }
                let merged = Self.merge(Self.json(data), patch, path: "") as! [String: Any]
                record(&state, name: parts[3], type: "MODIFIED", object: merged)
                return Answer(status: .ok, body: state.nodes[parts[3]]!)
            }
        default:
            return Self.status(.methodNotAllowed, "\(method.rawValue) \(path) is not supported by the fake")
        }
    }

    /// Strategic merge: objects merge, null deletes, status.conditions merge by type, other lists replace.
    static func merge(_ target: Any, _ patch: Any, path: String) -> Any {
        if path == "status.conditions", let old = target as? [[String: Any]], let new = patch as? [[String: Any]] {
            var result = old
            for condition in new {
                if let index = result.firstIndex(where: { $0["type"] as? String == condition["type"] as? String }) {
                    result[index] = merge(result[index], condition, path: "") as! [String: Any]
                } else {
                    result.append(condition)
                }
            }
            return result
        }
        guard let patchObject = patch as? [String: Any] else { return patch }
        var result = target as? [String: Any] ?? [:]
        for (key, value) in patchObject {
            if value is NSNull { result[key] = nil } else {
                result[key] = merge(result[key] as Any, value, path: path.isEmpty ? key : "\(path).\(key)")
            }
        }
        return result
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let api: Holder
        var head: HTTPRequestHead?
        var body = Data()

        init(api: Holder) { self.api = api }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = Data()
            case .body(let buffer):
                body.append(contentsOf: buffer.readableBytesView)
            case .end:
                guard let head, let api = api.api.withLock({ $0 }) else { return }
                guard let answer = api.answer(method: head.method, uri: head.uri, authorization: head.headers.first(name: "Authorization"),
                                              body: body, channel: context.channel) else { return }
                var responseHead = HTTPResponseHead(version: .http1_1, status: answer.status)
                responseHead.headers.add(name: "Content-Type", value: "application/json")
                responseHead.headers.add(name: "Content-Length", value: "\(answer.body.count)")
                context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
                var buffer = context.channel.allocator.buffer(capacity: answer.body.count)
                buffer.writeBytes(answer.body)
                context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            let id = ObjectIdentifier(context.channel)
            api.api.withLock { $0 }?.state.withLock { _ = $0.watchers.removeValue(forKey: id) }
            context.fireChannelInactive()
        }
    }
}
