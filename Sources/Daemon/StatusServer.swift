import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves GET /healthz, GET /readyz and GET /metrics over HTTP/1.1; one response per
/// connection. Nothing else: it listens on loopback by default. /metrics is
/// the exposition of the daemon's `PrometheusCollectorRegistry` (`Metrics.registry`).
public final class StatusServer: Sendable {
    let channel: any Channel

    public static func start(host: String, port: Int, metrics: Metrics) async throws -> StatusServer {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(StatusHandler(metrics: metrics))
                }
            }
        do {
            return StatusServer(channel: try await bootstrap.bind(host: host, port: port).get())
        } catch {
            throw DaemonError("cannot serve /healthz and /metrics on \(host):\(port): \(error)")
        }
    }

    init(channel: any Channel) { self.channel = channel }

    public var port: Int? { channel.localAddress?.port }

    public func stop() async { try? await channel.close() }
}

final class StatusHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let metrics: Metrics
    var request: HTTPRequestHead?

    init(metrics: Metrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break
        case .end:
            guard let request else { return }
            self.request = nil
            respond(context: context, request: request)
        }
    }

    func respond(context: ChannelHandlerContext, request: HTTPRequestHead) {
        let path = request.uri.split(separator: "?").first.map(String.init) ?? request.uri
        var status = HTTPResponseStatus.ok
        var body: ByteBuffer
        var type = "text/plain; charset=utf-8"
        switch (request.method, path) {
        case (.GET, "/healthz"), (.HEAD, "/healthz"):
            let health = metrics.health()
            status = health.ok ? .ok : .serviceUnavailable
            body = ByteBuffer(string: health.text)
        case (.GET, "/readyz"), (.HEAD, "/readyz"):
            let ready = metrics.readiness()
            status = ready.ok ? .ok : .serviceUnavailable
            body = ByteBuffer(string: ready.text)
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            // The registry's own exposition, as swift-prometheus writes it (the
            // data path's counters taken in first: they move with every packet).
            metrics.recordTunnel()
            body = ByteBuffer(bytes: metrics.registry.emitToBuffer())
            type = "text/plain; version=0.0.4; charset=utf-8"
        case (_, "/healthz"), (_, "/readyz"), (_, "/metrics"):
            status = .methodNotAllowed
            body = ByteBuffer(string: "GET only\n")
        default:
            status = .notFound
            body = ByteBuffer(string: "not found: try /healthz, /readyz or /metrics\n")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
    }
}
