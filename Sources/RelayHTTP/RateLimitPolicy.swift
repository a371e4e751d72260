/// How many requests each tier may make, in two separate budgets: submissions and reads.
///
/// **Why two budgets.** A submission (`POST` to submit, run or stream) is what costs money and GPU time upstream;
/// everything after it — status polls, status streams, results, cancels, media files — only reads what the relay
/// already holds. fal's clients read a lot: the Python client's `subscribe` polls its job's status every 0.1 s
/// (ten requests a second, PROTOCOL.md §5.1), the JS client every 0.5 s. If polls came out of the submission
/// budget, a signed-in user (100 a minute) would be throttled ten seconds into their first job, by their own
/// client, doing exactly what it should. So reads have their own, much larger budget, the same for every tier:
/// by default 20 a second sustained with a burst of 100 — two jobs polled at full speed at once, indefinitely,
/// plus room for fetching results and media. Only submissions differ by tier.
///
/// **Submissions per tier** (per minute): anonymous 20, signed-in 100, pro 500, enterprise 2000 (configurable),
/// admin unlimited. The burst is a quarter of the minute's quota, rounded up and never below 5: a signed-in key
/// can fire 25 jobs at once, then one every 0.6 s.
///
/// **How it is counted.** Each budget is a token bucket (`TokenBucket`): it holds `burst` tokens, refills at
/// `quota / window` tokens a second, and each request takes one. This gives short bursts without allowing more
/// than the quota over time, with no window edges where a client could spend two windows' worth at once.
/// Anonymous requests are counted per client IP address, keyed requests per API key (on any IP).
///
/// **What a throttled client sees.** `429` with `{"detail": "Rate limit exceeded: …", "error_type": "rate_limited"}`
/// and `Retry-After`. fal's clients treat a 429 as temporary: Python retries it up to ten times with backoff over
/// about 50 s (§9.2), JS three times — so a brief overshoot slows a client down instead of failing it. A refused
/// request costs nothing, so those retries do not push recovery further away. Every limited response also carries
/// the IETF `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers) so clients can pace
/// themselves: `RateLimit-Policy: "submit";q=100;w=60` is the quota (q requests per w seconds), and
/// `RateLimit: "submit";r=24;t=1` the requests left now (r) and the seconds until the budget is full again (t).
public struct RateLimitPolicy: Sendable, Hashable {
    /// Which budget a request draws from.
    public enum Budget: String, Sendable, Hashable, CaseIterable {
        /// `POST` submit, run and stream: each may start upstream work. Uploads (initiate, v3 upload) too: each
        /// costs disk and bandwidth like a job's media.
        case submissions = "submit"
        /// Status polls and streams, results, cancels, media files, tokens, opening a WebSocket: answered from
        /// what the relay holds. (Each request *inside* a realtime session starts work: charge it to
        /// `submissions` as it arrives.)
        case reads = "read"

        /// The policy name in the `RateLimit-Policy` and `RateLimit` headers.
        public var policyName: String { rawValue }

        /// The budget a route draws from; nil for routes that are never limited (probes, metrics, errors).
        public init?(route: Route) {
            switch route {
            case .submit, .run, .stream, .uploadInitiate, .v3Upload:
                self = .submissions
            case .status, .statusStream, .result, .cancel, .file, .tokens, .webSocket, .realtime, .admin, .storageToken,
                .uploadAlias:
                self = .reads
            case .uploadPut:
                // Charged once, at `uploadInitiate`, which signed its URL: the PUT is the second half of that upload.
                return nil
            case .health, .ready, .metrics, .notFound, .methodNotAllowed, .ui, .catalog, .stats:
                return nil
            }
        }
    }

    /// A caller's tier; keys carry theirs (`APIKeyStore.tiers`), requests without a key are anonymous.
    public enum Tier: String, Sendable, Hashable, CaseIterable {
        case anonymous
        case signedIn = "signed-in"
        case pro
        case enterprise
        case admin

        /// A key whose tier is not one we know (a hand-edited key file) gets the lowest keyed tier, not more.
        public init(_ principal: Principal) {
            switch principal {
            case .anonymous:
                self = .anonymous
            case .key(_, let tier):
                self = Tier(rawValue: tier).flatMap { $0 == .anonymous ? nil : $0 } ?? .signedIn
            }
        }
    }

    /// One budget's figures: `quota` requests per `windowSeconds`, spent at most `burst` at a time.
    public struct Limit: Sendable, Hashable {
        /// The `q` of `RateLimit-Policy`.
        public let quota: Int
        /// The `w` of `RateLimit-Policy`.
        public let windowSeconds: Int
        /// The bucket's capacity: requests a full budget admits at once.
        public let burst: Int

        /// Figures below 1 are raised to 1: a limit that admits nothing is a ban, which is not this type's job.
        public init(quota: Int, windowSeconds: Int, burst: Int) {
            self.quota = max(1, quota)
            self.windowSeconds = max(1, windowSeconds)
            self.burst = max(1, burst)
        }

        /// `perMinute` submissions a minute, with a burst of a quarter of that (rounded up), at least 5.
        public static func submissions(perMinute: Int) -> Limit {
            let quota = max(1, perMinute)
            return Limit(quota: quota, windowSeconds: 60, burst: max(5, (quota + 3) / 4))
        }

        /// The sustained rate the bucket refills at.
        public var refillPerSecond: Double { Double(quota) / Double(windowSeconds) }

        /// "100 submissions per minute": for error messages.
        func describe(_ budget: Budget) -> String {
            let noun = budget == .submissions ? "submissions" : "reads"
            switch windowSeconds {
            case 1: return "\(quota) \(noun) per second"
            case 60: return "\(quota) \(noun) per minute"
            case 3600: return "\(quota) \(noun) per hour"
            default: return "\(quota) \(noun) per \(windowSeconds) s"
            }
        }
    }

    public var anonymousPerMinute: Int
    public var signedInPerMinute: Int
    public var proPerMinute: Int
    /// Set per deployment (the "custom" in enterprise pricing).
    public var enterprisePerMinute: Int
    /// Shared by every tier except admin; see the type's documentation for why it is large.
    public var reads: Limit

    public init(
        anonymousPerMinute: Int = 20,
        signedInPerMinute: Int = 100,
        proPerMinute: Int = 500,
        enterprisePerMinute: Int = 2000,
        reads: Limit = Limit(quota: 20, windowSeconds: 1, burst: 100)
    ) {
        self.anonymousPerMinute = anonymousPerMinute
        self.signedInPerMinute = signedInPerMinute
        self.proPerMinute = proPerMinute
        self.enterprisePerMinute = enterprisePerMinute
        self.reads = reads
    }

    /// The defaults above.
    public static let standard = RateLimitPolicy()

    /// The limit on `budget` for `tier`; nil means unlimited (admin).
    public func limit(for tier: Tier, budget: Budget) -> Limit? {
        let perMinute: Int
        switch tier {
        case .admin: return nil
        case .anonymous: perMinute = anonymousPerMinute
        case .signedIn: perMinute = signedInPerMinute
        case .pro: perMinute = proPerMinute
        case .enterprise: perMinute = enterprisePerMinute
        }
        switch budget {
        case .submissions: return .submissions(perMinute: perMinute)
        case .reads: return reads
        }
    }
}
