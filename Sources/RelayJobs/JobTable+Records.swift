import RelayCore
import RelayStore
import Synchronization

/// What the job table writes to the request log about a request and a job's end.
extension JobTable {
    static func creation(_ request: RelayRequest) -> RequestLogRecord.Creation {
        RequestLogRecord.Creation(
            id: request.id,
            jobID: request.job.id,
            endpoint: request.endpoint.description,
            key: request.job.key,
            ownerKeyID: request.ownerKeyID,
            createdAt: request.createdAt,
            cacheOutcome: request.cacheOutcome.rawValue,
            cacheStatus: request.cacheStatus,
            input: request.input,
            tags: PlatformHeaders.text(of: request.tags)
        )
    }

    static func logged(_ outcome: JobOutcome) -> RequestLogRecord.Outcome {
        switch outcome {
        case .success(let result, let seconds): .success(result: result, inferenceSeconds: seconds)
        case .failure(let error): .failure(error)
        case .cancelled: .cancelled
        }
    }

    /// Shares a stored result with the fleet; `commit` hears of it once the fleet's index holds it, or after 2 s at
    /// most (a database that does not answer must not hold every job's end back for long).
    static func publish(_ result: CachedResult, of key: RequestKey, to fleet: any Fleet, then commit: RecordCommit) {
        let once = Atomic<Bool>(false)
        let arrive: @Sendable () -> Void = { if !once.exchange(true, ordering: .relaxed) { commit.arrive() } }
        let timer = Task {
            try? await Task.sleep(for: .seconds(2))
            arrive()
        }
        fleet.stored(key, result) {
            timer.cancel()
            arrive()
        }
    }

    /// Stores what of `outcome` may be reused; true when something was stored.
    static func store(
        _ outcome: JobOutcome,
        of job: Job,
        in results: ResultIndex,
        policy: CachePolicy,
        storeResult: Bool,
        storeRejection: Bool
    ) -> Bool {
        let now = Timestamp.now()
        let input = job.input
        switch outcome {
        case .success(let result, let seconds) where storeResult && !job.servedByFallback:
            var ttl = input.model.cacheTTLSeconds ?? policy.resultTTLSeconds
            // A result must not outlive the media it names (X-Fal-Object-Lifecycle-Preference).
            if let expiry = job.mediaExpirySeconds { ttl = min(ttl, expiry) }
            results.store(
                job.key,
                CachedResult(
                    modelID: input.model.id,
                    canonicalInput: input.canonicalBytes,
                    outcome: .success(result: result, inferenceSeconds: seconds),
                    storedAt: now,
                    expiresAt: Timestamp(secondsSinceEpoch: now.secondsSinceEpoch + ttl)
                )
            )
            return true
        case .failure(let error) where storeRejection && error.status == 422:
            results.store(
                job.key,
                CachedResult(
                    modelID: input.model.id,
                    canonicalInput: input.canonicalBytes,
                    outcome: .rejected(error),
                    storedAt: now,
                    expiresAt: Timestamp(secondsSinceEpoch: now.secondsSinceEpoch + policy.negativeTTLSeconds)
                )
            )
            return true
        default:
            return false
        }
    }
}
