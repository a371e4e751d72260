import Logging
import NIOCore
import NIOWebSocket
import RelayCore
import RelayJobs

/// One upgraded WebSocket: the `/ws` watch protocol (JSON text) or fal realtime (msgpack binary), RFC 6455 via
/// NIOWebSocket with fragments aggregated up to a size limit.
///
/// Slow sockets never hold a job back: events and partial outputs arrive from the job on this loop and are written
/// only while the channel is writable; otherwise the watch is marked behind and, once writable again, caught up from
/// the job's log (which keeps every stream item — logs, partials, the end — but only the latest snapshot). Pings
/// every 30 s; a socket silent for the idle timeout is closed with 1001.
final class WebSocketSessionHandler: ChannelInboundHandler, RemovableChannelHandler, KeepAliveTarget {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let pingInterval = TimeAmount.seconds(30)
    static let idleTimeout = TimeAmount.seconds(120)

    let services: RelayServices
    private let target: WebSocketTarget
    private var session = WatchSession()
    private var subscriptions: [String: (request: RelayRequest, token: Int)] = [:] {
        didSet { services.jobs.statistics.adjustWatchers(.webSocket, by: subscriptions.count - oldValue.count) }
    }
    /// Realtime: client-side correlation ids to echo, by relay request id.
    private var realtimeEcho: [String: JSONValue] = [:]
    /// Pings come from the loop's shared wheel (no timer per socket).
    private var pingSlot: KeepAliveWheel.Slot?
    private var context: ChannelHandlerContext?
    private var lastHeard = NIODeadline.now()
    private var closing = false
    private var rawFrames: ChannelHandlerContext?

    /// The caller's watcher place, given back when the socket goes.
    private let lease: WatcherLease?

    init(services: RelayServices, target: WebSocketTarget, lease: WatcherLease? = nil) {
        self.services = services
        self.target = target
        self.lease = lease
    }

