/// Everything a run needs: what to send, how many connections, for how long.
public struct LoadConfiguration: Sendable {
    public var plan: RequestPlan
    public var connections: Int
    /// Event loops of the load generator (each owns a share of the connections).
    public var threads: Int
    public var durationSeconds: Double
    public var warmupSeconds: Double
    /// A request without its response after this long is a `timeout` error and its connection is closed.
    public var timeoutSeconds: Double
    /// Open a new connection (TCP, and TLS if the URL is https) for every request.
    public var newConnectionPerRequest: Bool
    /// PEM file of the CA to trust for https; nil = the system's roots.
    public var caFile: String?
    /// Skip certificate verification (never for benchmarks of verification cost).
    public var insecure: Bool
    /// Lowercased header whose values are counted (x-relay-cache).
    public var watchedHeader: String?
    /// Print a progress line on stderr once a second.
    public var progress: Bool
    /// Seed of the request randomness (ranges, Zipf draws); worker i uses seed + i.
    public var seed: UInt64

    public init(
        plan: RequestPlan,
        connections: Int = 64,
        threads: Int = 1,
        durationSeconds: Double = 10,
        warmupSeconds: Double = 2,
        timeoutSeconds: Double = 10,
        newConnectionPerRequest: Bool = false,
        caFile: String? = nil,
        insecure: Bool = false,
        watchedHeader: String? = nil,
        progress: Bool = true,
        seed: UInt64 = 1
    ) {
        self.plan = plan
        self.connections = connections
        self.threads = threads
        self.durationSeconds = durationSeconds
        self.warmupSeconds = warmupSeconds
        self.timeoutSeconds = timeoutSeconds
        self.newConnectionPerRequest = newConnectionPerRequest
        self.caFile = caFile
        self.insecure = insecure
        self.watchedHeader = watchedHeader
        self.progress = progress
        self.seed = seed
    }
}
