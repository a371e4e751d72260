import FalQueue

/// When to try a webhook delivery again: exponential backoff with full jitter, a bounded number of attempts.
///
/// Pure value logic: the caller passes the jitter draw (uniform in `0...1`), so tests pin it. A webhook POST may be
/// repeated freely (receivers deduplicate by `X-Relay-Webhook-Id`), so every transient failure is retried: transport
/// errors, timeouts, 408, 429 (after its `Retry-After`) and 5xx. Any other answer is final: 2xx delivered, other
/// 4xx refused by the receiver.
public struct WebhookRetrySchedule: Sendable, Hashable {
    /// Ceiling of the first retry's delay; each further retry doubles it.
    public var baseDelay: Duration
    /// Upper bound of the exponential ceiling.
    public var maxDelay: Duration
    /// Attempts in all, the first one included.
    public var maxAttempts: Int
    /// Upper bound of a `Retry-After` the receiver asks for.
    public var maxRetryAfter: Duration

    /// Defaults: fal's budget ("10 times in the span of 2 hours"): 10 attempts, retry ceilings 25 s doubling to 35
    /// min (at most 2 h 03 min of waiting, about an hour on average).
    public init(
        baseDelay: Duration = .seconds(25),
        maxDelay: Duration = .seconds(35 * 60),
        maxAttempts: Int = 10,
        maxRetryAfter: Duration = .seconds(35 * 60)
    ) {
        self.baseDelay = max(baseDelay, .zero)
        self.maxDelay = max(maxDelay, .zero)
        self.maxAttempts = max(1, maxAttempts)
        self.maxRetryAfter = max(maxRetryAfter, .zero)
    }

    /// How one attempt ended.
    public enum Outcome: Sendable, Hashable {
        /// The receiver answered. `retryAfter` is the parsed `Retry-After`, if any.
        case status(Int, retryAfter: Duration? = nil)
        /// No answer: refused, reset, DNS failure, or the per-delivery timeout.
        case transport
    }

    public enum Decision: Sendable, Hashable {
        case delivered
        case retry(after: Duration)
        /// Final failure: refused by the receiver, or out of attempts.
        case giveUp
    }

    /// What to do after attempt number `attempt` (1-based) ended with `outcome`.
    public func decision(after outcome: Outcome, attempt: Int, jitter: Double) -> Decision {
        switch outcome {
        case .status(let status, _) where (200..<300).contains(status):
            return .delivered
        case .status(let status, _) where !Self.isRetryable(status):
            return .giveUp
        default:
            break
        }
        guard attempt < maxAttempts else { return .giveUp }
        if case .status(429, let retryAfter?) = outcome {
            return .retry(after: min(retryAfter, maxRetryAfter))
        }
        if case .status(503, let retryAfter?) = outcome {
            return .retry(after: min(retryAfter, maxRetryAfter))
        }
        return .retry(after: backoff(attempt: attempt, jitter: jitter))
    }

    /// Statuses worth another try: the receiver was overloaded, timed out or broke, not "no".
    public static func isRetryable(_ status: Int) -> Bool {
        status == 408 || status == 429 || (500..<600).contains(status)
    }

    /// Full jitter: uniform in `0...min(maxDelay, baseDelay·2^(attempt−1))`; `jitter` in `0...1` picks the point.
    public func backoff(attempt: Int, jitter: Double) -> Duration {
        RetryPolicy(baseDelay: baseDelay, maxDelay: maxDelay).backoff(attempt: attempt, jitter: jitter)
    }

    /// The longest a delivery can take in waiting between attempts (Retry-After aside).
    public var maxTotalDelay: Duration {
        (1..<maxAttempts).reduce(Duration.zero) { $0 + backoff(attempt: $1, jitter: 1) }
    }
}