    var principal: Principal { target.principal }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        pingSlot = KeepAliveWheel.on(context.eventLoop, seconds: Self.pingInterval.nanoseconds / 1_000_000_000).add(
            self
        )
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopPinging()
        lease?.release()
        self.context = nil
    }

    func keepAlive() {
        if let context { keepAlive(context: context) }
    }

    private func stopPinging() {
        if let slot = pingSlot {
            KeepAliveWheel.remove(self, from: slot)
            pingSlot = nil
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopPinging()
        lease?.release()
        rawFrames = nil
        for (id, subscription) in subscriptions {
            subscription.request.job.unsubscribe(subscription.token)
            if case .realtime = target {
                // A realtime caller that left no longer waits for its result.
                _ = services.jobs.cancel(id, keyID: principal.keyID)
            }
        }
        subscriptions.removeAll()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            close(context: context, code: .goingAway, reason: "server shutting down")
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError, error == .invalidFrameLength {
            close(context: context, code: .messageTooLarge, reason: "message too large")
        } else if let error = error as? NIOWebSocketFrameAggregator.Error,
            case .accumulatedFrameSizeIsTooLarge = error
        {
            close(context: context, code: .messageTooLarge, reason: "message too large")
        } else {
            services.logger.debug("websocket error", metadata: ["error": "\(error)"])
            close(context: context, code: .protocolError, reason: "protocol error")
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            resync(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - Frames

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        lastHeard = .now()
        if closing {
            // Our close frame is out; drain until the peer's close (or the linger deadline) ends the connection.
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        }
        switch frame.opcode {
        case .ping:
            send(context: context, opcode: .pong, data: frame.unmaskedData)
        case .pong:
            break
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readWebSocketErrorCode() ?? .normalClosure
            close(
                context: context,
                code: code == .normalClosure || code == .goingAway ? code : .normalClosure,
                reason: ""
            )
        case .text:
            var data = frame.unmaskedData
            let bytes = data.readBytes(length: data.readableBytes) ?? []
            switch target {
            case .watch:
                handle(WatchSession.parse(bytes), context: context)
            case .realtime(_, let model):
                guard let value = try? JSONValue(parsing: bytes), let object = value.objectValue else {
                    sendRealtimeError(
                        context: context,
                        error: "invalid_message",
                        reason: "text messages must be JSON objects"
                    )
                    return
                }
                realtime(object, model: model, context: context)
            }
        case .binary:
            switch target {
            case .watch:
                close(context: context, code: .unacceptableData, reason: "this socket speaks JSON text messages")
            case .realtime(_, let model):
                let payload = frame.unmaskedData
                let decoded = payload.withUnsafeReadableBytes { bytes in
                    Result { () throws(MessagePackError) in try MessagePack.decode(bytes) }
                }
                guard case .success(let value) = decoded, let object = value.objectValue else {
                    sendRealtimeError(
                        context: context,
                        error: "invalid_message",
                        reason: "binary messages must be msgpack maps"
                    )
                    return
                }
                realtime(object, model: model, context: context)
            }
        default:
            close(context: context, code: .protocolError, reason: "unexpected frame")
        }
    }

    // MARK: - The watch protocol

    private func handle(_ command: WatchSession.Command, context: ChannelHandlerContext) {
        switch command {
        case .invalid(let detail, let requestID):
            sendError(context: context, requestID: requestID, detail: detail)
        case .unwatch(let requestID):
            session.end(requestID)
            if let subscription = subscriptions.removeValue(forKey: requestID) {
                subscription.request.job.unsubscribe(subscription.token)
            }
        case .watch(let requestID, let after):
            guard let request = services.jobs.request(requestID, keyID: principal.keyID) else {
                sendError(context: context, requestID: requestID, detail: "Request \(requestID) not found")
                return
            }
            watch(request, after: after, context: context)
        case .submit(let model, let input):
            submit(model: model, input: input, context: context) { $0.answer($2, context: $1) }
        }
    }

    func watch(_ request: RelayRequest, after: Int, context: ChannelHandlerContext) {
        if let old = subscriptions.removeValue(forKey: request.id) {
            old.request.job.unsubscribe(old.token)
        }
        guard session.begin(request.id, after: after) else {
            sendError(
                context: context,
                requestID: request.id,
                detail: "this socket watches \(session.maxWatches) requests already"
            )
            return
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let id = request.id
        let subscription = request.job.subscribe(after: after, on: context.eventLoop) { event in
            let (handler, context) = bound.value
            handler.deliver(event, requestID: id, context: context)
        }
        if subscription.token == 0 && subscription.replay.isEmpty {
            // A finished job watched after its end: nothing will ever come.
            session.end(request.id)
            return
        }
        // Kept for a finished job too (token 0): its replay ends with the terminal event, whose send removes the
        // entry, and a part of it deferred on a full socket is caught up from `request` on resync.
        subscriptions[request.id] = (request, subscription.token)
        for event in subscription.replay {
            deliver(event, requestID: request.id, context: context)
        }
    }

    private func deliver(_ event: JobEvent, requestID: String, context: ChannelHandlerContext) {
        if case .realtime = target {
            deliverRealtime(event, requestID: requestID, context: context)
            return
        }
        switch session.deliver(requestID, sequence: event.sequence, writable: context.channel.isWritable) {
        case .send:
            send(event, requestID: requestID, context: context)
        case .duplicate, .deferred, .ignore:
            break
        }
    }

    private func send(_ event: JobEvent, requestID: String, context: ChannelHandlerContext) {
        // Every socket watching this request on this loop gets the same bytes: serialised once per event.
        let key = subscriptions[requestID].map { subscription in
            FrameMemo.Key(
                kind: .webSocket,
                job: ObjectIdentifier(subscription.request.job),
                sequence: event.sequence,
                requestID: requestID
            )
        }
        if let key, let below = encoderContext(context) {
            // Serialised and framed once: the server's frames are unmasked, so every socket sends the same bytes,
            // written below the frame encoder as they are (one buffer, no header allocated per socket).
            let frame = FrameMemo.current.frame(for: key) {
                guard let message = WatchSession.message(for: event, requestID: requestID) else { return ByteBuffer() }
                return Self.encodedTextFrame(
                    JSONValue.object(message).serialized(),
                    allocator: context.channel.allocator
                )
            }
            if frame.readableBytes > 0, !closing {
                below.writeAndFlush(NIOAny(frame), promise: nil)
            }
        } else if let message = WatchSession.message(for: event, requestID: requestID) {
            sendJSON(context: context, message)
        }
        if event.isTerminal {
            session.end(requestID)
            subscriptions[requestID] = nil
        }
    }

    /// Catches up every watch that fell behind while the socket was not writable.
    private func resync(context: ChannelHandlerContext) {
        for (requestID, after) in session.takeBehind() {
            guard let subscription = subscriptions[requestID] else { continue }
            for event in subscription.request.job.replay(after: after) {
                guard context.channel.isWritable else {
                    // Still full: the rest waits for the next writability change.
                    _ = session.deliver(requestID, sequence: event.sequence, writable: false)
                    break
                }
                session.sent(requestID, sequence: event.sequence)
                send(event, requestID: requestID, context: context)
            }
        }
    }

    // MARK: - fal realtime

    private func realtime(_ message: JSONObject, model: ModelSpec, context: ChannelHandlerContext) {
        var input = message
        let echo = input["request_id"]
        input["request_id"] = nil
        guard let endpoint = EndpointID(model.id) else { return }
        submit(model: endpoint.description, input: input, context: context) { handler, context, submitted in
            switch submitted {
            case .success(let request):
                if let echo { handler.realtimeEcho[request.id] = echo }
                handler.watch(request, after: 0, context: context)
            case .failure(let error):
                handler.sendRealtimeError(
                    context: context,
                    error: error.errorType ?? "validation_error",
                    reason: error.message
                )
            }
        }
    }

    private func deliverRealtime(_ event: JobEvent, requestID: String, context: ChannelHandlerContext) {
        guard case .completed(let outcome) = event.kind else { return }
        session.end(requestID)
        subscriptions[requestID] = nil
        let echo = realtimeEcho.removeValue(forKey: requestID)
        switch outcome {
        case .success(let result, _):
            var object = result.objectValue ?? ["output": result]
            if let echo { object["request_id"] = echo }
            var buffer = context.channel.allocator.buffer(capacity: 256)
            buffer.writeBytes(MessagePack.encode(.object(object)))
            send(context: context, opcode: .binary, data: buffer)
        case .failure(let error):
            sendRealtimeError(context: context, error: error.errorType ?? "upstream_error", reason: error.message)
        case .cancelled:
            sendRealtimeError(context: context, error: "request_cancelled", reason: "the request was cancelled")
        }
    }

    private func sendRealtimeError(context: ChannelHandlerContext, error: String, reason: String) {
        sendJSON(context: context, ["type": "x-fal-error", "error": .string(error), "reason": .string(reason)])
    }

    // MARK: - Shared

    private func keepAlive(context: ChannelHandlerContext) {
        if NIODeadline.now() - lastHeard > Self.idleTimeout {
            close(context: context, code: .goingAway, reason: "idle timeout")
        } else {
            send(context: context, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))
        }
    }

    private func sendError(context: ChannelHandlerContext, requestID: String?, detail: String) {
        var object: JSONObject = ["type": "error", "detail": .string(detail)]
        if let requestID { object["request_id"] = .string(requestID) }
        sendJSON(context: context, object)
    }

    func sendJSON(context: ChannelHandlerContext, _ object: JSONObject) {
        let bytes = JSONValue.object(object).serialized()
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        send(context: context, opcode: .text, data: buffer)
    }

    /// The frame encoder's context, through which an already encoded frame goes out without being encoded again;
    /// nil when there is none (then frames go through `send`).
    private func encoderContext(_ context: ChannelHandlerContext) -> ChannelHandlerContext? {
        if let cached = rawFrames { return cached }
        rawFrames = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        return rawFrames
    }

    /// A final, unmasked text frame (RFC 6455 §5.2) carrying `payload`.
    static func encodedTextFrame(_ payload: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: payload.count + 10)
        buffer.writeInteger(UInt8(0x81))  // FIN, text
        switch payload.count {
        case ..<126:
            buffer.writeInteger(UInt8(payload.count))
        case ..<65536:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(payload.count))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(payload.count))
        }
        buffer.writeBytes(payload)
        return buffer
    }

    private func send(context: ChannelHandlerContext, opcode: WebSocketOpcode, data: ByteBuffer) {
        guard !closing else { return }
        context.writeAndFlush(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: opcode, data: data)), promise: nil)
    }

    private func close(context: ChannelHandlerContext, code: WebSocketErrorCode, reason: String) {
        guard !closing else { return }
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        // RFC 6455 §7.1.1: send our close, stop writing, and keep reading until the peer answers, so that data it
        // was still sending does not turn our close frame into a TCP reset. A peer that never answers is cut off.
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
            .whenComplete { _ in channel.close(mode: .output, promise: nil) }
        context.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
        closing = true
        stopPinging()
    }
}

@available(*, unavailable)
extension WebSocketSessionHandler: Sendable {}
