public import FalQueue

extension FalOriginUpstream {
    /// Where the origin is, how to reach it, and how patient to be with it.
    public struct Configuration: Sendable {
        /// The queue API's base URL, e.g. `https://queue.fal.run` or `https://127.0.0.1:9443` (another relay).
        public var baseURL: String
        /// Sent as `Authorization: Key …` to the origin (never to media hosts elsewhere). nil = no header.
        public var apiKey: String?
        /// A PEM file of extra CA certificates to trust for the origin (a private relay tier).
        public var additionalCAPath: String?
        /// Absolute origin of the relay's media URLs, e.g. `https://127.0.0.1:8443` (read per job: known only
        /// after binding).
        public var publicBaseURL: @Sendable () -> String

        /// TCP (and TLS) connect timeout.
        public var connectTimeout: Duration = .seconds(5)
        /// One submit, status, result or cancel exchange, up to its response head.
        public var requestTimeout: Duration = .seconds(30)
        /// The longest silence on an open connection (read idle timeout); a status stream sends a keep-alive at
        /// least every 15 s, so a quiet stream past this is dropped and polling takes over.
        public var idleTimeout: Duration = .seconds(45)
        /// One media download, up to its response head.
        public var mediaTimeout: Duration = .seconds(120)
        /// Everything for one job, submit to stored media: past it the job fails and the origin is told to cancel.
        public var jobDeadline: Duration = .seconds(600)
        /// Pause between status polls.
        public var statusPollInterval: Duration = .milliseconds(250)
        /// Follow progress on `{status_url}/stream` first (falls back to polling when it is unavailable or drops).
        public var useStatusStream: Bool = true
        /// Largest media file pulled into the blob store.
        public var maxMediaBytes: Int = 512 << 20
        /// Largest JSON body (submit, status, result) read from the origin.
        public var maxJSONBytes: Int = 64 << 20
        /// Media files downloaded at once for one result.
        public var mediaConcurrency: Int = 4
        public var retry: RetryPolicy = RetryPolicy()
        public var breaker: OriginCircuitBreaker.Configuration = OriginCircuitBreaker.Configuration()
        /// The clock the circuit breaker's cool-down runs on (a test moves its own instead of waiting).
        public var now: @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
        /// `User-Agent` of every call.
        public var userAgent: String = "MediaRelay (fal-origin)"
        /// The account's name in an origin pool (several keys may share one URL); nil for a single origin.
        public var accountName: String?

        /// What a job's handle records as its origin: the URL, and the account in a pool (`url#name`), so that after
        /// a restart only the account that accepted a job follows it.
        public var handleOrigin: String { accountName.map { "\(baseURL)#\($0)" } ?? baseURL }

        public init(
            baseURL: String,
            apiKey: String?,
            additionalCAPath: String? = nil,
            publicBaseURL: @escaping @Sendable () -> String
        ) {
            self.baseURL = FalOriginConfiguration.normalised(baseURL)
            self.apiKey = apiKey
            self.additionalCAPath = additionalCAPath
            self.publicBaseURL = publicBaseURL
        }
    }
}

/// How base URLs are compared.
enum FalOriginConfiguration {
    /// The base URL without trailing slashes.
    static func normalised(_ url: String) -> String {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }
}

extension FalOriginUpstream {
    /// A configuration the upstream cannot start with: an origin URL that is not http(s), an unreadable CA file.
    public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
        public let description: String

        public init(_ description: String) {
            self.description = description
        }
    }
}
