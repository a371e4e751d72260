public import CoreMetrics
public import RelayCore
public import RelayStore
import Synchronization

/// How a submission was served, as `x-relay-cache` says it.
public enum CacheOutcome: String, Sendable, Hashable, CaseIterable {
    case hit
    case coalesced
    case miss
    case bypass
}

/// What the client asked of the cache (`Cache-Control` request directives).
public struct CacheDirectives: Sendable, Hashable {
    /// Generate anew: neither the result cache nor a generation in flight is used.
    public var noCache: Bool
    /// Keep nothing of this request's generation.
    public var noStore: Bool

    public init(noCache: Bool = false, noStore: Bool = false) {
        self.noCache = noCache
        self.noStore = noStore
    }
}

/// One client submission: its own id, attached to a (possibly shared) job.
public struct RelayRequest: Sendable {
    public let id: String
    public let endpoint: EndpointID
    public let job: Job
    /// The API key id that submitted it (nil = anonymous); only that key sees it.
    public let ownerKeyID: String?
    public let createdAt: Timestamp
    public let cacheOutcome: CacheOutcome
    /// The RFC 9211 `Cache-Status` value for this request's responses.
    public let cacheStatus: String
    public internal(set) var cancelled: Bool

    /// The request's own view: a cancelled request is over even while its shared job runs on for others.
    public var phase: JobPhase {
        cancelled ? .completed(.cancelled) : job.status.phase
    }
}

/// What a cancel achieved (PROTOCOL.md §3.4).
public enum CancelOutcome: Sendable, Hashable {
    case cancellationRequested
    case alreadyCompleted
    case notFound
}

/// Every live request and in-flight job: the result cache, coalescing of identical work, lookup and cancellation.
///
/// Lock order is always table → job → result index (never the reverse): a finished job stays in `inFlight` until
/// the next submission of its key replaces it or `sweep` removes it, so a job never calls back into the table.
public final class JobTable: Sendable {
    public typealias UpstreamResolver = @Sendable (ModelSpec) -> any Upstream

    /// Result-cache settings.
    public struct CachePolicy: Sendable {
        /// Freshness of a cached result when its model gives none.
        public var resultTTLSeconds: Double
        /// Freshness of a cached 422 (deterministic validation failure from upstream).
        public var negativeTTLSeconds: Double

        public init(resultTTLSeconds: Double = 86_400, negativeTTLSeconds: Double = 60) {
            self.resultTTLSeconds = resultTTLSeconds
            self.negativeTTLSeconds = negativeTTLSeconds
        }
    }

    private struct State: Sendable {
        var requests: [String: RelayRequest] = [:]
        var inFlight: [RequestKey: Job] = [:]
    }

    private let state = Mutex(State())
    private let resolveUpstream: UpstreamResolver
    /// Counters for `/metrics`, the dashboard and `/admin/stats`.
    public let statistics: RelayStatistics
    public let results: ResultIndex
    public let cachePolicy: CachePolicy
    /// How long a finished request stays addressable (status, result) after it was created.
    public let retentionSeconds: Double

    public init(
        retentionSeconds: Double = 3600,
        results: ResultIndex = ResultIndex(),
        cachePolicy: CachePolicy = CachePolicy(),
        statistics: RelayStatistics = RelayStatistics(),
        upstream: @escaping UpstreamResolver
    ) {
        self.statistics = statistics
        self.retentionSeconds = retentionSeconds
        self.results = results
        self.cachePolicy = cachePolicy
        self.resolveUpstream = upstream
    }

    /// Whether a finished result of `input` may be served to later requests: never under `dedup: never`, and under
    /// `seeded` only when the client named a seed (without one it asked for a fresh random result).
    public static func isCacheable(_ input: ModelInput) -> Bool {
        switch input.model.dedup {
        case .always: true
        case .seeded: input.explicitSeed != nil
        case .never: false
        }
    }

    /// Creates a request for `input`: served from the result cache when it may be, attached to identical work in
    /// flight, or started upstream as a new job.
    public func submit(
        _ input: ModelInput,
        endpoint: EndpointID,
        key: RequestKey,
        ownerKeyID: String?,
        directives: CacheDirectives = CacheDirectives()
    ) -> RelayRequest {
        let cacheable = Self.isCacheable(input)
        let coalesce = !directives.noCache && input.model.dedup != .never
        let keyParameter = "key=\"\(key.digest.hex)\""

        if !directives.noCache, let cached = results.lookup(key, modelID: input.model.id, canonicalInput: input.canonicalBytes),
            cacheable || isRejection(cached)
        {
            let job = Job(input: input, key: key)
            switch cached.outcome {
            case .success(let result, let seconds):
                job.receive(.succeeded(result: result, inferenceSeconds: seconds))
                statistics.recordSaved(inferenceSeconds: seconds ?? 0)
            case .rejected(let error):
                job.receive(.failed(error))
            }
            let status = "MediaRelay; hit; ttl=\(cached.ttl(at: .now())); \(keyParameter)"
            return record(Self.makeRequest(endpoint: endpoint, job: job, owner: ownerKeyID, outcome: .hit, cacheStatus: status))
        }

        let (request, newJob) = state.withLock { state -> (RelayRequest, Job?) in
            if coalesce, let job = state.inFlight[key], job.attach() {
                let status = "MediaRelay; fwd=miss; collapsed; \(keyParameter)"
                let request = Self.makeRequest(endpoint: endpoint, job: job, owner: ownerKeyID, outcome: .coalesced, cacheStatus: status)
                state.requests[request.id] = request
                return (request, nil)
            }
            let job = Job(input: input, key: key)
            _ = job.attach()
            if coalesce {
                state.inFlight[key] = job
            }
            let stored = cacheable && !directives.noStore ? "; stored" : ""
            let status = directives.noCache ? "MediaRelay; fwd=request\(stored); \(keyParameter)" : "MediaRelay; fwd=miss\(stored); \(keyParameter)"
            let outcome: CacheOutcome = directives.noCache ? .bypass : .miss
            let request = Self.makeRequest(endpoint: endpoint, job: job, owner: ownerKeyID, outcome: outcome, cacheStatus: status)
            state.requests[request.id] = request
            return (request, job)
        }
        statistics.recordSubmission(request.cacheOutcome)
        if let newJob {
            start(newJob, storeResult: cacheable && !directives.noStore, storeRejection: !directives.noStore)
        }
        return request
    }

