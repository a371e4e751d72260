public import RelayCore
public import RelayJobs
import Synchronization

/// Per-caller rate limiting: one `TokenBucket` per (API key, or client IP when anonymous) × budget, shared by all
/// connections. The figures come from a `RateLimitPolicy`.
///
/// **Memory.** Buckets live in one dictionary of at most `maxEntries` entries. A bucket that is full says nothing a
/// brand-new bucket would not (it admits the same requests from then on), so forgetting it changes no decision.
/// When a new caller arrives and the table is at `maxEntries`, one sweep drops every bucket that is full by now.
/// Normally that frees nearly everything: a bucket refills within `burst / rate` seconds of its caller's last
/// request (15 s for anonymous submissions, 5 s for reads). Only under a flood of distinct callers all
/// mid-burst (more than `maxEntries` of them active within those seconds) would the sweep free less than a
/// quarter of the table; then it also forgets the *fullest* of the remaining buckets until the table is at
/// three quarters. Those callers lose little (they were close to full) and the most-drained buckets — the
/// callers actually being throttled — are kept the longest. Each sweep frees at least a quarter of the table,
/// so its O(n) cost is paid at most once per `maxEntries / 4` new callers. At the default 100 000 entries
/// the table is about 10–15 MB at its largest.
///
/// **Concurrency.** One `Mutex` around the table; a check is a dictionary lookup and a little arithmetic.
/// Time comes from an injected clock, read before the lock is taken; out-of-order instants are harmless
/// (`TokenBucket.take(now:cost:)`).
public final class RateLimiter: Sendable {
    /// A monotonic reading: time since an arbitrary origin.
    public typealias Clock = @Sendable () -> Duration

    public let policy: RateLimitPolicy
    /// The most buckets held at once.
    public let maxEntries: Int
    private let clock: Clock
    private let table: Mutex<Table>
    /// Open watchers per caller (`acquireWatcher`).
    private let watching = Mutex<[Subject: Int]>([:])
    /// Live nodes of the fleet this relay belongs to (1 for a single node): each node holds this share of every
    /// budget, so a load balancer that spreads a caller over the fleet meets the caller's tier, not N times it.
    private let fleetNodes = Atomic<Int>(1)

    /// Sets the number of live nodes whose share of each budget this node enforces.
    public func setFleetShare(nodes: Int) {
        fleetNodes.store(max(1, nodes), ordering: .relaxed)
    }

    /// A budget's limit as this node enforces it: its share of the fleet's.
    private func share(_ limit: RateLimitPolicy.Limit) -> RateLimitPolicy.Limit {
        let nodes = fleetNodes.load(ordering: .relaxed)
        guard nodes > 1 else { return limit }
        return RateLimitPolicy.Limit(
            quota: (limit.quota + nodes - 1) / nodes,
            windowSeconds: limit.windowSeconds,
            burst: (limit.burst + nodes - 1) / nodes
        )
    }

    /// `maxEntries` below 16 is raised to 16.
    public init(
        policy: RateLimitPolicy = .standard,
        maxEntries: Int = 100_000,
        clock: @escaping Clock = RateLimiter.monotonic()
    ) {
        self.policy = policy
        self.maxEntries = max(16, maxEntries)
        self.clock = clock
        self.table = Mutex(Table(maxEntries: self.maxEntries))
    }

    /// `ContinuousClock` time since the moment this is called.
    public static func monotonic() -> Clock {
        let origin = ContinuousClock.now
        return { ContinuousClock.now - origin }
    }

    /// Charges `cost` requests to the caller's `budget` at the clock's current time.
    public func check(
        principal: Principal,
        clientIP: String,
        budget: RateLimitPolicy.Budget,
        requestID: String? = nil,
        cost: Int = 1
    ) -> RateLimitDecision {
        check(principal: principal, clientIP: clientIP, budget: budget, requestID: requestID, cost: cost, now: clock())
    }

    /// Charges `cost` requests to the caller's `budget` at `now`: keyed callers by key id, anonymous ones by
    /// `clientIP`; reads of one request (`requestReads`) by that request and caller. Admin is never limited and
    /// never stored.
    public func check(
        principal: Principal,
        clientIP: String,
        budget: RateLimitPolicy.Budget,
        requestID: String? = nil,
        cost: Int = 1,
        now: Duration
    ) -> RateLimitDecision {
        let tier = RateLimitPolicy.Tier(principal)
        guard let limit = policy.limit(for: tier, budget: budget).map(share) else {
            return RateLimitDecision(
                tier: tier,
                budget: budget,
                limit: nil,
                outcome: .allowed,
                remaining: 0,
                resetSeconds: 0
            )
        }
        var subject = Self.subject(principal, clientIP: clientIP)
        if budget == .requestReads, let requestID {
            subject = .request(requestID, caller: principal.keyID ?? clientIP)
        }
        let (decision, reset) = table.withLock { table in
            table.take(BucketKey(subject: subject, budget: budget), limit: limit, cost: cost, now: now)
        }
        switch decision {
        case .allowed(let remaining):
            return RateLimitDecision(
                tier: tier,
                budget: budget,
                limit: limit,
                outcome: .allowed,
                remaining: remaining,
                resetSeconds: reset
            )
        case .denied(let retryAfter):
            return RateLimitDecision(
                tier: tier,
                budget: budget,
                limit: limit,
                outcome: .denied(retryAfterSeconds: retryAfter),
                remaining: 0,
                resetSeconds: retryAfter
            )
        }
    }

