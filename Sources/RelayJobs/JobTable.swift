public import RelayCore
public import RelayStore
import Synchronization

/// Every live request and in-flight job: the result cache, coalescing of identical work, lookup and cancellation.
///
/// Lock order is always table → job → result index (never the reverse): a finished job stays in `inFlight` until
/// the next submission of its key replaces it or `sweep` removes it, so a job never calls back into the table.
///
/// **Durability** (with a `RequestLog`): every request's creation, every job's end and every cancellation is a log
/// record, so after a crash `restore()` serves each request by id again, and requests in flight at the crash end with
/// `restartedError`. The order makes what a client saw survive: a submission is answered (the id handed out) only
/// after its creation record is fsynced (`RelayRequest.recorded`), and a job's end passes a completion gate that
/// publishes it only after its result manifest and end record are fsynced. A cache hit is answered after its records
/// and the manifest it was served from are on disk.
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

    /// A job restored in flight at its upstream, waiting for `resumeAttached()`.
    struct Resumption: Sendable {
        let job: Job
        let attachment: RequestLogRecord.Attachment
        let storeResult: Bool
    }

    struct State: Sendable {
        var requests = RequestTable()
        var inFlight: [RequestKey: Job] = [:]
        var resumptions: [Resumption] = []
    }

    let state = Mutex(State())
    let removalCount = Atomic<UInt64>(0)
    let resolveUpstream: UpstreamResolver
    /// The durable request log; nil keeps requests in memory only.
    public let log: RequestLog?
    private let latency = CommitLatency()
    /// Counters for `/metrics`, the dashboard and `/admin/stats`.
    public let statistics: RelayStatistics
    public let results: ResultIndex
    public let cachePolicy: CachePolicy
    /// How long a finished request stays addressable (status, result) after it was created.
    public let retentionSeconds: Double
    /// The bound on each job's event log (`--event-log-max-events`; see `JobStateMachine`).
    public let maxEvents: Int
    /// The fleet this node belongs to (cluster mode); nil for a single node.
    public let fleet: (any Fleet)?
    /// Told of each result whose media must be deleted at a time (`X-Fal-Object-Lifecycle-Preference`): the store's
    /// expiry deletes them then.
    let mediaDeadline: @Sendable (_ result: JSONValue, _ deadline: Timestamp) -> Void
    /// Each caller's upstream work in progress, capped (`submit`'s `inProgressCap`).
    let inProgress: InProgressGate

    public init(
        retentionSeconds: Double = 3600,
        maxEvents: Int = JobStateMachine.defaultMaxEvents,
        results: ResultIndex = ResultIndex(),
        cachePolicy: CachePolicy = CachePolicy(),
        statistics: RelayStatistics = RelayStatistics(),
        log: RequestLog? = nil,
        fleet: (any Fleet)? = nil,
        mediaDeadline: @escaping @Sendable (JSONValue, Timestamp) -> Void = { _, _ in },
        upstream: @escaping UpstreamResolver
    ) {
        self.inProgress = InProgressGate()
        self.fleet = fleet
        self.mediaDeadline = mediaDeadline
        self.log = log
        self.statistics = statistics
        self.retentionSeconds = retentionSeconds
        self.maxEvents = maxEvents
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
        guard
            let request = submit(
                input,
                endpoint: endpoint,
                key: key,
                ownerKeyID: ownerKeyID,
                directives: directives,
                mayStartWork: { true }
            )
        else { preconditionFailure("a submission that may always start work was refused") }
        return request
    }

    /// As `submit`, but new upstream work starts only if `mayStartWork` says so; nil when it says no. It is asked
    /// under the table's lock at the moment the table decides that this submission is neither a hit nor attached to
    /// work in flight, so a budget for upstream work (the caller's tier) is charged exactly for the submissions that
    /// start some, with no window in which two concurrent misses both slip through on one unit of budget.
    public func submit(
        _ input: ModelInput,
        endpoint: EndpointID,
        key: RequestKey,
        ownerKeyID: String?,
        directives: CacheDirectives = CacheDirectives(),
        registered adopted: FleetRequest? = nil,
        sharesFleetWork: Bool = false,
        webhook: String? = nil,
        platform: PlatformHeaders = PlatformHeaders(),
        inProgressCap: InProgressCap? = nil,
        mayStartWork: () -> Bool
    ) -> RelayRequest? {
        // A request the fleet's registry holds already (adopted from another node, or registered with its key's
        // lookup on this node) keeps its id and age, and is not registered again unless that is in doubt.
        let identity =
            adopted.map { ($0.id, $0.createdAt, webhook, platform.tags, platform.storeIO ? input.fields : nil) }
            ?? (RequestID.make(), Timestamp.now(), webhook, platform.tags, platform.storeIO ? input.fields : nil)
        let fleet = adopted == nil || adopted?.registrationInDoubt == true ? self.fleet : nil
        let cacheable = Self.isCacheable(input)
        let coalesce = !directives.noCache && input.model.dedup != .never
        let keyParameter = "key=\"\(key.digest.hex)\""

        // Memory only (an event loop submits): a result whose manifest is not decoded was read first (`tiersToAsk`).
        if !directives.noCache,
            case .hit(let cached) = results.probe(key, modelID: input.model.id, canonicalInput: input.canonicalBytes),
            cacheable || isRejection(cached)
        {
            let job = Job(input: input, key: key, maxEvents: maxEvents)
            let logged: RequestLogRecord.Outcome
            switch cached.outcome {
            case .success(let result, let seconds):
                job.receive(.succeeded(result: result, inferenceSeconds: seconds))
                statistics.recordSaved(inferenceSeconds: seconds ?? 0)
                let cost = input.model.price.cost(result: result, input: input.fields, inferenceSeconds: seconds)
                statistics.recordMoney(model: input.model.id, saved: cost ?? 0)
                logged = .success(result: result, inferenceSeconds: seconds)
            case .rejected(let error):
                job.receive(.failed(error))
                logged = .failure(error)
            }
            let status = "MediaRelay; hit; ttl=\(cached.ttl(at: .now())); \(keyParameter)"
            // The request's records, and the manifest it was served from (it may still be on its way to the disk).
            let commit = RecordCommit(pending: (log == nil ? 0 : 2) + (fleet == nil ? 0 : 1))
            let request = Self.makeRequest(
                identity,
                endpoint: endpoint,
                job: job,
                owner: ownerKeyID,
                outcome: .hit,
                cacheStatus: status,
                recorded: commit
            )
            if let log {
                let started = ContinuousClock.now
                commit.whenDone { [latency] in latency.record(submission: ContinuousClock.now - started) }
                log.append([
                    .created(Self.creation(request)), .finished(jobID: job.id, at: request.createdAt, outcome: logged),
                ]) { _ in
                    commit.arrive()
                }
                results.whenWritten(key) { _ in commit.arrive() }
            }
            fleet?.register(request) { commit.arrive() }
            return record(request)
        }

        let commit = RecordCommit(pending: (log == nil ? 0 : 1) + (fleet == nil ? 0 : 1))
        let decided = state.withLock { state -> (RelayRequest, Job?)? in
            if coalesce, let job = state.inFlight[key], job.attach() {
                let status = "MediaRelay; fwd=miss; collapsed; \(keyParameter)"
                let request = Self.makeRequest(
                    identity,
                    endpoint: endpoint,
                    job: job,
                    owner: ownerKeyID,
                    outcome: .coalesced,
                    cacheStatus: status,
                    recorded: commit
                )
                state.requests[request.id] = request
                return (request, nil)
            }
            guard mayStartWork() else { return nil }
            let job = Job(
                input: input,
                key: key,
                maxEvents: maxEvents,
                adoptedFrom: adopted,
                platform: platform,
                shared: coalesce
            )
            _ = job.attach()
            if coalesce {
                state.inFlight[key] = job
            }
            let stored = cacheable && !directives.noStore ? "; stored" : ""
            let status =
                directives.noCache
                ? "MediaRelay; fwd=request\(stored); \(keyParameter)"
                : sharesFleetWork
                    ? "MediaRelay; fwd=miss; collapsed; fleet; \(keyParameter)"
                    : "MediaRelay; fwd=miss\(stored); \(keyParameter)"
            // Work another node of the fleet runs now is followed, not generated again: coalesced across the fleet.
            let fleetShared = sharesFleetWork && !directives.noCache
            let outcome: CacheOutcome = directives.noCache ? .bypass : fleetShared ? .coalesced : .miss
            let request = Self.makeRequest(
                identity,
                endpoint: endpoint,
                job: job,
                owner: ownerKeyID,
                outcome: outcome,
                cacheStatus: status,
                recorded: commit
            )
            state.requests[request.id] = request
            return (request, job)
        }
        guard let (request, newJob) = decided else { return nil }
        if let log {
            let started = ContinuousClock.now
            commit.whenDone { [latency] in latency.record(submission: ContinuousClock.now - started) }
            log.append([.created(Self.creation(request))]) { _ in commit.arrive() }
        }
        fleet?.register(request) { commit.arrive() }
        statistics.recordSubmission(request.cacheOutcome)
        // A shared job waits in the queue with the highest priority of its requests (fal's default is normal).
        if newJob == nil, platform.priority != .low { request.job.raisePriority() }
        if newJob == nil, let expiry = platform.mediaExpirySeconds { request.job.shortenMediaExpiry(to: expiry) }
        if let newJob {
            start(
                newJob,
                storeResult: cacheable && !directives.noStore,
                storeRejection: !directives.noStore,
                coalesce: coalesce,
                cap: inProgressCap
            )
        }
        return request
    }

    /// Jobs waiting for their caller's in-progress cap, all callers together.
    public var waitingForCaps: Int { inProgress.waiting }

    /// Changes whenever requests are removed (a sweep past retention) or their payloads deleted: a finished request that was found while it is
    /// unchanged is still there, so an answer about it that can no longer change may be served again without a lookup.
    public var removals: UInt64 { removalCount.load(ordering: .acquiring) }

    /// The request with this id, if it exists and `keyID` may see it.
    public func request(_ id: String, keyID: String?) -> RelayRequest? {
        state.withLock { state in
            guard let request = state.requests.promote(id), request.ownerKeyID == nil || request.ownerKeyID == keyID
            else {
                return nil
            }
            return request
        }
    }

    /// Detaches the request from its job; the job itself stops only when no request waits on it any more.
    /// `app`, when given, must be the app the request was submitted to (`owner/alias`).
    /// `fromFleet`: another node cancelled it (its registry notice); this node follows without telling the fleet.
    public func cancel(
        _ id: String,
        keyID: String?,
        app: String? = nil,
        fromFleet: Bool = false,
        because reason: FalError? = nil
    ) -> CancelOutcome {
        let (outcome, cancelled) = state.withLock { state -> (CancelOutcome, RelayRequest?) in
            guard var request = state.requests[id],
                fromFleet || request.ownerKeyID == nil || request.ownerKeyID == keyID,
                app == nil || request.endpoint.app == app
            else {
                return (.notFound, nil)
            }
            if request.cancelled || request.job.isTerminal {
                return (.alreadyCompleted, nil)
            }
            request.cancelled = true
            request.endedEarly = reason
            state.requests[id] = request
            return (.cancellationRequested, request)
        }
        guard let cancelled else { return outcome }
        // Not awaited: lost in a crash, the request reads as interrupted (COMPLETED with an error) instead.
        log?.append([.cancelled(requestID: id, at: .now())])
        if !fromFleet { fleet?.cancelled(cancelled) }
        cancelled.job.detach()
        return outcome
    }

    /// Forgets finished requests older than the retention time and expired cache entries. Returns how many
    /// requests were removed.
    @discardableResult
    public func sweep(now: Timestamp = .now()) -> Int {
        results.sweep(now: now)
        return state.withLock { state in
            let removed = state.requests.removeEnded(createdBefore: now.secondsSinceEpoch - retentionSeconds)
            if removed > 0 { removalCount.add(1, ordering: .releasing) }
            state.inFlight = state.inFlight.filter { !$0.value.isTerminal }
            return removed
        }
    }

    /// Unlinks request-log segments nothing still served needs (past retention, older than every request kept).
    @discardableResult
    public func sweepLog(now: Timestamp = .now()) async -> Int {
        guard let log else { return 0 }
        let oldest = state.withLock { state in state.requests.oldestCreatedAt }
        return await log.sweep(now: now, oldestWanted: oldest)
    }

    /// Time from a submission to its durable record, and from a job's reported end to its published end (the
    /// price of durability), since start.
    public var commitLatency: (submissions: LatencySummary, ends: LatencySummary) {
        latency.summaries
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

    /// Starts the upstream; an upstream that keeps the job by its own id gets that recorded (`Job.attached(to:)`),
    /// so that a restart follows the job again.
    /// Starts `job` upstream, once its caller is under `cap` when it has one.
    private func start(_ job: Job, storeResult: Bool, storeRejection: Bool, coalesce: Bool, cap: InProgressCap?) {
        if log != nil || fleet != nil {
            job.setAttachmentRecorder { [weak job, log, fleet] handle in
                guard let job else { return }
                // In a fleet the claim carries it too: a node that takes the job over follows it, never resubmits.
                fleet?.attached(job.key, handle)
                log?.append([
                    .attached(
                        RequestLogRecord.Attachment(
                            jobID: job.id,
                            attachedAt: .now(),
                            modelID: job.model.id,
                            input: job.input.fields,
                            handle: handle,
                            storeResult: storeResult,
                            storeRejection: storeRejection,
                            coalesce: coalesce
                        )
                    )
                ])
            }
        }
        follow(job, storeResult: storeResult, storeRejection: storeRejection) {
            let upstream = self.resolveUpstream(job.model)
            guard let cap else { return upstream.start(job) }
            return self.inProgress.start(job, cap: cap, backlog: { upstream.queueDepth }) { upstream.start(job) }
        }
    }

    /// Runs the job on what `begin` starts. Its end passes the completion gate: the reusable result is stored and
    /// the end recorded, and only once both are on disk is the end published (see the type's documentation).
    func follow(_ job: Job, storeResult: Bool, storeRejection: Bool, begin: () -> (any UpstreamTask)?) {
        statistics.recordUpstreamJobStarted()
        let results = self.results
        let policy = cachePolicy
        let log = self.log
        let latency = self.latency
        let fleet = self.fleet
        let mediaDeadline = self.mediaDeadline
        job.setCompletionGate { [weak job] outcome, publish in
            guard let job else { return publish() }
            let started = ContinuousClock.now
            if case .success(let result, _) = outcome, let expiry = job.mediaExpirySeconds {
                mediaDeadline(result, Timestamp(secondsSinceEpoch: Timestamp.now().secondsSinceEpoch + expiry))
            }
            let stored = Self.store(
                outcome,
                of: job,
                in: results,
                policy: policy,
                storeResult: storeResult,
                storeRejection: storeRejection
            )
            var published: CachedResult?
            if stored, fleet != nil,
                case .hit(let result) = results.probe(
                    job.key,
                    modelID: job.model.id,
                    canonicalInput: job.input.canonicalBytes
                )
            {
                published = result
            }
            let commit = RecordCommit(
                pending: (log == nil ? 0 : 1) + (stored ? 1 : 0) + (published == nil ? 0 : 1)
            )
            if let published, let fleet { Self.publish(published, of: job.key, to: fleet, then: commit) }
            commit.whenDone {
                latency.record(end: ContinuousClock.now - started)
                publish()
            }
            if stored { results.whenWritten(job.key) { _ in commit.arrive() } }
            log?.append([.finished(jobID: job.id, at: .now(), outcome: Self.logged(outcome))]) { _ in commit.arrive() }
        }
        let statistics = self.statistics
        _ = job.subscribe(after: 0) { event in
            guard case .completed(let outcome) = event.kind else { return }
            switch outcome {
            case .success(let result, let seconds):
                statistics.recordUpstreamJobEnded(failed: false)
                // Every waiter beyond the first was served without a generation of its own.
                let sharedWith = job.requestsEverAttached - 1
                if sharedWith > 0 {
                    statistics.recordSaved(inferenceSeconds: (seconds ?? 0) * Double(sharedWith))
                }
                let cost = job.model.price.cost(result: result, input: job.input.fields, inferenceSeconds: seconds) ?? 0
                statistics.recordMoney(model: job.model.id, spent: cost, saved: cost * Double(max(0, sharedWith)))
            case .failure:
                statistics.recordUpstreamJobEnded(failed: true)
            case .cancelled:
                statistics.recordUpstreamJobEnded(failed: false)
            }
        }
        if let task = begin() {
            job.setTask(task)
        }
    }

    private static func makeRequest(
        _ identity: (
            id: String, createdAt: Timestamp, webhook: String?, tags: [PlatformHeaders.Tag], input: JSONObject?
        ),
        endpoint: EndpointID,
        job: Job,
        owner: String?,
        outcome: CacheOutcome,
        cacheStatus: String,
        recorded: RecordCommit
    ) -> RelayRequest {
        RelayRequest(
            id: identity.id,
            endpoint: endpoint,
            job: job,
            ownerKeyID: owner,
            createdAt: identity.createdAt,
            cacheOutcome: outcome,
            cacheStatus: cacheStatus,
            cancelled: false,
            recorded: recorded,
            webhookURL: identity.webhook,
            tags: identity.tags,
            input: identity.input
        )
    }
}
