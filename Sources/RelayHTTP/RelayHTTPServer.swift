public import Logging
public import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOWebSocket
public import NIOSSL
public import ServiceLifecycle
import Synchronization

/// One address to listen on, plain or TLS.
public struct ListenerSpec: Sendable {
    public let host: String
    public let port: Int
    /// nil = plain HTTP.
    public let tls: NIOSSLContext?

    public init(host: String, port: Int, tls: NIOSSLContext?) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    public var scheme: String { tls == nil ? "http" : "https" }
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
    private let serverChannels = Mutex<[any Channel]>([])

    public init(services: RelayServices, listeners: [ListenerSpec], group: any EventLoopGroup, drainSeconds: Int64 = 10) {
        self.services = services
        self.specs = listeners
        self.group = group
        self.drainSeconds = drainSeconds
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
        let deadline = ContinuousClock.now + .seconds(drainSeconds)
        while connections.count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        connections.closeAll()
    }

    private func makeBootstrap(_ spec: ListenerSpec) -> ServerBootstrap {
        let services = self.services
        let connections = self.connections
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                connections.add(channel)
                guard let tls = spec.tls else {
                    return channel.eventLoop.makeCompletedFuture {
                        try Self.configureHTTP1(channel, services: services, scheme: spec.scheme)
                    }
                }
                // TLS: ALPN picks HTTP/2 (one handler per stream, so a browser holds many SSE streams on one
                // connection) or HTTP/1.1 (with WebSocket upgrades).
                do {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                return channel.configureHTTP2SecureUpgrade(
                    h2ChannelConfigurator: { channel in
                        channel.configureHTTP2Pipeline(mode: .server) { stream in
                            stream.eventLoop.makeCompletedFuture {
                                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                                try stream.pipeline.syncOperations.addHandler(RelayHTTPHandler(services: services, scheme: spec.scheme))
                            }
                        }.map { _ in }
                    },
                    http1ChannelConfigurator: { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try Self.configureHTTP1(channel, services: services, scheme: spec.scheme)
                        }
                    }
                )
            }
    }

    /// HTTP/1.1 with pipelining assistance, protocol error handling and WebSocket upgrades.
    static func configureHTTP1(_ channel: any Channel, services: RelayServices, scheme: String) throws {
        let pipeline = channel.pipeline.syncOperations
        let handler = RelayHTTPHandler(services: services, scheme: scheme)
        let boundHandler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
        try pipeline.configureHTTPServerPipeline(
            withServerUpgrade: (
                upgraders: [Self.webSocketUpgrader(services: services)],
                completionHandler: { context in
                    // The socket speaks WebSocket now: the HTTP handler leaves.
                    _ = try? context.pipeline.syncOperations.removeHandler(boundHandler.value)
                }
            ),
            withErrorHandling: true
        )
        try pipeline.addHandler(handler)
    }
}

extension RelayHTTPServer {
    /// Largest WebSocket message (after reassembly of fragments).
    static let maxWebSocketMessageBytes = 1 << 20

    /// Upgrades `/ws` and `…/realtime` when the caller is admitted; otherwise the request reaches the HTTP handler,
    /// which answers with the reason (401, 404 or 426).
    static func webSocketUpgrader(services: RelayServices) -> NIOWebSocketServerUpgrader {
        NIOWebSocketServerUpgrader(
            maxFrameSize: maxWebSocketMessageBytes,
            // Protocol errors reach WebSocketSessionHandler, which closes gracefully (close frame, half-close, drain)
            // instead of the decoder closing at once and turning the close frame into a TCP reset.
            automaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                guard case .success = WebSocketGate.target(for: head, services: services) else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
            },
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    guard case .success(let target) = WebSocketGate.target(for: head, services: services) else {
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
                    try pipeline.addHandler(WebSocketSessionHandler(services: services, target: target))
                }
            }
        )
    }
}

/// Open connections, so that shutdown can quiesce and then close them.
final class ConnectionRegistry: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.channels.withLock { $0.removeValue(forKey: id) }
        }
    }

    var count: Int { channels.withLock { $0.count } }

    func quiesceAll() {
        for channel in channels.withLock({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    func closeAll() {
        for channel in channels.withLock({ Array($0.values) }) {
            channel.close(promise: nil)
        }
    }
}
