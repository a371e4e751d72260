public import NIOCore

/// The deadlines of one HTTP/1.1 connection, as a pure state machine (tested without a socket).
///
/// - A new connection must deliver its first request head within `headerTimeout` (TLS handshake included):
///   slowloris, and sockets opened and never used.
/// - Between requests a keep-alive connection may sit idle for `idleTimeout`; once the first byte of the next
///   request arrives, its head must be complete within `headerTimeout`.
/// - While a body arrives, each read must come within `bodyTimeout` of the previous one.
/// - While the relay answers (a long run, an SSE stream) there is no deadline: the response side has its own
///   back-pressure, and SSE sends keep-alives.
public struct ConnectionStateMachine: Sendable {
    public enum Phase: Sendable, Hashable {
        /// No byte of the next request yet. `firstRequest`: the connection is new (header deadline applies).
        case awaitingRequest(firstRequest: Bool, since: NIODeadline)
        /// Bytes of a head arrived, the head is not complete.
        case readingHead(since: NIODeadline, bytes: Int)
        /// The head arrived; the body is coming.
        case readingBody(lastRead: NIODeadline)
        /// The request is complete; the response is not.
        case responding
    }

    /// Why a connection is closed.
    public enum Expiry: Sendable, Hashable {
        case header
        case idle
        case body
    }

    public struct Limits: Sendable, Hashable {
        public var headerTimeout: TimeAmount
        public var idleTimeout: TimeAmount
        public var bodyTimeout: TimeAmount
        /// Largest request head (request line and headers); 431 beyond.
        public var maxHeaderBytes: Int

        public init(
            headerTimeout: TimeAmount = .seconds(10),
            idleTimeout: TimeAmount = .seconds(75),
            bodyTimeout: TimeAmount = .seconds(30),
            maxHeaderBytes: Int = 32 * 1024
        ) {
            self.headerTimeout = headerTimeout
            self.idleTimeout = idleTimeout
            self.bodyTimeout = bodyTimeout
            self.maxHeaderBytes = maxHeaderBytes
        }
    }

    public let limits: Limits
    public private(set) var phase: Phase
    static let bodySlack = 64 * 1024

    /// Bytes of the next request that arrived while a response was still going (pipelining).
    private var pipelinedBytes = 0
    /// Requests the fast lane handed to NIO's pipeline whose responses have not ended: while any is owed, later
    /// requests must queue behind it (responses go out in request order), so the lane answers nothing itself.
    public private(set) var responsesOwed = 0
    /// A response head (not 1xx) has gone out and its end has not: a protocol error then cannot be answered (the
    /// bytes would interleave), only closed.
    public private(set) var isResponding = false
    /// A verdict is out (408, 413-style refusals, 431, 414, an idle close): everything after it is dropped.
    public private(set) var isClosing = false

    public init(limits: Limits, now: NIODeadline) {
        self.limits = limits
        self.phase = .awaitingRequest(firstRequest: true, since: now)
    }

    /// Whether the bytes that arrive now belong to a request head.
    public var isAwaitingHead: Bool {
        switch phase {
        case .awaitingRequest, .readingHead: true
        case .readingBody, .responding: false
        }
    }

    /// When the connection expires, and why; nil while responding.
    public var deadline: (NIODeadline, Expiry)? {
        switch phase {
        case .awaitingRequest(true, let since):
            return (since + limits.headerTimeout, .header)
        case .awaitingRequest(false, let since):
            return (since + limits.idleTimeout, .idle)
        case .readingHead(let since, _):
            return (since + limits.headerTimeout, .header)
        case .readingBody(let lastRead):
            return (lastRead + limits.bodyTimeout, .body)
        case .responding:
            return nil
        }
    }

    /// Whether the connection has expired at `now`.
    public func expired(at now: NIODeadline) -> Expiry? {
        guard let (deadline, reason) = deadline, now >= deadline else { return nil }
        return reason
    }

    /// Raw bytes arrived. Returns false when the head being read has grown past `maxHeaderBytes` (431).
    public mutating func bytesArrived(_ count: Int, now: NIODeadline) -> Bool {
        switch phase {
        case .awaitingRequest(let first, let since):
            // The first request's header deadline runs from the connection's start, not from its first byte.
            phase = .readingHead(since: first ? since : now, bytes: count)
        case .readingHead(let since, let bytes):
            phase = .readingHead(since: since, bytes: bytes + count)
        case .readingBody:
            phase = .readingBody(lastRead: now)
        case .responding:
            pipelinedBytes += count
            return true
        }
        if case .readingHead(_, let bytes) = phase {
            // The read that completes a head may carry body bytes too: allow some slack here; the exact limit is
            // checked when the decoder reports the head (`headReceived`).
            return bytes <= limits.maxHeaderBytes + Self.bodySlack
        }
        return true
    }

    /// The decoder delivered a request head of `headBytes` (request line and headers). Returns false when it is too
    /// large (431).
    public mutating func headReceived(headBytes: Int, now: NIODeadline) -> Bool {
        phase = .readingBody(lastRead: now)
        pipelinedBytes = 0
        return headBytes <= limits.maxHeaderBytes
    }

    public mutating func requestEnded() {
        phase = .responding
    }

    /// The fast lane handed a request to NIO's pipeline.
    public mutating func requestForwarded() {
        responsesOwed += 1
        requestsForwarded += 1
    }

    /// Requests handed to NIO's pipeline so far (statistics, tests).
    public private(set) var requestsForwarded = 0

    /// Whether the fast lane may answer the next request itself.
    public var owesNoResponse: Bool { responsesOwed == 0 }

    /// NIO's pipeline began a final response.
    public mutating func responseStarted() {
        isResponding = true
    }

    /// The connection's verdict is out: drop whatever follows. True only the first time.
    public mutating func close() -> Bool {
        guard !isClosing else { return false }
        isClosing = true
        return true
    }

    /// The response ended (`forwarded`: one of NIO's pipeline, which the fast lane handed on): wait for the next
    /// request (keep-alive). Bytes that came meanwhile start its head.
    public mutating func responseEnded(now: NIODeadline, forwarded: Bool = false) {
        if forwarded {
            responsesOwed = max(0, responsesOwed - 1)
            isResponding = false
        }
        guard case .responding = phase else { return }
        if pipelinedBytes > 0 {
            phase = .readingHead(since: now, bytes: pipelinedBytes)
            pipelinedBytes = 0
        } else {
            phase = .awaitingRequest(firstRequest: false, since: now)
        }
    }
}
