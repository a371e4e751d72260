import CoreMetrics
public import RelayCore
import Synchronization

/// The relay's live counters, kept twice over on purpose: as swift-metrics instruments for `/metrics`
/// (Prometheus) and as atomics that `snapshot()` reads for the dashboard and `/admin/stats` — Prometheus
/// instruments cannot be read back. Every `record…` method updates both, so the two never disagree.
public final class RelayStatistics: Sendable {
    /// Connection kinds counted as open connections.
    public enum ConnectionKind: String, Sendable, CaseIterable {
        case http1
        case http2
        case webSocket = "websocket"
        /// An HTTP/1.1 connection that became a bare SSE status stream (its HTTP handlers left the pipeline).
        case sseStream = "sse"
    }

    /// Live subscriber kinds.
    public enum WatcherKind: String, Sendable, CaseIterable {
        case sse
        case webSocket = "websocket"
    }

    private let startedAt = ContinuousClock.now
    private let httpRequests = Atomic<Int>(0)
    private let submissions: [CacheOutcome: AtomicCount]
    private let upstreamJobs = Atomic<Int>(0)
    private let upstreamErrors = Atomic<Int>(0)
    private let jobsInFlight = Atomic<Int>(0)
    /// Estimated GPU time not spent, in milliseconds: cache hits and coalesced waiters, each valued at the
    /// inference time of the job that served them.
    private let savedMilliseconds = Atomic<Int>(0)
    private let connections: [ConnectionKind: AtomicCount]
    private let connectionsAccepted = Atomic<Int>(0)
    private let connectionsRefused = Atomic<Int>(0)
    private let watchers: [WatcherKind: AtomicCount]
    private let storeHits = AtomicCount()
    private let storeMisses = AtomicCount()

    private struct Instruments: Sendable {
        let submissions: [CacheOutcome: Counter]
        let upstreamJobs = Counter(label: "relay_upstream_jobs_started_total")
        let upstreamErrors = Counter(label: "relay_upstream_errors_total")
        let jobsInFlight = Meter(label: "relay_jobs_in_flight")
        let jobsAvoided = Counter(label: "relay_dedup_upstream_jobs_avoided_total")
        let savedSeconds = FloatingPointCounter(label: "relay_dedup_gpu_seconds_saved_total")
        let connections: [ConnectionKind: Meter]
        let connectionsAccepted = Counter(label: "relay_connections_accepted_total")
        let connectionsRefused = Counter(label: "relay_connections_refused_total")
        let watchers: [WatcherKind: Meter]
        let storeBytes = Gauge(label: "relay_store_bytes")
        let storeHits = Counter(label: "relay_store_reads_total", dimensions: [("outcome", "hit")])
        let storeMisses = Counter(label: "relay_store_reads_total", dimensions: [("outcome", "miss")])
        let storeEvictions = Counter(label: "relay_store_evictions_total")
        let queueDepth = Gauge(label: "relay_queue_depth")
    }

    private let instruments: Instruments
    /// Bytes the media store holds (set by the application; 0 when unknown).
    private let storeBytesProvider = Mutex<(@Sendable () -> Int)?>(nil)
    /// Figures owned elsewhere, read when `/metrics` is scraped: (store evictions so far, jobs waiting for a slot).
    private let scrapeProviders = Mutex<(evictions: @Sendable () -> Int, queueDepth: @Sendable () -> Int)?>(nil)
    private let evictionsReported = Atomic<Int>(0)

    public init() {
        var submissions: [CacheOutcome: AtomicCount] = [:]
        var submissionCounters: [CacheOutcome: Counter] = [:]
        for outcome in CacheOutcome.allCases {
            submissions[outcome] = AtomicCount()
            submissionCounters[outcome] = Counter(
                label: "relay_requests_total",
                dimensions: [("cache", outcome.rawValue)]
            )
        }
        var connections: [ConnectionKind: AtomicCount] = [:]
        var connectionMeters: [ConnectionKind: Meter] = [:]
        for kind in ConnectionKind.allCases {
            connections[kind] = AtomicCount()
            connectionMeters[kind] = Meter(label: "relay_connections_open", dimensions: [("protocol", kind.rawValue)])
        }
        var watchers: [WatcherKind: AtomicCount] = [:]
        var watcherMeters: [WatcherKind: Meter] = [:]
        for kind in WatcherKind.allCases {
            watchers[kind] = AtomicCount()
            watcherMeters[kind] = Meter(label: "relay_watchers", dimensions: [("transport", kind.rawValue)])
        }
        self.submissions = submissions
        self.connections = connections
        self.watchers = watchers
        instruments = Instruments(
            submissions: submissionCounters,
            connections: connectionMeters,
            watchers: watcherMeters
        )
    }

