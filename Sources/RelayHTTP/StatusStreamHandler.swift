import NIOCore
import RelayCore
import RelayJobs

/// An HTTP/1.1 SSE status stream (`…/requests/{id}/status/stream`) once its head is decided: the only handler left in
/// the pipeline besides TLS. It owns the job subscription and writes the shared, already serialised event frames
/// (one `ByteBuffer` per event per loop, `FrameMemo`) straight to the socket or `NIOSSLHandler` — no HTTP encoder,
/// no chunk framing, no per-event trip through six handlers.
///
/// The response is close-delimited (RFC 9112 §6.3: `connection: close`, neither `content-length` nor chunked), so the
/// connection carries nothing after it: inbound bytes are ignored, EOF or an error ends the stream. It keeps every
/// behaviour of the stream that `RelayHTTPHandler` serves over HTTP/2: `id:` sequence numbers, the resume point,
/// the logs variant, `: ping` every interval (`KeepAliveWheel`), close after COMPLETED, pause and replay from the
/// job's log for a slow reader (`JobStreamStateMachine`), a `retry:` hint at shutdown, the watcher count, and one
/// access line with HTTP metrics at its end.
///
/// Loop-confined (STYLE.md rule 2).
final class StatusStreamHandler: ChannelInboundHandler, KeepAliveTarget {
    /// Never unwrapped: whatever reaches this handler (bytes, or request parts a departing HTTP handler flushed) is
    /// dropped.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let services: RelayServices
    private let stream: StatusStream
    private var machine: JobStreamStateMachine
    private var context: ChannelHandlerContext?
    private var subscriptionToken = 0
    private var keepAliveSlot: KeepAliveWheel.Slot?
    private var access: AccessEntry?
    private let accessSink: AccessLogSink?
    private let connectionKind: ConnectionKindTracker?
    private var started = false
    /// The channel's writability and allocator, kept here: a job with thousands of watchers asks for them once per
    /// watcher per event, and through `context.channel` each ask costs an existential, a retain and an atomic load.
    private var writable = true
    private var allocator = ByteBufferAllocator()

    init(
        services: RelayServices,
        stream: StatusStream,
        access: AccessEntry?,
        accessSink: AccessLogSink?,
        connectionKind: ConnectionKindTracker? = nil
    ) {
        self.services = services
        self.stream = stream
        self.machine = JobStreamStateMachine(after: stream.after)
        self.access = access
        self.accessSink = accessSink
        self.connectionKind = connectionKind
    }

    // MARK: - Taking over a connection

    /// Puts `handler` in place of the HTTP/1.1 handlers of `context`'s channel and starts the stream. Every handler
    /// an HTTP/1.1 connection can hold leaves (`RelayHTTPServer.http1HandlerTypes`): the deadlines, the fast lane,
    /// NIO's codec and upgrade handlers, the access log and the HTTP handler that calls this; TLS stays. They leave from the tail
    /// towards the head: what a departing handler still holds (a pipelined request, the decoder's unparsed bytes)
    /// then flows only into this handler, which drops it.
    static func takeOver(_ handler: StatusStreamHandler, pipeline: ChannelPipeline) throws {
        let operations = pipeline.syncOperations
        let departing = RelayHTTPServer.contexts(of: RelayHTTPServer.http1HandlerTypes, in: operations)
        try operations.addHandler(handler)
        for context in departing.reversed() {
            operations.removeHandler(context: context, promise: nil)
        }
        handler.start()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.allocator = context.channel.allocator
        self.writable = context.channel.isWritable
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if finish(clientGone: true) {
            record(clientGone: true)
        }
        self.context = nil
    }

