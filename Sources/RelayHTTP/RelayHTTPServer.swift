import Logging
public import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
public import NIOSSL
import NIOWebSocket
import RelayCore
import RelayJobs
public import ServiceLifecycle
import Synchronization

/// One address to listen on, plain or TLS.
public struct ListenerSpec: Sendable {
    public let host: String
    public let port: Int
    /// nil = plain HTTP.
    public let tls: ReloadableTLSContext?

    public init(host: String, port: Int, tls: ReloadableTLSContext?) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    public var scheme: String { tls == nil ? "http" : "https" }
}

/// The TLS context new connections get; replaced on certificate reload (SIGHUP) without touching open connections,
/// which keep the context they were accepted with.
public final class ReloadableTLSContext: Sendable {
    private let context: Mutex<NIOSSLContext>

    public init(_ context: NIOSSLContext) {
        self.context = Mutex(context)
    }

    public var current: NIOSSLContext { context.withLock { $0 } }

    public func replace(with new: NIOSSLContext) {
        context.withLock { $0 = new }
    }
}

/// A listener that is accepting connections.
public struct BoundListener: Sendable {
    public let scheme: String
    public let host: String
    public let port: Int

    public init(scheme: String, host: String, port: Int) {
        self.scheme = scheme
        self.host = host
        self.port = port
    }

    /// `https://127.0.0.1:8443` (IPv6 hosts in brackets).
    public var url: String {
        let printable = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(printable):\(port)"
    }
}

/// The relay's listeners, run as a Service: binds, serves, and on shutdown quiesces (STYLE.md rule 5) —
/// stops accepting, asks every connection to finish its current response, and closes what is left at a deadline.
public final class RelayHTTPServer: Service, Sendable {
    private let services: RelayServices
    private let specs: [ListenerSpec]
    private let group: any EventLoopGroup
    private let drainSeconds: Int64
    private let connections = ConnectionRegistry()
    private let limiter: ConnectionLimiter
    private let serverChannels = Mutex<[any Channel]>([])

    public init(services: RelayServices, listeners: [ListenerSpec], group: any EventLoopGroup, drainSeconds: Int64 = 10)
    {
        self.services = services
        self.specs = listeners
        self.group = group
        self.drainSeconds = drainSeconds
        self.limiter = ConnectionLimiter(
            maxTotal: services.limits.maxConnections,
            maxPerAddress: services.limits.maxConnectionsPerAddress
        )
    }

    /// Binds every listener (port 0 picks a free port) and returns where they listen.
    public func bind() async throws -> [BoundListener] {
        var bound: [BoundListener] = []
        for spec in specs {
            let channel = try await makeBootstrap(spec).bind(host: spec.host, port: spec.port).get()
            serverChannels.withLock { $0.append(channel) }
            let port = channel.localAddress?.port ?? spec.port
            bound.append(BoundListener(scheme: spec.scheme, host: spec.host, port: port))
        }
        return bound
    }

    /// Serves until graceful shutdown, then drains.
    public func run() async throws {
        try? await gracefulShutdown()
        services.readiness.set(false)
        services.logger.info("draining", metadata: ["connections": "\(connections.count)"])
        let channels = serverChannels.withLock { channels in
            defer { channels.removeAll() }
            return channels
        }
        for channel in channels {
            try? await channel.close()
        }
        connections.quiesceAll()
        await connections.drained(until: .now + .seconds(drainSeconds))
        connections.closeAll()
    }

