public import Logging
public import RelayCore
public import RelayJobs
public import RelayStore
import Synchronization

/// Who a request comes from.
public enum Principal: Sendable, Hashable {
    case anonymous
    case key(id: String, tier: String)

    public var keyID: String? {
        if case .key(let id, _) = self { return id }
        return nil
    }

    /// Keys of the `admin` tier may use `/admin/…`.
    public var isAdmin: Bool {
        if case .key(_, "admin") = self { return true }
        return false
    }
}

/// Checks an `Authorization` header (`Key …` or `Bearer …`). Returns nil for a key that is unknown or revoked.
public protocol Authenticator: Sendable {
    func authenticate(authorization: String?) -> Principal?
    /// A short-lived token for clients that cannot set headers (browsers' WebSockets, fal realtime): fal's
    /// `POST /tokens/` (PROTOCOL.md §6). nil when the principal may not have one (anonymous).
    func issueToken(for principal: Principal, apps: [String], seconds: Int) -> String?
    /// The principal a token stands for, if it is genuine, unexpired and allows `app` (the endpoint's alias).
    func authenticate(token: String, app: String?) -> Principal?
    /// A value that changes whenever a key may have been created, revoked or changed: what `authenticate` answered for
    /// a header still holds while it is the same. nil makes no such promise (every request authenticates anew).
    func keyTableVersion() -> UInt64?
    /// The key's spending caps (none by default).
    func budget(for keyID: String) -> SpendBudget
}

extension Authenticator {
    public func keyTableVersion() -> UInt64? { nil }
    public func budget(for keyID: String) -> SpendBudget { SpendBudget() }
}

/// Per-request limits enforced by the HTTP layer.
public struct HTTPLimits: Sendable {
    /// Largest JSON body accepted (413 beyond).
    public var maxJSONBodyBytes: Int
    /// Interval of SSE comment keep-alives.
    public var sseKeepAliveSeconds: Int64
    /// Header, keep-alive idle and body deadlines, and the largest request head (431 beyond).
    public var connection: ConnectionStateMachine.Limits
    /// Longest request target (414 beyond).
    public var maxURLBytes: Int
    /// Open connections allowed in total and per client address (503 beyond).
    public var maxConnections: Int
    public var maxConnectionsPerAddress: Int

    public init(
        maxJSONBodyBytes: Int = 10 * 1024 * 1024,
        sseKeepAliveSeconds: Int64 = 15,
        connection: ConnectionStateMachine.Limits = ConnectionStateMachine.Limits(),
        maxURLBytes: Int = 8 * 1024,
        maxConnections: Int = 16_000,
        maxConnectionsPerAddress: Int = 1_024
    ) {
        self.maxJSONBodyBytes = maxJSONBodyBytes
        self.sseKeepAliveSeconds = sseKeepAliveSeconds
        self.connection = connection
        self.maxURLBytes = maxURLBytes
        self.maxConnections = maxConnections
        self.maxConnectionsPerAddress = maxConnectionsPerAddress
    }
}

/// Whether the relay is ready to serve (`/readyz`): set once start-up is complete, cleared when draining.
public final class Readiness: Sendable {
    private let ready = Atomic<Bool>(false)

    public init() {}

    public var isReady: Bool { ready.load(ordering: .acquiring) }

    public func set(_ value: Bool) {
        ready.store(value, ordering: .releasing)
    }
}