    /// Writes the head and whatever the job logged after the resume point, then follows the job.
    func start() {
        guard let context, !started else { return }
        started = true
        var head = context.channel.allocator.buffer(capacity: 320)
        head.writeString(Self.head(for: stream.request))
        context.write(Self.wrapOutboundOut(head), promise: nil)
        services.jobs.statistics.adjustWatchers(.sse, by: 1)
        connectionKind?.opened(.sseStream)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let subscription = stream.request.job.subscribe(after: stream.after, on: context.eventLoop) { event in
            bound.value.receive(event)
        }
        subscriptionToken = subscription.token
        for event in subscription.replay {
            receive(event, flush: false)
        }
        context.flush()
        if machine.isStreaming {
            keepAliveSlot = KeepAliveWheel.on(context.eventLoop, seconds: services.limits.sseKeepAliveSeconds).add(self)
        }
    }

    /// The response head: a close-delimited `text/event-stream` body.
    static func head(for request: RelayRequest) -> String {
        var head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
        head += "x-fal-request-id: \(request.id)\r\n"
        for (name, value) in FalWire.cacheHeaders(request) {
            head += "\(name): \(value)\r\n"
        }
        head += "x-accel-buffering: no\r\nconnection: close\r\n\r\n"
        return head
    }

    // MARK: - Events

    private func receive(_ event: JobEvent, flush: Bool = true) {
        guard let context else { return }
        switch machine.deliver(
            sequence: event.sequence,
            terminal: event.isTerminal,
            writable: writable
        ) {
        case .drop, .wait:
            return
        case .end:
            return end(context: context, last: allocator.buffer(capacity: 0))
        case .write:
            break
        }
        let (frame, ends) = stream.frame(for: event, services: services, allocator: allocator)
        guard frame.readableBytes > 0 else { return }
        if ends {
            end(context: context, last: frame)
        } else {
            write(frame, context: context, flush: flush)
        }
    }

    func keepAlive() {
        guard let context, machine.shouldPing(writable: writable) else { return }
        write(Self.ping, context: context, flush: true)
    }

    private static let ping = ByteBufferAllocator().buffer(string: ServerSentEvents.keepAlive)
    private static let shutdownHint = ByteBufferAllocator().buffer(
        string: ServerSentEvents.shutdownHint
    )

    private func write(_ frame: ByteBuffer, context: ChannelHandlerContext, flush: Bool) {
        access?.streamed += frame.readableBytes
        if flush {
            context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
        } else {
            context.write(Self.wrapOutboundOut(frame), promise: nil)
        }
    }

    /// Writes `last`, then closes once it is out (a close-delimited body ends with the connection).
    private func end(context: ChannelHandlerContext, last: ByteBuffer) {
        guard finish(clientGone: false) else { return }
        access?.streamed += last.readableBytes
        record(clientGone: false)
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(last)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    /// Releases what the stream holds; false when it had already ended.
    private func finish(clientGone: Bool) -> Bool {
        guard machine.end() else { return false }
        stream.lease?.release()
        if subscriptionToken != 0 {
            stream.request.job.unsubscribe(subscriptionToken)
        }
        if let slot = keepAliveSlot {
            KeepAliveWheel.remove(self, from: slot)
            keepAliveSlot = nil
        }
        if started {
            services.jobs.statistics.adjustWatchers(.sse, by: -1)
        }
        return true
    }

    private func record(clientGone: Bool) {
        if let entry = access {
            access = nil
            accessSink?.record(entry, clientGone: clientGone)
        }
    }

    // MARK: - Channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Nothing follows a close-delimited response: bytes after the request are dropped.
    }

    func channelReadComplete(context: ChannelHandlerContext) {}

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        if let after = machine.writabilityChanged(writable: writable) {
            for event in stream.request.job.replay(after: after) {
                receive(event, flush: false)
                guard case .streaming(_, false) = machine.state else { break }
            }
            context.flush()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Shutdown: end cleanly at once with a hint to reconnect (to another instance, with Last-Event-ID), instead
        // of being cut at the drain deadline. The quiesce event that follows finds the stream already ended.
        if event is RelayShutdownEvent || event is ChannelShouldQuiesceEvent {
            end(context: context, last: Self.shutdownHint)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if finish(clientGone: true) {
            record(clientGone: true)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        services.logger.debug("status stream error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension StatusStreamHandler: Sendable {}
