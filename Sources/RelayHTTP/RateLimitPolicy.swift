/// What each caller may do, and why: the policy protects what costs money (upstream work) and the relay itself, and
/// never throttles what a caller is entitled to read.
///
/// | budget | counted per | charged for | default |
/// | --- | --- | --- | --- |
/// | `submit` | caller (key, or address when anonymous) | a submission that starts upstream work | 20 / 100 / 500 / 2000 a minute by tier, burst a quarter of that |
/// | `served` | caller | every submission, also those answered by the cache or by coalescing | 200 a second, burst 2000 |
/// | `request` | request × caller | status, result and cancel of one request | 20 a second, burst 100 |
/// | `watchers` | caller | open SSE status streams and WebSockets, at once | 200 / 2,000 / 10,000 / 50,000 by tier |
/// | `in progress` | caller | upstream jobs it started that have not ended; more wait `IN_QUEUE`, never refused | 2 / 10 / 40 / 200 by tier |
/// | `read` | caller | tokens, storage tokens, admin, and reads of request ids that do not exist | 20 a second, burst 100 |
/// | (none) | | media files and upload aliases: immutable, content-addressed, one `sendfile` each | bounded by the connection caps |
/// | `media` | client address | bytes of media sent, when `media_bytes_per_second` is set | off |
///
/// **Why.** A submission that starts work costs GPU time upstream: only those draw from the tier's quota. A
/// submission answered by a hit or by attaching to work in flight costs nothing upstream, so a viral prompt (1,000
/// identical submissions on one key at once) must not be refused: those draw from `served`, which only keeps one
/// caller from flooding the relay. fal's clients poll the status of each request they wait on ten times a second
/// (the Python client, PROTOCOL.md §5.1): a backend with 1,000 requests in flight on one key polls 10,000 times a
/// second, so reads of one's own requests are counted per request, and a key's polling grows with the work it has in
/// flight. Reads of ids that do not exist fall back to the caller's `read` budget, so guessing ids is not free.
/// Media URLs are capabilities for immutable bytes, served as a CDN serves them. Concurrent watchers (SSE status
/// streams) are capped per caller by tier (`watchers`), not by a request rate: 1,500 browsers watching one job
/// through one key is the relay's headline use. Like fal's per-account concurrency, a caller's upstream jobs in
/// progress are capped by tier (`inProgress`): a job beyond the cap is accepted and waits `IN_QUEUE` with its place
/// until one of the caller's jobs ends, so one caller's backlog of a thousand jobs does not stand in front of every
/// other caller's work, and nobody is refused for it.
///
/// **How it is counted.** Each budget is a token bucket (`TokenBucket`): it holds `burst` tokens, refills at
/// `quota / window` tokens a second, and each request takes one, so short bursts pass without allowing more than the
/// quota over time. Admin keys are never limited.
///
/// **What a throttled client sees.** `429` with `{"detail": "Rate limit exceeded: …", "error_type": "rate_limited"}`
/// and `Retry-After`. fal's clients treat a 429 as temporary: Python retries it up to ten times with backoff over
/// about 50 s (§9.2), JS three times. Every limited response also carries the IETF `RateLimit-Policy` and `RateLimit`
/// headers (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "submit";q=100;w=60` is the quota (q requests
/// per w seconds), and `RateLimit: "submit";r=24;t=1` the requests left now (r) and the seconds until the budget is
/// full again (t).
public struct RateLimitPolicy: Sendable, Hashable {
    /// Which budget a request draws from.
    public enum Budget: String, Sendable, Hashable, CaseIterable {
        /// Submissions that start upstream work (charged when the job table decides to start it), and uploads
        /// (initiate, v3 upload: each costs disk and bandwidth like a job's media).
        case submissions = "submit"
        /// Every submission (submit, run, stream, and each one sent over `/ws` or realtime), whatever answers it.
        case served
        /// Reads of one request: its status, result and cancel, per request and caller.
        case requestReads = "request"
        /// Everything else a caller reads: tokens, storage tokens, admin, unknown request ids.
        case reads = "read"
        /// Bytes of media files sent, per client address (`mediaBytesPerSecond`; off unless configured).
        case media