    // MARK: - Recording

    /// Any HTTP request answered (the dashboard's requests per second).
    public func recordHTTPRequest() {
        httpRequests.wrappingAdd(1, ordering: .relaxed)
    }

    public func recordSubmission(_ outcome: CacheOutcome) {
        submissions[outcome]?.add(1)
        instruments.submissions[outcome]?.increment()
        if outcome == .hit || outcome == .coalesced {
            instruments.jobsAvoided.increment()
        }
    }

    public func recordUpstreamJobStarted() {
        upstreamJobs.wrappingAdd(1, ordering: .relaxed)
        jobsInFlight.wrappingAdd(1, ordering: .relaxed)
        instruments.upstreamJobs.increment()
        instruments.jobsInFlight.increment()
    }

    /// A job ended; `failed` counts it as an upstream error (not for cancellations).
    public func recordUpstreamJobEnded(failed: Bool) {
        jobsInFlight.wrappingSubtract(1, ordering: .relaxed)
        instruments.jobsInFlight.decrement()
        if failed {
            upstreamErrors.wrappingAdd(1, ordering: .relaxed)
            instruments.upstreamErrors.increment()
        }
    }

    /// GPU time a hit or a coalesced waiter did not spend.
    /// Money per model (`relay_spend_total`, `relay_saved_total` by `model`): what generations cost upstream, and what
    /// hits and coalesced requests would have cost.
    private let money = Mutex<[String: (spent: FloatingPointCounter, saved: FloatingPointCounter)]>([:])

    public func recordMoney(model: String, spent: Double = 0, saved: Double = 0) {
        guard spent > 0 || saved > 0 else { return }
        let counters = money.withLock { money in
            if let found = money[model] { return found }
            let made = (
                spent: FloatingPointCounter(label: "relay_spend_total", dimensions: [("model", model)]),
                saved: FloatingPointCounter(label: "relay_saved_total", dimensions: [("model", model)])
            )
            money[model] = made
            return made
        }
        if spent > 0 { counters.spent.increment(by: spent) }
        if saved > 0 { counters.saved.increment(by: saved) }
    }

    public func recordSaved(inferenceSeconds: Double) {
        guard inferenceSeconds.isFinite, inferenceSeconds > 0 else { return }
        savedMilliseconds.wrappingAdd(Int(inferenceSeconds * 1000), ordering: .relaxed)
        instruments.savedSeconds.increment(by: inferenceSeconds)
    }

    public func connectionOpened(_ kind: ConnectionKind) {
        connections[kind]?.add(1)
        instruments.connections[kind]?.increment()
        if kind != .webSocket {
            connectionsAccepted.wrappingAdd(1, ordering: .relaxed)
            instruments.connectionsAccepted.increment()
        }
    }

    public func connectionClosed(_ kind: ConnectionKind) {
        connections[kind]?.add(-1)
        instruments.connections[kind]?.decrement()
    }

    /// A connection refused at accept (per-IP or total cap).
    public func connectionRefused() {
        connectionsRefused.wrappingAdd(1, ordering: .relaxed)
        instruments.connectionsRefused.increment()
    }

    /// Watchers started (positive) or ended (negative).
    public func adjustWatchers(_ kind: WatcherKind, by delta: Int) {
        guard delta != 0 else { return }
        watchers[kind]?.add(delta)
        if delta > 0 {
            instruments.watchers[kind]?.increment(by: Double(delta))
        } else {
            instruments.watchers[kind]?.decrement(by: Double(-delta))
        }
    }

    public func setStoreBytesProvider(_ provider: @escaping @Sendable () -> Int) {
        storeBytesProvider.withLock { $0 = provider }
    }