    /// Buckets held now.
    public var count: Int {
        table.withLock { $0.buckets.count }
    }

    /// Drops every bucket that is full at `now`; returns how many. Optional: the table also prunes itself when
    /// it fills up, but a periodic sweep (next to the job table's) returns the memory sooner.
    @discardableResult
    public func prune(now: Duration) -> Int {
        table.withLock { $0.dropFull(now: now) }
    }

    /// Takes a watcher place for the caller (an SSE status stream), or nil when the caller's tier has all its places
    /// taken. The place is given back when the lease is released or goes away.
    public func acquireWatcher(principal: Principal, clientIP: String) -> WatcherLease? {
        guard let cap = policy.maxWatchers(for: RateLimitPolicy.Tier(principal)) else {
            return WatcherLease(release: nil)
        }
        let subject = Self.subject(principal, clientIP: clientIP)
        let taken = watching.withLock { watching -> Bool in
            let open = watching[subject, default: 0]
            guard open < cap else { return false }
            watching[subject] = open + 1
            return true
        }
        guard taken else { return nil }
        return WatcherLease { [self] in
            watching.withLock { watching in
                let left = watching[subject, default: 1] - 1
                watching[subject] = left > 0 ? left : nil
            }
        }
    }

    /// The cap on `principal`'s upstream jobs in progress, as this node enforces it (its share of the fleet's, at
    /// least 1); nil when its tier is not capped.
    public func inProgressCap(principal: Principal, clientIP: String) -> InProgressCap? {
        guard let limit = policy.maxInProgress(for: RateLimitPolicy.Tier(principal)) else { return nil }
        let nodes = fleetNodes.load(ordering: .relaxed)
        let owner = principal.keyID.map { "key:\($0)" } ?? "address:\(clientIP)"
        return InProgressCap(owner: owner, limit: (limit + nodes - 1) / nodes)
    }

    /// Charges `bytes` of media to `clientIP`'s `media` budget (this node's share of it); nil when media is not
    /// limited. A body larger than the bucket takes the whole bucket, so that it is still served once it is full.
    public func chargeMediaBytes(_ bytes: Int, clientIP: String) -> RateLimitDecision? {
        guard let limit = policy.limit(for: .anonymous, budget: .media).map(share) else { return nil }
        return check(principal: .anonymous, clientIP: clientIP, budget: .media, cost: min(bytes, limit.burst))
    }

    /// Whether `principal` may open one more watcher now (nothing is taken).
    public func hasWatcherPlace(principal: Principal, clientIP: String) -> Bool {
        guard let cap = policy.maxWatchers(for: RateLimitPolicy.Tier(principal)) else { return true }
        return watchers(principal: principal, clientIP: clientIP) < cap
    }

    /// Watchers open now for `principal` (tests, statistics).
    public func watchers(principal: Principal, clientIP: String) -> Int {
        watching.withLock { $0[Self.subject(principal, clientIP: clientIP), default: 0] }
    }

    private static func subject(_ principal: Principal, clientIP: String) -> Subject {
        principal.keyID.map(Subject.key) ?? .address(clientIP)
    }

    /// Whose bucket: an API key's, an anonymous IP address's, or one request's as read by one caller.
    enum Subject: Hashable {
        case key(String)
        case address(String)
        case request(String, caller: String)
    }

    struct BucketKey: Hashable {
        let subject: Subject
        let budget: RateLimitPolicy.Budget
    }

    /// The buckets and the pruning rule; everything here runs under the mutex.
    struct Table {
        let maxEntries: Int
        var buckets: [BucketKey: TokenBucket] = [:]

        init(maxEntries: Int) {
            self.maxEntries = maxEntries
        }

        /// The bucket's answer and the seconds until it is full again.
        mutating func take(
            _ key: BucketKey,
            limit: RateLimitPolicy.Limit,
            cost: Int,
            now: Duration
        ) -> (TokenBucket.Decision, Int) {
            let capacity = Double(limit.burst)
            let rate = limit.refillPerSecond
            var bucket: TokenBucket
            if let existing = buckets[key] {
                bucket = existing
                if bucket.capacity != capacity || bucket.refillPerSecond != rate {
                    // The key's tier changed (key file edited by hand): keep what it has spent, under the new figures.
                    bucket = TokenBucket(
                        capacity: capacity,
                        refillPerSecond: rate,
                        tokens: bucket.available(at: now),
                        now: now
                    )
                }
            } else {
                if buckets.count >= maxEntries {
                    makeRoom(now: now)
                }
                bucket = TokenBucket(capacity: capacity, refillPerSecond: rate, now: now)
            }
            let decision = bucket.take(now: now, cost: cost)
            buckets[key] = bucket
            return (decision, bucket.secondsUntilFull(at: now))
        }

