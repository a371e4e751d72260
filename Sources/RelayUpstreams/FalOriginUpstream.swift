import FalQueue
public import Logging
public import NIOCore
public import NIOPosix
public import RelayCore
public import RelayJobs
public import RelayStore

/// Forwards jobs to a fal-compatible queue API: fal itself, or another MediaRelay as a shield tier (DESIGN.md
/// "Upstreams").
///
/// Per job: submit, follow progress on the status stream (falling back to polling), fetch the result, pull its
/// media into the blob store and rewrite their URLs to this relay's `/files/`. Transient failures are retried
/// (`RetryPolicy`); an origin that keeps failing trips the circuit breaker, and new jobs then fail at once with
/// 503 until a probe gets through. Every job ends — succeeded, failed or cancelled — within `jobDeadline`.
///
/// Once the origin accepted a job, its handle (request id, status and response URLs) is reported to the job
/// (`Job.attached(to:)`) and made durable; after a restart `resume` follows the job there by that handle instead of
/// submitting it again.
public final class FalOriginUpstream: Upstream {
    public let configuration: Configuration
    private let client: FalOriginClient
    private let store: BlobStore
    private let logger: Logger

    /// Builds the origin's HTTP client. Throws when `additionalCAPath` cannot be read as PEM certificates.
    /// Call `shutdown()` before the event loop group goes away.
    public init(
        configuration: Configuration,
        store: BlobStore,
        logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        self.configuration = configuration
        self.client = try FalOriginClient(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger)
        self.store = store
        var logger = logger
        logger[metadataKey: "origin"] = "\(configuration.baseURL)"
        self.logger = logger
    }

    /// Where the circuit breaker stands (for metrics and admin).
    public var circuitState: OriginCircuitBreaker.State { client.circuitState }

    public func start(_ job: Job) -> any UpstreamTask {
        start(job, endpoint: job.model.id, patient: true, refused: nil)
    }

    /// Starts `job` on `endpoint` (a fallback model's, in a pool). `refused`, when given, hears a submit the origin
    /// refused (or never received) before it accepted the job; when it answers true it takes the job elsewhere and
    /// this origin reports nothing more about it.
    public func start(
        _ job: Job,
        endpoint: String,
        patient: Bool,
        refused: (@Sendable (FalError) -> Bool)?
    ) -> any UpstreamTask {
        let ticket: Int?
        switch client.acquire() {
        case .rejected:
            logger.debug("origin circuit open; failing the job at once", metadata: ["model": "\(job.model.id)"])
            let error = FalError.unavailable("origin circuit open", type: "runner_connection_refused")
            if refused?(error) != true { job.receive(.failed(error)) }
            return FalOriginTask(run: nil, task: nil)
        case .probe(let probe):
            logger.info("origin circuit half-open; this job is the probe", metadata: ["model": "\(job.model.id)"])
            ticket = probe
        case .allowed:
            ticket = nil
        }
        let run = FalOriginJobRun(
            job: job,
            client: client,
            store: store,
            logger: logger,
            probeTicket: ticket,
            endpoint: endpoint,
            patient: patient,
            refused: refused
        )
        let task = Task { await run.run(deadline: configuration.jobDeadline) }
        return FalOriginTask(run: run, task: task)
    }

    /// Follows a job this origin accepted before a restart: status (stream or polls), result, media, as `start`
    /// would, never resubmitting. Only for a handle from this same origin (base URL). The job gets what was left of
    /// its deadline, but at least one request timeout, to collect a job that finished while the relay was down.
    /// The circuit breaker is not asked: the job exists at the origin whatever its health.
    public func resume(_ job: Job, from handle: UpstreamHandle, attachedAt: Timestamp) -> (any UpstreamTask)? {
        guard FalOriginConfiguration.normalised(handle.origin) == configuration.handleOrigin, !handle.requestID.isEmpty,
            [handle.statusURL, handle.responseURL, handle.cancelURL].allSatisfy(FalURL.isHTTP)
        else {
            logger.info(
                "origin job not resumable here",
                metadata: ["origin_request_id": "\(handle.requestID)", "attached_origin": "\(handle.origin)"]
            )
            return nil
        }
        let elapsed = max(0, Timestamp.now().secondsSinceEpoch - attachedAt.secondsSinceEpoch)
        let left = configuration.jobDeadline - .milliseconds(Int64(min(elapsed, 1e9) * 1000))
        let deadline = max(left, configuration.requestTimeout)
        let resumed = FalOriginJobRun.Handle(
            requestID: handle.requestID,
            statusURL: handle.statusURL,
            responseURL: handle.responseURL,
            cancelURL: handle.cancelURL
        )
        logger.info(
            "following an origin job again after a restart",
            metadata: ["origin_request_id": "\(handle.requestID)"]
        )
        let run = FalOriginJobRun(
            job: job,
            client: client,
            store: store,
            logger: logger,
            probeTicket: nil,
            resuming: resumed
        )
        let task = Task { await run.run(deadline: deadline) }
        return FalOriginTask(run: run, task: task)
    }

    /// Closes the origin's connections. Jobs still running fail with transport errors.
    public func shutdown() async throws {
        try await client.shutdown()
    }
}

/// The handle `start` returns: cancelling stops the job's task and cancels the origin's job (best effort).
struct FalOriginTask: UpstreamTask {
    let run: FalOriginJobRun?
    let task: Task<Void, Never>?

    func cancel() {
        run?.cancel()
        task?.cancel()
    }
}