        /// The policy name in the `RateLimit-Policy` and `RateLimit` headers.
        public var policyName: String { rawValue }

        /// The budget admission charges for a route before its responder runs; nil for routes that are never
        /// limited (probes, metrics, errors, media). A submission's `submissions` charge comes later, only if it
        /// starts work.
        public init?(route: Route) {
            switch route {
            case .submit, .run, .stream:
                self = .served
            case .uploadInitiate, .v3Upload, .multipartUpload(.initiate):
                self = .submissions
            case .multipartUpload:
                // v3 creation is charged as a v3 upload by its responder; parts and completion are the rest of an
                // upload already paid for.
                return nil
            case .status, .result, .cancel:
                self = .requestReads
            case .statusStream, .webSocket, .realtime:
                // Open streams and sockets are capped per caller (`watchers`), not by a rate: 2,000 browsers watching
                // one job through one key open 2,000 of them at once.
                return nil
            case .tokens, .admin, .storageToken, .platform:
                self = .reads
            case .uploadPut:
                // Charged once, at `uploadInitiate`, which signed its URL: the PUT is the second half of that upload.
                return nil
            case .file, .uploadAlias, .peerFollow, .proxy:
                return nil
            case .health, .ready, .metrics, .notFound, .methodNotAllowed, .ui, .catalog, .jwks, .stats:
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
            let noun: String
            switch budget {
            case .submissions: noun = "submissions that start upstream work"
            case .served: noun = "submissions"
            case .requestReads: noun = "reads of one request"
            case .reads: noun = "reads"
            case .media: noun = "bytes of media"
            }
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
    /// Every submission, per caller; the same for every tier except admin.
    public var served: Limit
    /// Reads of one request, per request and caller.
    public var requestReads: Limit
    /// Other reads, per caller.
    public var reads: Limit
    /// Concurrent watchers (SSE status streams) per caller, by tier: anonymous (per address), signed-in, pro,
    /// enterprise. Admin keys are not capped.
    public var watchers: [Tier: Int]
    /// Upstream jobs in progress per caller, by tier; jobs beyond wait in line (`InProgressGate`). Admin keys are not
    /// capped.
    public var inProgress: [Tier: Int]
    /// Bytes of media per second per client address, with a burst of ten seconds' worth; nil (the default): media
    /// is not limited, only bounded by the connection caps.
    public var mediaBytesPerSecond: Int?

    public init(
        anonymousPerMinute: Int = 20,
        signedInPerMinute: Int = 100,
        proPerMinute: Int = 500,
        enterprisePerMinute: Int = 2000,
        served: Limit = Limit(quota: 200, windowSeconds: 1, burst: 2000),
        requestReads: Limit = Limit(quota: 20, windowSeconds: 1, burst: 100),
        reads: Limit = Limit(quota: 20, windowSeconds: 1, burst: 100),
        watchers: [Tier: Int] = [.anonymous: 200, .signedIn: 2_000, .pro: 10_000, .enterprise: 50_000],
        inProgress: [Tier: Int] = [.anonymous: 2, .signedIn: 10, .pro: 40, .enterprise: 200]
    ) {
        self.anonymousPerMinute = anonymousPerMinute
        self.signedInPerMinute = signedInPerMinute
        self.proPerMinute = proPerMinute
        self.enterprisePerMinute = enterprisePerMinute
        self.served = served
        self.requestReads = requestReads
        self.reads = reads
        self.watchers = watchers
        self.inProgress = inProgress
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
        case .served: return served
        case .requestReads: return requestReads
        case .reads: return reads
        case .media: return mediaBytesPerSecond.map { Limit(quota: $0, windowSeconds: 1, burst: $0 * 10) }
        }
    }

    /// How many watchers `tier` may hold open at once; nil means uncapped (admin).
    public func maxWatchers(for tier: Tier) -> Int? {
        tier == .admin ? nil : watchers[tier] ?? watchers[.signedIn] ?? 2_000
    }

    /// How many upstream jobs `tier` may have in progress at once; nil means uncapped (admin).
    public func maxInProgress(for tier: Tier) -> Int? {
        tier == .admin ? nil : inProgress[tier] ?? inProgress[.signedIn] ?? 10
    }
}