        @discardableResult
        mutating func dropFull(now: Duration) -> Int {
            let before = buckets.count
            buckets = buckets.filter { !$0.value.isFull(at: now) }
            return before - buckets.count
        }

        /// Frees at least a quarter of the table: full buckets first, then the fullest of the rest.
        mutating func makeRoom(now: Duration) {
            dropFull(now: now)
            let target = maxEntries * 3 / 4
            guard buckets.count > target else { return }
            let fullestFirst = buckets.map {
                (key: $0.key, fill: $0.value.available(at: now) / max(1, $0.value.capacity))
            }
            .sorted { $0.fill > $1.fill }
            for victim in fullestFirst.prefix(buckets.count - target) {
                buckets.removeValue(forKey: victim.key)
            }
        }
    }
}

/// The outcome of one `RateLimiter.check`, with what to put in the response.
public struct RateLimitDecision: Sendable, Hashable {
    /// Served, or refused for this many seconds.
    public enum Outcome: Sendable, Hashable {
        case allowed
        case denied(retryAfterSeconds: Int)
    }

    public let tier: RateLimitPolicy.Tier
    public let budget: RateLimitPolicy.Budget
    /// Nil when the caller is not limited (admin): then no headers are sent.
    public let limit: RateLimitPolicy.Limit?
    public let outcome: Outcome
    /// Requests left now (the `r` of `RateLimit`); 0, and meaningless, when `limit` is nil.
    public let remaining: Int
    /// Seconds until the budget is full again, or until a request is admitted when denied (the `t` of `RateLimit`).
    public let resetSeconds: Int

    public var isAllowed: Bool { outcome == .allowed }

    public var retryAfterSeconds: Int? {
        if case .denied(let seconds) = outcome { return seconds }
        return nil
    }

    /// `ratelimit-policy`, `ratelimit` and, when denied, `retry-after` (lowercase, as the handler writes headers).
    ///
    /// Current draft-ietf-httpapi-ratelimit-headers form: `"submit";q=100;w=60` and `"submit";r=97;t=12`.
    public var headers: [(String, String)] {
        guard let limit else { return [] }
        let name = budget.policyName
        var headers = [
            ("ratelimit-policy", "\"\(name)\";q=\(limit.quota);w=\(limit.windowSeconds)"),
            ("ratelimit", "\"\(name)\";r=\(remaining);t=\(resetSeconds)"),
        ]
        if let retryAfterSeconds {
            headers.append(("retry-after", String(retryAfterSeconds)))
        }
        return headers
    }

    /// What to answer instead of serving the request; nil when it is allowed.
    public var rejection: RateLimitRejection? {
        guard let limit, let retryAfterSeconds else { return nil }
        return RateLimitRejection(
            detail:
                "Rate limit exceeded: \(limit.describe(budget)) for \(budget == .media ? "each address" : "\(tier.rawValue) callers"), retry in \(retryAfterSeconds) s",
            headers: headers
        )
    }
}

/// A fal-shaped 429 (PROTOCOL.md §3.5), as plain values until `FalError` has a member for it.
public struct RateLimitRejection: Sendable, Hashable {
    public let status = 429
    public let errorType = "rate_limited"
    public let detail: String
    /// `ratelimit-policy`, `ratelimit`, `retry-after`; the handler adds `x-fal-error-type` as for any error.
    public let headerFields: [HeaderField]

    /// A header as a hashable pair.
    public struct HeaderField: Sendable, Hashable {
        public let name: String
        public let value: String
    }

    init(detail: String, headers: [(String, String)]) {
        self.detail = detail
        self.headerFields = headers.map { HeaderField(name: $0.0, value: $0.1) }
    }

    public var headers: [(String, String)] { headerFields.map { ($0.name, $0.value) } }

    /// `{"detail": "Rate limit exceeded: …", "error_type": "rate_limited"}`.
    public var body: JSONValue {
        .object(["detail": .string(detail), "error_type": .string(errorType)])
    }
}

/// A watcher's place, held while its stream is open. `release` is idempotent; a lease that goes away unreleased (an
/// answer never carried out) gives its place back too.
public final class WatcherLease: Sendable {
    private let releaser: Mutex<(@Sendable () -> Void)?>

    init(release: (@Sendable () -> Void)?) {
        releaser = Mutex(release)
    }

    public func release() {
        let release = releaser.withLock { releaser in
            defer { releaser = nil }
            return releaser
        }
        release?()
    }

    deinit {
        release()
    }
}
