import NIOCore
import NIOHTTP1
public import RelayCore
import Synchronization

/// Enforces a connection's deadlines and head size (`ConnectionClock`) on the wire.
///
/// Sits before the HTTP decoder and sees raw bytes; `HTTPPartsTap` (after the decoder) tells it where requests and
/// responses begin and end. On expiry it writes a fal-shaped 408 (or 431) straight to the socket — below the HTTP
/// encoder, which may be mid-response or have no request to answer — and closes. A keep-alive connection that idles
/// out is closed without a response, as every HTTP server does.
final class ConnectionTimer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var clock: ConnectionClock
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var context: ChannelHandlerContext?
    private var closing = false
    private var headEnd = HeadTerminatorScanner()
    private let logger: (String, ConnectionClock.Expiry?) -> Void

    init(limits: ConnectionClock.Limits, logger: @escaping (String, ConnectionClock.Expiry?) -> Void = { _, _ in }) {
        self.clock = ConnectionClock(limits: limits, now: .now())
        self.logger = logger
    }

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
        guard !closing else { return }  // the verdict is out: drop the rest
        let buffer = Self.unwrapInboundIn(data)
        var bytes = buffer.readableBytes
        // One read may carry a head and a large body (TLS hands over everything it decrypted at once): only the
        // bytes up to the blank line that ends the head count toward the head.
        if clock.isAwaitingHead, let end = headEnd.scan(buffer) {
            bytes = end
        }
        guard clock.bytesArrived(bytes, now: .now()) else {
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
        guard clock.headReceived(headBytes: byteCount, now: .now()) else {
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

    func responseEnded() {
        clock.responseEnded(now: .now())
        rearm()
    }

    /// Answers with `error` below the HTTP encoder and closes.
    func reject(_ error: FalError) {
        guard let context, !closing else { return }
        closing = true
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
        guard let context, !closing else { return }
        switch clock.expired(at: .now()) {
        case nil:
            rearm()
        case .idle:
            closing = true
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

/// Sees decoded request parts and encoded response parts (after the HTTP codec): tells `ConnectionTimer` where
/// requests and responses end, and answers decoder errors in the fal error shape (400, or 431 for a head too
/// large) in place of NIO's `HTTPServerProtocolErrorHandler`, whose bare 400 has no body.
final class HTTPPartsTap: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let timer: ConnectionTimer
    private let maxURLBytes: Int
    /// Told of each response end, so that the fast lane knows when NIO owes no response.
    private let ledger: SlowPathLedger?
    private var responding = false
    /// A head was refused (431/414): the connection is closing, and the rest of the request goes nowhere.
    private var refused = false

    init(timer: ConnectionTimer, maxURLBytes: Int, ledger: SlowPathLedger? = nil) {
        self.timer = timer
        self.maxURLBytes = maxURLBytes
        self.ledger = ledger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            guard timer.headReceived(head) else {
                refused = true
                return
            }
            guard head.uri.utf8.count <= maxURLBytes else {
                refused = true
                timer.reject(.uriTooLong(limit: maxURLBytes))
                return
            }
        case .body:
            break
        case .end:
            timer.requestEnded()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch Self.unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            responding = true
        case .end:
            responding = false
            context.write(data, promise: promise)
            ledger?.answered += 1
            timer.responseEnded()
            return
        default:
            break
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        // Any parser error is fatal; answer only if no response has begun (else the bytes would interleave).
        if !responding {
            switch parserError {
            case .headerOverflow:
                // llhttp's own cap is above any head the configuration allows: the configured limit is the one
                // a client must stay under.
                timer.reject(.headersTooLarge(limit: timer.maxHeaderBytes))
            case .invalidURL:
                timer.reject(.badRequest("The request target is not a valid URL", type: "bad_request"))
            default:
                timer.reject(.badRequest("Malformed HTTP request: \(parserError)", type: "bad_request"))
            }
        }
        context.fireErrorCaught(error)
    }
}

/// Caps open connections in total and per client address. Accepting beyond a cap costs one answer: the connection
/// is served a 503 in the fal error shape and closed.
public final class ConnectionLimiter: Sendable {
    public let maxTotal: Int
    public let maxPerAddress: Int
    private let state = Mutex<(total: Int, perAddress: [String: Int])>((0, [:]))

    public init(maxTotal: Int, maxPerAddress: Int) {
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
    }

    /// Admits a connection from `address`, or says why not. An admitted connection must be `release`d once.
    public func admit(_ address: String) -> FalError? {
        state.withLock { state in
            if state.total >= maxTotal {
                return .unavailable(
                    "The relay is at its connection limit (\(maxTotal)); retry shortly",
                    type: "too_many_connections"
                )
            }
            let mine = state.perAddress[address, default: 0]
            if mine >= maxPerAddress {
                return .unavailable(
                    "Too many connections from your address (limit \(maxPerAddress))",
                    type: "too_many_connections"
                )
            }
            state.total += 1
            state.perAddress[address] = mine + 1
            return nil
        }
    }

    public func release(_ address: String) {
        state.withLock { state in
            state.total -= 1
            let left = state.perAddress[address, default: 1] - 1
            state.perAddress[address] = left > 0 ? left : nil
        }
    }

    public var open: Int { state.withLock { $0.total } }
}