    /// The request with this id, if it exists and `keyID` may see it.
    public func request(_ id: String, keyID: String?) -> RelayRequest? {
        state.withLock { state in
            guard let request = state.requests[id], request.ownerKeyID == nil || request.ownerKeyID == keyID else {
                return nil
            }
            return request
        }
    }

    /// Detaches the request from its job; the job itself stops only when no request waits on it any more.
    /// `app`, when given, must be the app the request was submitted to (`owner/alias`).
    public func cancel(_ id: String, keyID: String?, app: String? = nil) -> CancelOutcome {
        let (outcome, job) = state.withLock { state -> (CancelOutcome, Job?) in
            guard var request = state.requests[id], request.ownerKeyID == nil || request.ownerKeyID == keyID,
                app == nil || request.endpoint.app == app
            else {
                return (.notFound, nil)
            }
            if request.cancelled || request.job.isTerminal {
                return (.alreadyCompleted, nil)
            }
            request.cancelled = true
            state.requests[id] = request
            return (.cancellationRequested, request.job)
        }
        job?.detach()
        return outcome
    }

    /// Forgets finished requests older than the retention time and expired cache entries. Returns how many
    /// requests were removed.
    @discardableResult
    public func sweep(now: Timestamp = .now()) -> Int {
        results.sweep(now: now)
        return state.withLock { state in
            let cutoff = now.secondsSinceEpoch - retentionSeconds
            let expired = state.requests.values.filter { request in
                request.createdAt.secondsSinceEpoch < cutoff && (request.cancelled || request.job.isTerminal)
            }
            for request in expired {
                state.requests[request.id] = nil
            }
            state.inFlight = state.inFlight.filter { !$0.value.isTerminal }
            return expired.count
        }
    }

    /// Requests and jobs currently tracked (for metrics and tests).
    public var counts: (requests: Int, jobsInFlight: Int) {
        state.withLock { state in (state.requests.count, state.inFlight.values.count { !$0.isTerminal }) }
    }

    private func record(_ request: RelayRequest) -> RelayRequest {
        state.withLock { $0.requests[request.id] = request }
        statistics.recordSubmission(request.cacheOutcome)
        return request
    }

    private func isRejection(_ cached: CachedResult) -> Bool {
        if case .rejected = cached.outcome { return true }
        return false
    }

    /// Starts the upstream and, when the job ends, stores what may be reused. The callback runs under the job's
    /// lock and takes only the result index's.
    private func start(_ job: Job, storeResult: Bool, storeRejection: Bool) {
        statistics.recordUpstreamJobStarted()
        let results = self.results
        let policy = cachePolicy
        let statistics = self.statistics
        _ = job.subscribe(after: 0) { event in
            guard case .completed(let outcome) = event.kind else { return }
            switch outcome {
            case .success(_, let seconds):
                statistics.recordUpstreamJobEnded(failed: false)
                // Every waiter beyond the first was served without a generation of its own.
                let sharedWith = job.requestsEverAttached - 1
                if sharedWith > 0 {
                    statistics.recordSaved(inferenceSeconds: (seconds ?? 0) * Double(sharedWith))
                }
            case .failure:
                statistics.recordUpstreamJobEnded(failed: true)
            case .cancelled:
                statistics.recordUpstreamJobEnded(failed: false)
            }
            let now = Timestamp.now()
            let input = job.input
            switch outcome {
            case .success(let result, let seconds) where storeResult:
                let ttl = input.model.cacheTTLSeconds ?? policy.resultTTLSeconds
                results.store(job.key, CachedResult(
                    modelID: input.model.id, canonicalInput: input.canonicalBytes,
                    outcome: .success(result: result, inferenceSeconds: seconds),
                    storedAt: now, expiresAt: Timestamp(secondsSinceEpoch: now.secondsSinceEpoch + ttl)
                ))
            case .failure(let error) where storeRejection && error.status == 422:
                results.store(job.key, CachedResult(
                    modelID: input.model.id, canonicalInput: input.canonicalBytes, outcome: .rejected(error),
                    storedAt: now, expiresAt: Timestamp(secondsSinceEpoch: now.secondsSinceEpoch + policy.negativeTTLSeconds)
                ))
            default:
                break
            }
        }
        job.setTask(resolveUpstream(job.model).start(job))
    }

    private static func makeRequest(endpoint: EndpointID, job: Job, owner: String?, outcome: CacheOutcome, cacheStatus: String) -> RelayRequest {
        RelayRequest(
            id: RequestID.make(),
            endpoint: endpoint,
            job: job,
            ownerKeyID: owner,
            createdAt: .now(),
            cacheOutcome: outcome,
            cacheStatus: cacheStatus,
            cancelled: false
        )
    }
}