    private func makeBootstrap(_ spec: ListenerSpec) -> ServerBootstrap {
        let services = self.services
        let connections = self.connections
        let limiter = self.limiter
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // Each connection keeps its read buffer between reads (NIO pools it per channel): start small, since most
            // requests are a few hundred bytes and idle watchers are many; a read that fills it doubles the next one,
            // so uploads still reach 64 KiB reads.
            .childChannelOption(
                .recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
            )
            .childChannelInitializer { channel in
                connections.add(channel)
                let address = channel.remoteAddress?.ipAddress ?? "unknown"
                let refusal = limiter.admit(address)
                if refusal == nil {
                    channel.closeFuture.whenComplete { _ in limiter.release(address) }
                } else {
                    services.jobs.statistics.connectionRefused()
                    services.logger.warning(
                        "connection over the cap",
                        metadata: ["address": "\(address)", "open": "\(limiter.open)"]
                    )
                }
                let kind = ConnectionKindTracker(statistics: services.jobs.statistics)
                channel.closeFuture.whenComplete { _ in kind.closed() }
                guard let tls = spec.tls?.current else {
                    return channel.eventLoop.makeCompletedFuture {
                        kind.opened(.http1)
                        try Self.configureHTTP1(
                            channel,
                            services: services,
                            scheme: spec.scheme,
                            refusal: refusal,
                            kind: kind
                        )
                    }
                }
                // TLS: ALPN picks HTTP/2 (one handler per stream, so a browser holds many SSE streams on one
                // connection) or HTTP/1.1 (with WebSocket upgrades). The handshake and ALPN must be done within the
                // header deadline, like a plain connection's first request head.
                do {
                    // Before the TLS handler allocates its per-connection buffers.
                    try channel.syncOptions?.setOption(.allocator, value: PageBackedAllocator.allocator)
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                let handshakeDeadline = channel.eventLoop.scheduleTask(in: services.limits.connection.headerTimeout) {
                    channel.close(promise: nil)
                }
                return channel.configureHTTP2SecureUpgrade(
                    h2ChannelConfigurator: { channel in
                        handshakeDeadline.cancel()
                        kind.opened(.http2)
                        return channel.eventLoop.makeCompletedFuture {
                            // The relay's HTTP/2 connection, and NIO's multiplexer above it for the streams its fast
                            // lane does not answer. No lane on a connection over the cap: every request there is
                            // answered 503.
                            let connection = HTTP2Connection(
                                settings: .init(maxHeaderBytes: services.limits.connection.maxHeaderBytes),
                                lane: refusal == nil ? HTTP2FastLane(services: services, scheme: spec.scheme) : nil
                            )
                            try channel.pipeline.syncOperations.addHandler(connection)
                            let multiplexer = HTTP2StreamMultiplexer(mode: .server, channel: channel) { stream in
                                // Registered too, so that shutdown reaches each stream's SSE (the connection's quiesce
                                // event alone only sends GOAWAY).
                                connections.add(stream)
                                return stream.eventLoop.makeCompletedFuture {
                                    try Self.configureHTTP2Stream(
                                        stream,
                                        services: services,
                                        scheme: spec.scheme,
                                        refusal: refusal
                                    )
                                }
                            }
                            try channel.pipeline.syncOperations.addHandler(multiplexer)
                        }
                    },
                    http1ChannelConfigurator: { channel in
                        handshakeDeadline.cancel()
                        return channel.eventLoop.makeCompletedFuture {
                            kind.opened(.http1)
                            try Self.configureHTTP1(
                                channel,
                                services: services,
                                scheme: spec.scheme,
                                refusal: refusal,
                                kind: kind
                            )
                        }
                    }
                )
            }
    }

    /// One HTTP/2 stream channel: NIO's frame-to-HTTP/1 codec, the access log and the relay's handler.
    static func configureHTTP2Stream(
        _ stream: any Channel,
        services: RelayServices,
        scheme: String,
        refusal: FalError?
    ) throws {
        try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
        let accessLog = AccessLogHandler(logger: services.accessLogger, metrics: services.httpMetrics, proto: "h2")
        try stream.pipeline.syncOperations.addHandler(accessLog)
        try stream.pipeline.syncOperations.addHandler(
            RelayHTTPHandler(services: services, scheme: scheme, refusal: refusal, accessLog: accessLog)
        )
    }

    /// HTTP/1.1 with pipelining assistance, deadlines and head limits, fal-shaped protocol errors and WebSocket
    /// upgrades.
    ///
    /// A connection starts with the deadlines and the fast lane only: NIO's HTTP/1.1 handlers join the first time the
    /// lane hands a request on (`FastLane.init(slowPath:)`). A client that only polls, fetches results or media never
    /// pays for them: no decoder buffers, and no trip through a dozen handlers on every read.
    static func configureHTTP1(
        _ channel: any Channel,
        services: RelayServices,
        scheme: String,
        refusal: FalError? = nil,
        kind: ConnectionKindTracker? = nil
    ) throws {
        let pipeline = channel.pipeline.syncOperations
        let logger = services.logger
        let timer = ConnectionStateHandler(
            limits: services.limits.connection,
            logger: { message, _ in logger.debug("\(message)") }
        )
        try pipeline.addHandler(timer)
        // A connection over a cap has every request answered 503 by the HTTP handler: no fast lane for it.
        guard refusal == nil else {
            try addHTTPHandlers(
                pipeline,
                services: services,
                scheme: scheme,
                refusal: refusal,
                kind: kind,
                timer: timer,
                fastLane: nil
            )
            return
        }
        let fastLane = FastLane(
            services: services,
            scheme: scheme,
            timer: timer,
            connectionKind: kind
        ) {
            pipeline,
            fastLane in
            try addHTTPHandlers(
                pipeline,
                services: services,
                scheme: scheme,
                refusal: nil,
                kind: kind,
                timer: timer,
                fastLane: fastLane
            )
        }
        try pipeline.addHandler(fastLane)
    }

    /// Every handler `configureHTTP1` may put in a connection's pipeline, head to tail: its own and those NIO's
    /// `configureHTTPServerPipeline` adds. The one description of an HTTP/1.1 pipeline: a status stream that takes a
    /// connection over removes all of these, a WebSocket upgrade the relay's own (NIO's upgrader removes its own), and
    /// both look them up by type (NIO has no public walk of a pipeline, and its debug description is far too costly
    /// per connection). The end-to-end pipeline test fails if one is missing here.
    static var http1HandlerTypes: [any ChannelHandler.Type] {
        [
            ConnectionStateHandler.self, FastLane.self, HTTPResponseEncoder.self,
            ByteToMessageHandler<HTTPRequestDecoder>.self, HTTPServerPipelineHandler.self,
            NIOHTTPResponseHeadersValidator.self, HTTPServerUpgradeHandler.self, HTTPPartsTap.self,
            AccessLogHandler.self, RelayHTTPHandler.self,
        ]
    }

    /// The relay's own HTTP/1.1 handlers: what leaves a connection that upgrades to WebSocket.
    static var relayHTTP1HandlerTypes: [any ChannelHandler.Type] {
        [ConnectionStateHandler.self, FastLane.self, HTTPPartsTap.self, AccessLogHandler.self, RelayHTTPHandler.self]
    }

    /// The contexts of those `types` that are in the pipeline, head to tail.
    static func contexts(
        of types: [any ChannelHandler.Type],
        in operations: ChannelPipeline.SynchronousOperations
    ) -> [ChannelHandlerContext] {
        types.compactMap { try? operations.context(handlerType: $0) }
    }

    /// NIO's HTTP/1.1 server pipeline with upgrades, then the relay's handlers, at the end of `pipeline`.
    private static func addHTTPHandlers(
        _ pipeline: ChannelPipeline.SynchronousOperations,
        services: RelayServices,
        scheme: String,
        refusal: FalError?,
        kind: ConnectionKindTracker?,
        timer: ConnectionStateHandler,
        fastLane: FastLane?
    ) throws {
        let accessLog = AccessLogHandler(
            logger: services.accessLogger,
            metrics: services.httpMetrics,
            proto: "http/1.1"
        )
        let handler = RelayHTTPHandler(
            services: services,
            scheme: scheme,
            refusal: refusal,
            accessLog: accessLog,
            servesHTTP1: true,
            connectionKind: kind
        )
        let tap = HTTPPartsTap(timer: timer, maxURLBytes: services.limits.maxURLBytes)
        try pipeline.configureHTTPServerPipeline(
            withServerUpgrade: (
                // A connection over a cap gets no upgrade: its request reaches the HTTP handler and is answered 503.
                upgraders: refusal == nil ? [Self.webSocketUpgrader(services: services, scheme: scheme)] : [],
                completionHandler: { context in
                    // The socket speaks WebSocket now: the HTTP handlers leave (it has deadlines of its own).
                    let operations = context.pipeline.syncOperations
                    for departing in Self.contexts(of: Self.relayHTTP1HandlerTypes, in: operations).reversed() {
                        operations.removeHandler(context: departing, promise: nil)
                    }
                    kind?.opened(.webSocket)
                }
            ),
            withErrorHandling: false
        )
        try pipeline.addHandler(tap)
        try pipeline.addHandler(accessLog)
        try pipeline.addHandler(handler)
    }
}

extension RelayHTTPServer {
    /// Largest WebSocket message (after reassembly of fragments).
    static let maxWebSocketMessageBytes = 1 << 20

