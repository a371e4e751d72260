import NIOCore
import NIOHTTP1
import RelayCore
import RelayStore

/// Answers the hottest HTTP/1.1 requests straight from the bytes, below NIO's HTTP codec: cached results, status
/// polls, `/healthz`, and media files already open (sendfile). Everything else goes on to NIO's pipeline unchanged.
///
/// Why: a cache hit is a few hundred bytes the relay already holds. Through the full pipeline (llhttp, the HTTP
/// parts passing five handlers each way, a header dictionary, NIO's encoder) it cost ~4x nginx's CPU per request;
/// here it is one scan of the head, the shared answer logic (`RelayServices.answerRead`), and one write of bytes.
///
/// Sits between `ConnectionStateHandler` and the HTTP decoder. `RequestHeadScanner` frames every message: a fast head is
/// answered only when NIO owes no response (the connection's state machine counts them), otherwise the whole message — head and its
/// `Content-Length` body — is forwarded, so NIO's parser only ever sees whole messages in order. A message the
/// scanner cannot frame (chunked body, upgrade, anything unusual) hands the connection to NIO for good. Reads stop
/// while the channel is not writable, so a client that pipelines requests without reading answers cannot grow the
/// outbound buffer without bound.
final class FastLane: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Mode {
        /// Between messages: bytes are scanned for the next head.
        case scanning
        /// Forwarding the rest of a request body to NIO.
        case forwardingBody(remaining: Int)
        /// NIO owns the connection from here on.
        case opaque
        /// NIO's handlers are being replaced for an upgrade (`rearmUpgrade`): what arrives waits here, in order.
        case rearming(ByteBuffer)
    }

    let services: RelayServices
    let scheme: String
    let timer: ConnectionStateHandler
    var laneLog: LaneAccessLog
    private let scanner: RequestHeadScanner
    private var mode = Mode.scanning
    /// Bytes of a head not yet complete.
    private var pending: ByteBuffer?
    private var readGate = ReadGate()
    /// A status stream took the connection over: this handler has left the pipeline.
    var handedOver = false
    /// Told when a status stream takes the connection over (it counts as an SSE connection from then on).
    let connectionKind: ConnectionKindTracker?

    /// Adds NIO's HTTP/1.1 handlers after this one: run once, before the first request the lane hands on; nil once
    /// they are there.
    typealias SlowPathInstaller = (ChannelPipeline.SynchronousOperations, FastLane) throws -> Void
    private var slowPath: SlowPathInstaller?
    /// The same installer, kept to install NIO's handlers afresh for an upgrade that is not the first request.
    private let installer: SlowPathInstaller?

    /// `slowPath` nil: the HTTP handlers are in the pipeline already.
    init(
        services: RelayServices,
        scheme: String,
        timer: ConnectionStateHandler,
        proto: String = "http/1.1",
        connectionKind: ConnectionKindTracker? = nil,
        slowPath: SlowPathInstaller? = nil
    ) {
        self.connectionKind = connectionKind
        self.services = services
        self.scheme = scheme
        self.timer = timer
        self.slowPath = slowPath
        self.installer = slowPath
        self.laneLog = LaneAccessLog(
            sink: AccessLogSink(logger: services.accessLogger, metrics: services.httpMetrics, proto: proto)
        )
        self.scanner = RequestHeadScanner(
            maxHeadBytes: services.limits.connection.maxHeaderBytes,
            maxTargetBytes: services.limits.maxURLBytes
        )
    }

    /// The last answer on this connection that can no longer change (the status or result of a finished request), as
    /// the bytes written. A client that polls a finished request or fetches its result again and again gets them with
    /// no table lookup, no response built and nothing encoded. Each use still checks that the caller's key is as it
    /// was (the key table's version), that no request was removed, and charges the caller's rate limit.
    var settled: SettledRead<ByteBuffer>?

    /// The last request line routed on this connection: a client polling a status or fetching a result sends the
    /// same one again and again, and routing is a pure function of method, Host and target.
    var lastRouted: (method: HTTPMethod, host: String?, uri: String, route: Route)?

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        switch mode {
        case .opaque:
            context.fireChannelRead(data)
            return
        case .rearming(var held):
            held.writeBuffer(&bytes)
            mode = .rearming(held)
            return
        case .forwardingBody(let remaining):
            guard bytes.readableBytes > remaining else {
                mode =
                    bytes.readableBytes == remaining
                    ? .scanning : .forwardingBody(remaining: remaining - bytes.readableBytes)
                context.fireChannelRead(data)
                return
            }
            let body = bytes.readSlice(length: remaining)!
            mode = .scanning
            context.fireChannelRead(Self.wrapInboundOut(body))
        case .scanning:
            break
        }
        if var earlier = pending {
            pending = nil
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        var wrote = false
        defer { if wrote { context.flush() } }
        while bytes.readableBytes > 0 {
            switch scanner.scan(bytes) {
            case .incomplete:
                pending = bytes
                return
            case .opaque:
                mode = .opaque
                guard installSlowPath(context: context) else { return }
                context.fireChannelRead(Self.wrapInboundOut(bytes))
                return
            case .upgrade:
                // NIO's upgrade handler only looks at the first request its pipeline sees: an upgrade after other
                // requests (fal-js opens its realtime socket after any other call on the origin) gets a pipeline of
                // its own, as a first request would. Only while NIO owes no response: its handlers are between
                // requests then, holding nothing.
                if slowPath == nil, timer.owesNoResponse, let installer {
                    rearmUpgrade(context: context, installer: installer, held: bytes)
                    return
                }
                mode = .opaque
                guard installSlowPath(context: context) else { return }
                context.fireChannelRead(Self.wrapInboundOut(bytes))
                return
            case .slow(let length, let bodyLength):
                forward(context: context, &bytes, headLength: length, bodyLength: bodyLength)
                if case .forwardingBody = mode { return }
            case .fast(let head, let length):
                if timer.owesNoResponse, answer(head, headLength: length, context: context) {
                    bytes.moveReaderIndex(forwardBy: length)
                    // The stream's writer flushes; whatever follows a close-delimited response is dropped.
                    if handedOver {
                        wrote = false
                        return
                    }
                    wrote = true
                } else {
                    forward(context: context, &bytes, headLength: length, bodyLength: 0)
                }
            }
        }
    }

    /// Hands one request (its head, and its body as far as it has arrived) to NIO's pipeline.
    private func forward(context: ChannelHandlerContext, _ bytes: inout ByteBuffer, headLength: Int, bodyLength: Int) {
        guard installSlowPath(context: context) else {
            bytes.moveReaderIndex(to: bytes.writerIndex)
            return
        }
        timer.requestForwarded()
        let available = min(bodyLength, bytes.readableBytes - headLength)
        let message = bytes.readSlice(length: headLength + available)!
        if available < bodyLength {
            mode = .forwardingBody(remaining: bodyLength - available)
        }
        context.fireChannelRead(Self.wrapInboundOut(message))
    }

    /// Replaces NIO's HTTP handlers (and the relay's behind them) with a fresh set, whose upgrade handler sees the
    /// next request as its first. NIO's decoder leaves the pipeline on a later tick, so `held` (and whatever arrives
    /// meanwhile) goes to the new set once the old one is gone.
    private func rearmUpgrade(context: ChannelHandlerContext, installer: @escaping SlowPathInstaller, held: ByteBuffer)
    {
        mode = .rearming(held)
        let operations = context.pipeline.syncOperations
        let behind = RelayHTTPServer.http1HandlerTypes.filter {
            $0 != ConnectionStateHandler.self && $0 != FastLane.self
        }
        let removals = RelayHTTPServer.contexts(of: behind, in: operations).reversed().map { departing in
            let removed = context.eventLoop.makePromise(of: Void.self)
            operations.removeHandler(context: departing, promise: removed)
            return removed.futureResult
        }
        let bound = NIOLoopBound((self, context, installer), eventLoop: context.eventLoop)
        EventLoopFuture.andAllComplete(removals, on: context.eventLoop).whenComplete { _ in
            let (lane, context, installer) = bound.value
            guard case .rearming(let bytes) = lane.mode else { return }
            lane.mode = .opaque
            do {
                try installer(context.pipeline.syncOperations, lane)
            } catch {
                lane.services.logger.error("could not set up the HTTP/1.1 pipeline", metadata: ["error": "\(error)"])
                context.close(promise: nil)
                return
            }
            context.fireChannelRead(Self.wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
    }

    /// Puts NIO's HTTP handlers in place if they are not yet; false (the connection closing) if that failed.
    private func installSlowPath(context: ChannelHandlerContext) -> Bool {
        guard let install = slowPath else { return true }
        slowPath = nil
        do {
            try install(context.pipeline.syncOperations, self)
            return true
        } catch {
            services.logger.error("could not set up the HTTP/1.1 pipeline", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return false
        }
    }

    // MARK: - Without the HTTP handlers

    /// Shutdown with no HTTP handler yet: every request so far was answered whole, so once what was written is out
    /// (a media body may still be going), the connection closes, as `HTTPServerPipelineHandler` closes an idle one.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard slowPath != nil, event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    /// An error with no HTTP handler yet (which would close): close.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard slowPath != nil else {
            context.fireErrorCaught(error)
            return
        }
        services.logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: - Back-pressure

    func read(context: ChannelHandlerContext) {
        readGate.read(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        readGate.writabilityChanged(context: context)
        context.fireChannelWritabilityChanged()
    }
}