    /// A media file asked for: found in the store, or not.
    public func recordStoreRead(hit: Bool) {
        (hit ? storeHits : storeMisses).add(1)
        (hit ? instruments.storeHits : instruments.storeMisses).increment()
    }

    public func setScrapeProviders(evictions: @escaping @Sendable () -> Int, queueDepth: @escaping @Sendable () -> Int)
    {
        scrapeProviders.withLock { $0 = (evictions, queueDepth) }
    }

    /// Jobs waiting for an upstream slot now (the synthetic queue; 0 before its provider is set).
    public var queueDepth: Int {
        scrapeProviders.withLock { $0 }?.queueDepth() ?? 0
    }

    /// Brings the gauges and counters of figures owned elsewhere up to date; call right before `/metrics` is emitted.
    public func refreshForScrape() {
        instruments.storeBytes.record(storeBytesProvider.withLock { $0 }?() ?? 0)
        guard let providers = scrapeProviders.withLock({ $0 }) else { return }
        instruments.queueDepth.record(providers.queueDepth())
        let evictions = providers.evictions()
        let reported = evictionsReported.exchange(evictions, ordering: .relaxed)
        if evictions > reported {
            instruments.storeEvictions.increment(by: evictions - reported)
        }
    }

    // MARK: - Reading

    public func submissions(_ outcome: CacheOutcome) -> Int { submissions[outcome]?.value ?? 0 }
    public func connections(_ kind: ConnectionKind) -> Int { connections[kind]?.value ?? 0 }
    public func watchers(_ kind: WatcherKind) -> Int { watchers[kind]?.value ?? 0 }
    public var upstreamJobsStarted: Int { upstreamJobs.load(ordering: .relaxed) }
    public var jobsInFlightCount: Int { jobsInFlight.load(ordering: .relaxed) }

    /// Everything the dashboard and `/admin/stats` show, as one JSON object. Counters are totals since start;
    /// the dashboard turns them into rates.
    public func snapshot() -> JSONValue {
        var requests: JSONObject = [:]
        var total = 0
        for outcome in CacheOutcome.allCases {
            let count = submissions(outcome)
            total += count
            requests[outcome.rawValue] = .number(Double(count))
        }
        requests["total"] = .number(Double(total))
        var open: JSONObject = [:]
        for kind in ConnectionKind.allCases {
            open[kind.rawValue] = .number(Double(connections(kind)))
        }
        var watching: JSONObject = [:]
        for kind in WatcherKind.allCases {
            watching[kind.rawValue] = .number(Double(watchers(kind)))
        }
        let avoided = submissions(.hit) + submissions(.coalesced)
        let storeBytes = storeBytesProvider.withLock { $0 }?() ?? 0
        return .object([
            "uptime_seconds": .number(Double((ContinuousClock.now - startedAt).components.seconds)),
            "http_requests": .number(Double(httpRequests.load(ordering: .relaxed))),
            "submissions": .object(requests),
            "upstream": .object([
                "jobs_started": .number(Double(upstreamJobsStarted)),
                "jobs_in_flight": .number(Double(jobsInFlightCount)),
                "errors": .number(Double(upstreamErrors.load(ordering: .relaxed))),
            ]),
            "dedup": .object([
                "upstream_jobs_avoided": .number(Double(avoided)),
                "gpu_seconds_saved": .number(Double(savedMilliseconds.load(ordering: .relaxed)) / 1000),
            ]),
            "store": .object([
                "bytes": .number(Double(storeBytes)),
                "reads_hit": .number(Double(storeHits.value)),
                "reads_miss": .number(Double(storeMisses.value)),
            ]),
            "queue_depth": .number(Double(scrapeProviders.withLock { $0 }?.queueDepth() ?? 0)),
            "connections": .object([
                "open": .object(open),
                "accepted": .number(Double(connectionsAccepted.load(ordering: .relaxed))),
                "refused": .number(Double(connectionsRefused.load(ordering: .relaxed))),
            ]),
            "watchers": .object(watching),
        ])
    }
}

/// An atomic integer that can live in a dictionary (`Atomic` itself cannot be copied).
final class AtomicCount: Sendable {
    private let count = Atomic<Int>(0)

    func add(_ delta: Int) {
        count.wrappingAdd(delta, ordering: .relaxed)
    }

    var value: Int { count.load(ordering: .relaxed) }
}