    /// Upgrades `/ws` and `…/realtime` when the caller is admitted; otherwise the request reaches the HTTP handler,
    /// which answers with the reason (401, 404, 429 or 426). One upgrader per connection: the admission made when
    /// the upgrade is decided is the one the session is built from (the caller is charged once).
    static func webSocketUpgrader(services: RelayServices, scheme: String) -> NIOWebSocketServerUpgrader {
        let admitted = Mutex<(WebSocketTarget, WatcherLease?)?>(nil)
        return NIOWebSocketServerUpgrader(
            maxFrameSize: maxWebSocketMessageBytes,
            // Protocol errors reach WebSocketSessionHandler, which closes gracefully (close frame, half-close, drain)
            // instead of the decoder closing at once and turning the close frame into a TCP reset.
            automaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                guard
                    case .success(let admission) = WebSocketGate.admit(
                        head,
                        channel: channel,
                        scheme: scheme,
                        services: services
                    )
                else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                admitted.withLock { $0 = admission }
                return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    guard let (target, lease) = admitted.withLock({ $0 }) else {
                        throw ChannelError.inappropriateOperationForState
                    }
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0,
                            maxAccumulatedFrameCount: 1024,
                            maxAccumulatedFrameSize: maxWebSocketMessageBytes
                        )
                    )
                    try pipeline.addHandler(WebSocketSessionHandler(services: services, target: target, lease: lease))
                }
            }
        )
    }
}
