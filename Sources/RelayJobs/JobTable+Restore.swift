public import RelayCore
public import RelayStore

/// Restart: requests and jobs rebuilt from the request log, and jobs in flight at an origin followed again.
extension JobTable {
    /// How a request in flight when the relay died ends after the restart: COMPLETED with this error, so its
    /// status, result and streams answer at once instead of hanging or 404.
    public static let restartedError = FalError.unavailable(
        "The relay restarted while this request was in flight; submit it again",
        type: "relay_restarted"
    )

    /// Reads the request log (call once at start-up, before serving): every request created within retention is
    /// served again by id to its owner, ended as it ended, or — when it was in flight — still in flight if its
    /// upstream had accepted the job under its own id (an origin), else with `restartedError`. Returns nil without a
    /// log.
    ///
    /// Jobs still in flight are rebuilt (same job id, key and requests; their input through `models`, which maps a
    /// model id to the catalog's spec) but not followed yet: call `resumeAttached()` once the relay knows its public
    /// address (media URLs are rewritten to it).
    @discardableResult
    public func restore(
        now: Timestamp = .now(),
        models: (String) -> ModelSpec? = { _ in nil }
    ) async throws(StoreError) -> RequestLog.LoadReport? {
        guard let log else { return nil }
        let (restored, report) = try await log.load(now: now, interrupted: .failure(Self.restartedError))
        var jobs: [UInt64: Job] = [:]
        var requests: [RelayRequest] = []
        var resumptions: [Resumption] = []
        var finished: [(String, FinishedRequest)] = []
        // One stand-in per endpoint, shared by its requests: 100,000 finished requests hold one, not 100,000.
        var standIns: [String: FinishedRequest.Shared] = [:]
        for item in restored {
            let creation = item.creation
            let known = standIns[creation.endpoint]
            guard let shared = known ?? Self.standIn(for: creation.endpoint, maxEvents: maxEvents) else { continue }
            if known == nil { standIns[creation.endpoint] = shared }
            let (endpoint, input) = (shared.endpoint, shared.input)
            // Ended with a result, and its job is not one still followed at its upstream: kept compact until asked for.
            if !item.cancelled, item.attachment == nil, jobs[creation.jobID] == nil,
                case .success(let result, let seconds) = item.outcome
            {
                let request = FinishedRequest(
                    shared: shared,
                    jobID: creation.jobID,
                    key: creation.key,
                    ownerKeyID: creation.ownerKeyID.map(Self.rehomed),
                    createdAt: creation.createdAt,
                    endedAt: item.endedAt,
                    cacheOutcome: CacheOutcome(rawValue: creation.cacheOutcome) ?? .miss,
                    cacheStatus: Self.rehomed(creation.cacheStatus),
                    tags: creation.tags.map(PlatformHeaders.tags(in:)) ?? [],
                    input: creation.input.map { JSONValue.object($0).serialized() },
                    result: result.serialized(),
                    inferenceSeconds: seconds,
                    payloadsDeleted: item.payloadsDeleted
                )
                finished.append((Self.rehomed(creation.id), request))
                continue
            }
            let job: Job
            if item.cancelled {
                job = Job(
                    restoredID: creation.jobID,
                    key: creation.key,
                    input: input,
                    outcome: .cancelled,
                    createdAt: creation.createdAt,
                    endedAt: item.endedAt,
                    maxEvents: maxEvents
                )
            } else if let shared = jobs[creation.jobID] {
                job = shared
                _ = job.attach()
            } else if let attachment = item.attachment {
                // Still running at the origin: the same job again, in flight, to be followed there by its id.
                let (rebuilt, known) = Self.rebuiltInput(attachment, models: models, fallback: input)
                job = Job(
                    input: rebuilt,
                    key: creation.key,
                    createdAt: creation.createdAt,
                    id: creation.jobID,
                    maxEvents: maxEvents
                )
                _ = job.attach()
                jobs[creation.jobID] = job
                resumptions.append(
                    Resumption(job: job, attachment: attachment, storeResult: attachment.storeResult && known)
                )
            } else {
                job = Job(
                    restoredID: creation.jobID,
                    key: creation.key,
                    input: input,
                    outcome: Self.jobOutcome(item.outcome),
                    createdAt: creation.createdAt,
                    endedAt: item.endedAt,
                    maxEvents: maxEvents
                )
                jobs[creation.jobID] = job
            }
            requests.append(
                RelayRequest(
                    id: creation.id,
                    endpoint: endpoint,
                    job: job,
                    ownerKeyID: creation.ownerKeyID,
                    createdAt: creation.createdAt,
                    cacheOutcome: CacheOutcome(rawValue: creation.cacheOutcome) ?? .miss,
                    cacheStatus: creation.cacheStatus,
                    cancelled: item.cancelled,
                    recorded: RecordCommit(pending: 0),
                    tags: creation.tags.map(PlatformHeaders.tags(in:)) ?? [],
                    input: creation.input,
                    payloadsDeleted: item.payloadsDeleted
                )
            )
        }
        state.withLock { state in
            for request in requests where !state.requests.contains(request.id) {
                state.requests[request.id] = request
            }
            for (id, request) in finished { state.requests.keepFinished(request, id: id) }
            for resumption in resumptions
            where resumption.attachment.coalesce && state.inFlight[resumption.job.key] == nil {
                state.inFlight[resumption.job.key] = resumption.job
            }
            state.resumptions.append(contentsOf: resumptions)
        }
        return report
    }

