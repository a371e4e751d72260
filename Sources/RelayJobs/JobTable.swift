public import RelayCore
import Synchronization

/// How a submission was served, as `x-relay-cache` says it.
public enum CacheOutcome: String, Sendable, Hashable {
    case hit
    case coalesced
    case miss
    case bypass
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

/// Every live request and in-flight job: submission, coalescing of identical work, lookup and cancellation.
///
/// Lock order is always table → job (never the reverse): a finished job stays in `inFlight` until the next
/// submission of its key replaces it or `sweep` removes it, so a job never has to call back into the table.
public final class JobTable: Sendable {
    public typealias UpstreamResolver = @Sendable (ModelSpec) -> any Upstream

    private struct State: Sendable {
        var requests: [String: RelayRequest] = [:]
        var inFlight: [RequestKey: Job] = [:]
    }

    private let state = Mutex(State())
    private let resolveUpstream: UpstreamResolver
    /// How long a finished request stays addressable (status, result) after it was created.
    public let retentionSeconds: Double

    public init(retentionSeconds: Double = 3600, upstream: @escaping UpstreamResolver) {
        self.retentionSeconds = retentionSeconds
        self.resolveUpstream = upstream
    }

    /// Creates a request for `input`. Identical work already in flight is shared (unless the model says `never`
    /// or the client asked for a fresh generation); otherwise a new job starts upstream.
    public func submit(
        _ input: ModelInput,
        endpoint: EndpointID,
        key: RequestKey,
        ownerKeyID: String?,
        allowCoalescing: Bool = true
    ) -> RelayRequest {
        let coalesce = allowCoalescing && input.model.dedup != .never
        let (request, newJob) = state.withLock { state -> (RelayRequest, Job?) in
            if coalesce, let job = state.inFlight[key], job.attach() {
                let request = Self.makeRequest(endpoint: endpoint, job: job, owner: ownerKeyID, outcome: .coalesced)
                state.requests[request.id] = request
                return (request, nil)
            }
            let job = Job(input: input, key: key)
            _ = job.attach()
            if coalesce {
                state.inFlight[key] = job
            }
            let request = Self.makeRequest(endpoint: endpoint, job: job, owner: ownerKeyID, outcome: allowCoalescing ? .miss : .bypass)
            state.requests[request.id] = request
            return (request, job)
        }
        if let newJob {
            start(newJob)
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

    /// Forgets finished requests older than the retention time. Returns how many were removed.
    @discardableResult
    public func sweep(now: Timestamp = .now()) -> Int {
        state.withLock { state in
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

    private func start(_ job: Job) {
        job.setTask(resolveUpstream(job.model).start(job))
    }

    private static func makeRequest(endpoint: EndpointID, job: Job, owner: String?, outcome: CacheOutcome) -> RelayRequest {
        RelayRequest(
            id: RequestID.make(),
            endpoint: endpoint,
            job: job,
            ownerKeyID: owner,
            createdAt: .now(),
            cacheOutcome: outcome,
            cancelled: false
        )
    }
}
