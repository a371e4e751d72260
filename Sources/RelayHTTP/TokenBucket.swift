/// A token bucket: holds up to `capacity` tokens, refills continuously at `refillPerSecond`, and admits a request
/// when it can pay for it.
///
/// A pure value: time is passed in as a `Duration` since an arbitrary origin (a monotonic clock's reading), never
/// read here, so tests drive it instant by instant. Refill is lazy — computed from the time elapsed at each call —
/// so an idle bucket costs nothing. A denied request takes nothing: clients that retry 429s at once (fal's Python
/// client retries up to ten times, PROTOCOL.md §9.2) do not push their own recovery further away.
public struct TokenBucket: Sendable, Hashable {
    /// The answer to one request.
    public enum Decision: Sendable, Hashable {
        /// Admitted; `remaining` whole tokens are left afterwards.
        case allowed(remaining: Int)
        /// Refused; enough tokens will be there in `retryAfter` seconds (rounded up, at least 1).
        case denied(retryAfter: Int)
    }

    /// Most tokens the bucket holds: the burst a client may spend at once.
    public let capacity: Double
    /// Tokens added per second: the sustained rate.
    public let refillPerSecond: Double
    /// Tokens held at `lastRefill`.
    public private(set) var tokens: Double
    /// The instant `tokens` was last brought up to date.
    public private(set) var lastRefill: Duration

    /// Refill is floating point: `1/60 × 60` may land a hair under 1. Within this margin a token counts as there.
    static let tolerance = 1e-9
    /// Cap on a computed wait (about 68 years), so a zero rate cannot overflow `Int`.
    static let longestWait = Double(Int32.max)

    /// A bucket holding `tokens` (default: full) at `now`. Negative or non-finite figures are taken as zero.
    public init(capacity: Double, refillPerSecond: Double, tokens: Double? = nil, now: Duration) {
        self.capacity = capacity.isFinite ? max(0, capacity) : 0
        self.refillPerSecond = refillPerSecond.isFinite ? max(0, refillPerSecond) : 0
        let initial = tokens ?? self.capacity
        self.tokens = initial.isFinite ? min(max(0, initial), self.capacity) : 0
        self.lastRefill = now
    }

    /// Takes `cost` tokens if the bucket holds them at `now`.
    ///
    /// A `now` earlier than the last call (two threads read the clock, then the later one took the lock first)
    /// adds nothing and leaves `lastRefill` where it is, so out-of-order instants can never mint tokens.
    /// A `cost` above `capacity` can never be paid; it is denied with the wait until the bucket is full.
    public mutating func take(now: Duration, cost: Int = 1) -> Decision {
        refill(now: now)
        let price = Double(max(0, cost))
        if price <= capacity, tokens + Self.tolerance >= price {
            tokens = max(0, tokens - price)
            return .allowed(remaining: Self.whole(tokens))
        }
        let wanted = min(price, capacity)
        return .denied(retryAfter: max(1, wait(for: wanted - tokens)))
    }

    /// Brings `tokens` up to date with `now`.
    public mutating func refill(now: Duration) {
        guard now > lastRefill else { return }
        tokens = min(capacity, tokens + Self.seconds(now - lastRefill) * refillPerSecond)
        lastRefill = now
    }

    /// Tokens the bucket would hold at `now`, without changing it.
    public func available(at now: Duration) -> Double {
        var copy = self
        copy.refill(now: now)
        return copy.tokens
    }

    /// Whether the bucket is full at `now`: then it says nothing a brand-new bucket would not, and can be forgotten.
    public func isFull(at now: Duration) -> Bool {
        available(at: now) + Self.tolerance >= capacity
    }

    /// Whole seconds until the bucket is full again (0 when it is): the `t` of a `RateLimit` header.
    public func secondsUntilFull(at now: Duration) -> Int {
        let missing = capacity - available(at: now)
        return missing <= Self.tolerance ? 0 : wait(for: missing)
    }

    /// Whole seconds, rounded up, for `missing` tokens to flow in.
    private func wait(for missing: Double) -> Int {
        guard missing > Self.tolerance else { return 0 }
        guard refillPerSecond > 0 else { return Int(Self.longestWait) }
        // The tolerance keeps 0.6/0.6 = 1.0000000000000002 from rounding up to 2.
        return Int(min(Self.longestWait, (missing / refillPerSecond - Self.tolerance).rounded(.up)))
    }

    static func whole(_ tokens: Double) -> Int {
        Int((tokens + tolerance).rounded(.down))
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        // Dividing by 1e18 (exact in a Double) rounds once; multiplying by 1e-18 (inexact) would round twice.
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
