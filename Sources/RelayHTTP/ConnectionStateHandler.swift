import NIOCore
import NIOHTTP1
import RelayCore

/// Enforces a connection's deadlines and head size (`ConnectionStateMachine`) on the wire.
///
/// Sits before the HTTP decoder and sees raw bytes; `HTTPPartsTap` (after the decoder) tells it where requests and
/// responses begin and end. On expiry it writes a fal-shaped 408 (or 431) straight to the socket — below the HTTP
/// encoder, which may be mid-response or have no request to answer — and closes. A keep-alive connection that idles
/// out is closed without a response, as every HTTP server does.
final class ConnectionStateHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var clock: ConnectionStateMachine
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var context: ChannelHandlerContext?
    private var headEnd = HeadTerminatorScanner()
    private let logger: (String, ConnectionStateMachine.Expiry?) -> Void
    /// The time: `NIODeadline.now` in service, a test's own clock in tests.
    private let now: () -> NIODeadline

    init(
        limits: ConnectionStateMachine.Limits,
        now: @escaping () -> NIODeadline = { .now() },
        logger: @escaping (String, ConnectionStateMachine.Expiry?) -> Void = { _, _ in }
    ) {
        self.now = now
        self.clock = ConnectionStateMachine(limits: limits, now: now())
        self.logger = logger
    }

    // MARK: - What the fast lane and the parts probe ask and tell

    /// Whether the fast lane may answer the next request itself (NIO owes no response).
    var owesNoResponse: Bool { clock.owesNoResponse }

    /// The fast lane handed a request to NIO's pipeline.
    func requestForwarded() {
        clock.requestForwarded()
    }

    /// The connection's verdict is out: what still arrives goes nowhere.
    var isClosing: Bool { clock.isClosing }

    /// Requests the fast lane handed to NIO's pipeline so far.
    var requestsForwarded: Int { clock.requestsForwarded }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        rearm()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !clock.isClosing else { return }  // the verdict is out: drop the rest
        let buffer = Self.unwrapInboundIn(data)
        var bytes = buffer.readableBytes
        // One read may carry a head and a large body (TLS hands over everything it decrypted at once): only the
        // bytes up to the blank line that ends the head count toward the head.
        if clock.isAwaitingHead, let end = headEnd.scan(buffer) {
            bytes = end
        }
        guard clock.bytesArrived(bytes, now: now()) else {
            reject(.headersTooLarge(limit: clock.limits.maxHeaderBytes))
            return
        }
        rearm()
        context.fireChannelRead(data)
    }

    // MARK: - Events from HTTPPartsTap

    /// The configured limit on a request head.
    var maxHeaderBytes: Int { clock.limits.maxHeaderBytes }

    /// Returns false when the head was too large (the connection is being answered 431 and closed).
    func headReceived(_ head: HTTPRequestHead) -> Bool {
        headReceived(byteCount: Self.size(of: head))
    }

    /// A head of `byteCount` bytes was read (by `FastLane`, which sees the bytes themselves).
    func headReceived(byteCount: Int) -> Bool {
        headEnd = HeadTerminatorScanner()
        guard clock.headReceived(headBytes: byteCount, now: now()) else {
            reject(.headersTooLarge(limit: clock.limits.maxHeaderBytes))
            return false
        }
        rearm()
        return true
    }

    func requestEnded() {
        clock.requestEnded()
        rearm()
    }

    /// A response ended: one the fast lane wrote, or (`forwarded`) one of NIO's pipeline.
    func responseEnded(forwarded: Bool = false) {
        clock.responseEnded(now: now(), forwarded: forwarded)
        rearm()
    }

    /// NIO's pipeline began a final response.
    func responseStarted() {
        clock.responseStarted()
    }

    /// Whether a response of NIO's pipeline is under way (a protocol error then cannot be answered, only closed).
    var isResponding: Bool { clock.isResponding }

    /// Answers with `error` below the HTTP encoder and closes.
    func reject(_ error: FalError) {
        guard let context, clock.close() else { return }
        timer?.cancel()
        var buffer = context.channel.allocator.buffer(capacity: 256)
        let body = error.body.serialized()
        let reason = HTTPResponseStatus(statusCode: error.status).reasonPhrase
        buffer.writeString(
            "HTTP/1.1 \(error.status) \(reason)\r\ncontent-type: application/json\r\nx-fal-error-type: \(error.errorType ?? "error")\r\n"
                + "connection: close\r\ncontent-length: \(body.count)\r\n\r\n"
        )
        buffer.writeBytes(body)
        let written = context.writeAndFlush(Self.wrapOutboundOut(buffer))
        guard error.status != 408 else {
            // Too slow (slowloris, a stalled body): nothing to wait for.
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
            return
        }
        // A head too large or a target too long: the client may still be sending the rest, so linger until it has
        // read the answer.
        LingeringCloseHandler.close(context.channel, after: written)
    }

    private func rearm() {
        guard let context else { return }
        // No deadline (responding): a timer already set stays and finds nothing expired when it fires. A timer set
        // for an earlier time stays too: when it fires it checks the clock and re-arms for the current deadline. So
        // a keep-alive connection schedules nothing per request, and a body in many small reads nothing per read.
        guard let (deadline, _) = clock.deadline else { return }
        if let current = timerDeadline, current <= deadline, timer != nil { return }
        timer?.cancel()
        timerDeadline = deadline
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.fire()
        }
    }

    private func fire() {
        timer = nil
        timerDeadline = nil
        guard let context, !clock.isClosing else { return }
        switch clock.expired(at: now()) {
        case nil:
            rearm()
        case .idle:
            _ = clock.close()
            logger("keep-alive connection idle: closed", .idle)
            context.close(promise: nil)
        case .header:
            logger("request head not received in time: 408", .header)
            reject(
                .requestTimeout(
                    "The request head was not received within \(clock.limits.headerTimeout.nanoseconds / 1_000_000_000) s"
                )
            )
        case .body:
            logger("request body stalled: 408", .body)
            reject(
                .requestTimeout(
                    "The request body stalled for \(clock.limits.bodyTimeout.nanoseconds / 1_000_000_000) s"
                )
            )
        }
    }

    /// The head's size as sent: request line and header lines.
    static func size(of head: HTTPRequestHead) -> Int {
        var size = head.method.rawValue.utf8.count + head.uri.utf8.count + 12
        for (name, value) in head.headers {
            size += name.utf8.count + value.utf8.count + 4
        }
        return size
    }
}

@available(*, unavailable)
extension ConnectionStateHandler: Sendable {}

/// Finds the `\r\n\r\n` that ends a request head, across reads.
struct HeadTerminatorScanner {
    /// How much of `\r\n\r\n` the bytes seen so far end with.
    private var matched = 0

    /// The number of bytes of `buffer` up to and including the terminator, or nil when it is not in `buffer`.
    mutating func scan(_ buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { bytes in
            for (index, byte) in bytes.enumerated() {
                let expected: UInt8 = matched % 2 == 0 ? 13 : 10
                if byte == expected {
                    matched += 1
                    if matched == 4 {
                        matched = 0
                        return index + 1
                    }
                } else {
                    matched = byte == 13 ? 1 : 0
                }
            }
            return nil
        }
    }
}