/// Everything a connection handler needs, shared by all connections.
public struct RelayServices: Sendable {
    public let catalog: ModelCatalog
    public let jobs: JobTable
    public let store: BlobStore
    /// Media bytes for `/files`: sendfile on plain HTTP, chunked reads under TLS.
    public let media: MediaFileSource
    /// Told about every media file served (the store's LRU keeps what is read).
    public let mediaServed: @Sendable (Digest128) -> Void
    public let hasher: KeyedHasher
    public let authenticator: any Authenticator
    public let router: Router
    public let limits: HTTPLimits
    public let readiness: Readiness
    public let logger: Logger
    /// Whether RequestKeys are shared by all callers (`global`) or separate per API key (`per-key`).
    public let perKeyScope: Bool
    /// Prometheus text for `/metrics`.
    public let metricsText: (@Sendable () -> [UInt8])?
    /// Per-tier token buckets; nil switches rate limiting off.
    public let rateLimiter: RateLimiter?
    /// The browser UI's files (`/`, `/dashboard`, `/ui/…`); nil serves 404 there.
    public let site: StaticSite?
    /// Admin operations that reach beyond the HTTP layer (purge, drain).
    public let admin: AdminOperations
    /// One line per request (nil: access log off).
    public let accessLogger: Logger?
    public let httpMetrics: HTTPMetrics
    /// Delivers `fal_webhook` callbacks.
    public let webhooks: any WebhookSink
    /// fal's storage API (uploads); nil answers 404 there.
    public let uploads: UploadService?
    /// The fleet this node belongs to (cluster mode); nil for a single node.
    public let fleet: (any FleetAccess)?
    /// fal's server-proxy mode (`/api/fal/proxy`); nil answers 404 there.
    public let serverProxy: ServerProxy?
    /// `public_url` as configured, split: clients that reach the relay by this address get URLs with its scheme.
    let publicAddress: (scheme: String, authority: String, host: HostPattern)?
    /// What each key spent and holds for generations running, checked against its budget when a submission would
    /// start upstream work; nil: spend is not tracked.
    let spend: SpendLedger?
    /// When these services were made (the Platform API's `updated_at` of the catalog's models).
    let startedAt = Timestamp.now()

    public init(
        catalog: ModelCatalog,
        jobs: JobTable,
        store: BlobStore,
        media: MediaFileSource,
        mediaServed: @escaping @Sendable (Digest128) -> Void = { _ in },
        hasher: KeyedHasher,
        authenticator: any Authenticator,
        router: Router,
        limits: HTTPLimits,
        readiness: Readiness,
        logger: Logger,
        perKeyScope: Bool = false,
        metricsText: (@Sendable () -> [UInt8])? = nil,
        rateLimiter: RateLimiter? = nil,
        site: StaticSite? = nil,
        admin: AdminOperations = AdminOperations(),
        webhooks: any WebhookSink = WebhooksDisabled(),
        accessLogger: Logger? = nil,
        httpMetrics: HTTPMetrics = HTTPMetrics(),
        uploads: UploadService? = nil,
        fleet: (any FleetAccess)? = nil,
        publicURL: String? = nil,
        serverProxy: ServerProxy? = nil,
        spend: SpendLedger? = nil
    ) {
        self.spend = spend
        self.fleet = fleet
        self.serverProxy = serverProxy
        self.publicAddress = publicURL.flatMap { url in
            let parts = url.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
            guard parts.count >= 3, parts[0].hasSuffix(":"), parts[1].isEmpty, let host = HostPattern(String(parts[2]))
            else { return nil }
            return (String(parts[0].dropLast()).lowercased(), parts[2].lowercased(), host)
        }
        self.uploads = uploads
        self.webhooks = webhooks
        self.accessLogger = accessLogger
        self.httpMetrics = httpMetrics
        self.site = site
        self.admin = admin
        self.catalog = catalog
        self.jobs = jobs
        self.store = store
        self.media = media
        self.mediaServed = mediaServed
        self.hasher = hasher
        self.authenticator = authenticator
        self.router = router
        self.limits = limits
        self.readiness = readiness
        self.logger = logger
        self.perKeyScope = perKeyScope
        self.metricsText = metricsText
        self.rateLimiter = rateLimiter
    }

    /// The RequestKey of an input for this caller, under the configured scope.
    public func requestKey(_ input: ModelInput, principal: Principal) -> RequestKey {
        RequestKey(input: input, scope: perKeyScope ? (principal.keyID ?? "anonymous") : "", hasher: hasher)
    }
}