    /// Follows every job `restore()` found in flight at its upstream again, by the upstream's id (progress, result,
    /// media), through the same completion gate as a new job. A job whose upstream cannot follow it (the origin
    /// changed, or it is gone from the configuration) ends with `restartedError`. Returns how many are followed.
    @discardableResult
    public func resumeAttached() -> Int {
        let resumptions = state.withLock { state -> [Resumption] in
            defer { state.resumptions.removeAll() }
            return state.resumptions
        }
        var followed = 0
        for resumption in resumptions {
            let job = resumption.job
            let attachment = resumption.attachment
            let upstream = resolveUpstream(job.model)
            var resumed = false
            follow(job, storeResult: resumption.storeResult, storeRejection: attachment.storeRejection) {
                let task = upstream.resume(job, from: attachment.handle, attachedAt: attachment.attachedAt)
                resumed = task != nil
                return task
            }
            if resumed {
                followed += 1
            } else {
                job.receive(.failed(Self.restartedError))
            }
        }
        return followed
    }

    /// The input of a job restored in flight, from what went upstream; `known` is false when the catalog no longer
    /// has the model or no longer accepts the input (then a stand-in, and its result is not cached).
    private static func rebuiltInput(
        _ attachment: RequestLogRecord.Attachment,
        models: (String) -> ModelSpec?,
        fallback: ModelInput
    ) -> (ModelInput, known: Bool) {
        if let model = models(attachment.modelID), let input = try? ModelInput(model: model, input: attachment.input) {
            return (input, true)
        }
        let model = ModelSpec(
            id: attachment.modelID,
            title: attachment.modelID,
            kind: fallback.model.kind,
            dedup: .never,
            required: []
        )
        return ((try? ModelInput(model: model, input: attachment.input)) ?? fallback, false)
    }

    /// A restored job's input: only its model id is known (it is never started again).
    /// A copy of `text` in storage of its own. What is kept from the log's records is copied out of them, so that
    /// the parsed records, freed as a whole once loaded, leave whole pages the allocator can give back: a kept string
    /// allocated among them would pin its page.
    private static func rehomed(_ text: String) -> String {
        let count = text.utf8.count
        return String(unsafeUninitializedCapacity: count) { buffer in
            _ = buffer.initialize(fromContentsOf: text.utf8)
            return count
        }
    }

    private static func standIn(for endpoint: String, maxEvents: Int) -> FinishedRequest.Shared? {
        guard let endpoint = EndpointID(endpoint), let input = standInInput(for: endpoint) else { return nil }
        return FinishedRequest.Shared(endpoint: endpoint, input: input, maxEvents: maxEvents)
    }

    private static func standInInput(for endpoint: EndpointID) -> ModelInput? {
        let model = ModelSpec(
            id: endpoint.description,
            title: endpoint.description,
            kind: .image,
            dedup: .never,
            required: []
        )
        return try? ModelInput(model: model, input: [:])
    }

    private static func jobOutcome(_ outcome: RequestLogRecord.Outcome) -> JobOutcome {
        switch outcome {
        case .success(let result, let seconds): .success(result: result, inferenceSeconds: seconds)
        case .failure(let error): .failure(error)
        case .cancelled: .cancelled
        }
    }
}
