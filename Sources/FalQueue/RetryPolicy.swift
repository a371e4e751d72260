/// When and how long to wait before repeating a call to a fal queue (an origin, another relay, fal itself):
/// exponential backoff with full jitter.
///
/// Pure value logic (no clock, no randomness of its own): the caller passes the jitter draw, so tests pin it.
/// The one rule that protects money and GPUs: a call that may create work (a queue submit) is repeated only when
/// the origin certainly did not start it — the connection never carried the request, or the origin answered with a
/// status that means "not accepted" (429, 502, 503, 504). Reads and cancels are repeated on any transient failure.
public struct RetryPolicy: Sendable, Hashable {
    /// Delay ceiling of the first retry; each further retry doubles it.
    public var baseDelay: Duration
    /// Upper bound of the exponential ceiling.
    public var maxDelay: Duration
    /// Calls in all, the first one included (1 = never retry).
    public var maxAttempts: Int
    /// Statuses that mean "try again later": the origin answered without taking the work on.
    public var retryableStatuses: Set<Int>
    /// Upper bound of a `Retry-After` the origin asks for.
    public var maxRetryAfter: Duration

    public init(
        baseDelay: Duration = .milliseconds(250),
        maxDelay: Duration = .seconds(10),
        maxAttempts: Int = 6,
        retryableStatuses: Set<Int> = [429, 502, 503, 504],
        maxRetryAfter: Duration = .seconds(30)
    ) {
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxAttempts = max(1, maxAttempts)
        self.retryableStatuses = retryableStatuses
        self.maxRetryAfter = maxRetryAfter
    }

    /// Whether repeating a call can start work twice.
    public enum Replay: Sendable, Hashable {
        /// Status, result, cancel, media: repeating changes nothing at the origin.
        case safe
        /// A queue submit: repeat only when the origin certainly did not take it.
        case onlyIfNotAccepted
    }

    /// Where a transport failure happened, as far as the client can tell.
    public enum TransportPhase: Sendable, Hashable {
        /// Before the request could leave: refused, unreachable, connect or TLS-handshake timeout.
        case connect
        /// After the request may have been written: reset, closed, read timeout, deadline.
        case exchange
        /// Will fail the same way again (bad URL, certificate rejected): never retried.
        case permanent
    }

    /// What went wrong with one attempt.
    public enum Failure: Sendable, Hashable {
        /// The origin answered with this status. `retryAfter` is the parsed `Retry-After`; `userTimeout` is set when
        /// the response carries `X-Fal-Request-Timeout-Type` (the caller's own start deadline ran out: final).
        case status(Int, retryAfter: Duration? = nil, userTimeout: Bool = false)
        case transport(TransportPhase)
    }

    /// What to do after a failed attempt.
    public enum Decision: Sendable, Hashable {
        case retry(after: Duration)
        case giveUp
    }

    /// The decision after attempt number `attempt` (1-based) failed. `jitter` is a uniform draw from `0...1`.
    public func decision(after failure: Failure, attempt: Int, replay: Replay, jitter: Double) -> Decision {
        guard attempt < maxAttempts, isRetryable(failure, replay: replay) else { return .giveUp }
        if case .status(_, let retryAfter?, _) = failure {
            return .retry(after: min(max(retryAfter, .zero), maxRetryAfter))
        }
        return .retry(after: backoff(attempt: attempt, jitter: jitter))
    }

    /// Same, drawing the jitter from `generator`.
    public func decision(
        after failure: Failure,
        attempt: Int,
        replay: Replay,
        using generator: inout some RandomNumberGenerator
    ) -> Decision {
        decision(after: failure, attempt: attempt, replay: replay, jitter: Double.random(in: 0...1, using: &generator))
    }

    /// Whether the failure may be retried at all (ignoring the attempt count).
    public func isRetryable(_ failure: Failure, replay: Replay) -> Bool {
        switch failure {
        case .status(let status, _, let userTimeout):
            // A 504 that says the caller's own start deadline expired would only expire again.
            return retryableStatuses.contains(status) && !(status == 504 && userTimeout)
        case .transport(.connect):
            return true
        case .transport(.exchange):
            return replay == .safe
        case .transport(.permanent):
            return false
        }
    }

    /// Full jitter: uniform in `0...min(maxDelay, baseDelay·2^(attempt−1))`, `jitter` in `0...1` picking the point.
    public func backoff(attempt: Int, jitter: Double) -> Duration {
        let doublings = min(max(attempt - 1, 0), 62)
        let ceiling = min(Self.seconds(maxDelay), Self.seconds(baseDelay) * Double(Int64(1) << doublings))
        let draw = jitter.isFinite ? min(max(jitter, 0), 1) : 0
        return .nanoseconds(Int64((ceiling * draw * 1e9).rounded()))
    }

    /// `Retry-After` as delay-seconds (RFC 9110 §10.2.3). HTTP-dates are not honoured (nil: use the backoff).
    public static func retryAfter(_ value: String?) -> Duration? {
        guard let value else { return nil }
        let trimmed = value.trimmingWhitespace()
        guard !trimmed.isEmpty, trimmed.utf8.count <= 10, let seconds = Int(trimmed), seconds >= 0 else { return nil }
        return .seconds(seconds)
    }

    static func seconds(_ duration: Duration) -> Double {
        let parts = duration.components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> Substring {
        var text = self[...]
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}
