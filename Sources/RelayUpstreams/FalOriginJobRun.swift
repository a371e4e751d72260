import FalQueue
import Logging
import NIOCore
import RelayCore
import RelayJobs
import RelayStore
import Synchronization

/// One job's trip through a fal-compatible origin: submit, follow (status stream, else polling), fetch the result,
/// pull its media into the blob store, report. Exactly one terminal update reaches the job, unless it was cancelled.
///
/// The submit is shielded from cancellation: once it may be on the wire it runs to its end, so that a job it
/// created at the origin is known and can be cancelled there (`PUT cancel_url`) instead of running on unseen. The
/// per-job deadline fails the job at once, whatever the calls in flight are doing, and cancels the origin's job too.
final class FalOriginJobRun: Sendable {
    typealias Handle = FalQueueHandle

    private struct State: Sendable {
        var handle: Handle?
        /// Cancelled, or past the deadline: no more calls, no more updates.
        var abandoned = false
        /// A terminal update was delivered.
        var finished = false
        var cancelSent = false
    }

    let job: Job
    private let client: FalOriginClient
    private let store: BlobStore
    private let logger: Logger
    private let probeTicket: Int?
    /// A job the origin accepted before a restart: followed by this handle, not submitted.
    private let resuming: Handle?
    /// The model submitted to: the job's own, or a fallback's.
    private let endpoint: String
    /// Hears a submit the origin certainly did not take; true: the job goes elsewhere (an origin pool).
    private let refused: (@Sendable (FalError) -> Bool)?
    /// Retry a refused submit as a single origin does; false hands it back to the pool at the first refusal.
    private let patient: Bool
    private let state = Mutex(State())

    init(
        job: Job,
        client: FalOriginClient,
        store: BlobStore,
        logger: Logger,
        probeTicket: Int?,
        resuming: Handle? = nil,
        endpoint: String? = nil,
        patient: Bool = true,
        refused: (@Sendable (FalError) -> Bool)? = nil
    ) {
        self.job = job
        self.patient = patient
        self.endpoint = endpoint ?? job.model.id
        self.refused = refused
        self.resuming = resuming
        if let resuming { state.withLock { $0.handle = resuming } }
        self.client = client
        self.store = store
        var logger = logger
        logger[metadataKey: "model"] = "\(job.model.id)"
        self.logger = logger
        self.probeTicket = probeTicket
    }

    private var configuration: FalOriginUpstream.Configuration { client.configuration }

    /// The origin's handle once the submit was accepted.
    var handle: Handle? { state.withLock { $0.handle } }

    private var isAbandoned: Bool { state.withLock { $0.abandoned } }

    // MARK: - Lifecycle

    /// Runs the job to its end, or until `deadline`, or until the task is cancelled.
    func run(deadline: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.work() }
            group.addTask {
                do {
                    try await Task.sleep(for: deadline)
                } catch {
                    return
                }
                self.expire()
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// The job was cancelled (its last request left): stop, and cancel at the origin once the job exists there.
    func cancel() {
        let proceed = state.withLock { state -> Bool in
            guard !state.finished else { return false }
            state.abandoned = true
            return true
        }
        if proceed { sendCancel() }
    }

    private func expire() {
        let report = state.withLock { state -> Bool in
            guard !state.finished, !state.abandoned else { return false }
            state.finished = true
            state.abandoned = true
            return true
        }
        guard report else { return }
        logger.warning("origin job passed its deadline", metadata: ["deadline": "\(configuration.jobDeadline)"])
        job.receive(
            .failed(
                .unavailable(
                    "origin \(client.baseOrigin) did not finish the job within \(configuration.jobDeadline)",
                    type: "request_timeout"
                )
            )
        )
        sendCancel()
    }

    private func finish(_ update: JobUpdate) {
        let deliver = state.withLock { state -> Bool in
            guard !state.finished, !state.abandoned else { return false }
            state.finished = true
            return true
        }
        if deliver { job.receive(update) }
    }

    /// Best effort, once: `PUT cancel_url` on a task of its own (the job's task is being torn down).
    private func sendCancel() {
        let handle = state.withLock { state -> Handle? in
            guard let handle = state.handle, !state.cancelSent else { return nil }
            state.cancelSent = true
            return handle
        }
        guard let handle else { return }
        let client = self.client
        let logger = self.logger
        Task {
            do {
                let reply = try await client.queue.cancel(handle, limits: client.limits)
                logger.debug(
                    "origin cancel answered",
                    metadata: ["status": "\(reply.status)", "origin_request_id": "\(handle.requestID)"]
                )
            } catch {
                logger.info(
                    "origin cancel failed",
                    metadata: ["error": "\(error)", "origin_request_id": "\(handle.requestID)"]
                )
            }
        }
    }

    // MARK: - The work

    private func work() async {
        do {
            let handle: Handle
            if let resuming {
                handle = resuming
            } else {
                do {
                    handle = try await submit()
                } catch let notAccepted as NotAccepted {
                    // Certainly not taken by the origin: another account of the pool may take it. The end is claimed
                    // first, so the deadline cannot fail the job while another account runs it.
                    let claimed = state.withLock { state -> Bool in
                        guard refused != nil, !state.finished, !state.abandoned else { return false }
                        state.finished = true
                        return true
                    }
                    if claimed {
                        if refused?(notAccepted.error) == true { return }
                        state.withLock { $0.finished = false }
                    }
                    throw notAccepted.error
                }
            }
            let final = try await follow(handle)
            if let message = final.error {
                finish(.failed(await failure(of: handle, message: message, type: final.errorType)))
                return
            }
            let result = try await fetchResult(handle)
            let rewritten = try await pullMedia(of: result)
            let seconds = final.inferenceSeconds ?? result["metrics"]?["inference_time"]?.doubleValue
            logger.debug("origin job succeeded", metadata: ["origin_request_id": "\(handle.requestID)"])
            finish(.succeeded(result: rewritten, inferenceSeconds: seconds))
        } catch is CancellationError {
            return
        } catch let error as FalError {
            logger.info("origin job failed", metadata: ["error": "\(error)"])
            finish(.failed(error))
        } catch {
            logger.info("origin job failed", metadata: ["error": "\(error)"])
            finish(.failed(.badGateway("origin \(client.baseOrigin): \(error)")))
        }
    }

    private func submit() async throws -> Handle {
        let client = self.client
        if isAbandoned {
            if let probeTicket { client.abandonProbe(probeTicket) }
            throw CancellationError()
        }
        let input = ByteBuffer(bytes: JSONValue.object(job.input.fields).serialized())
        let submitted: FalQueueClient.Submitted
        do {
            submitted = try await client.queue.submit(
                endpoint: endpoint,
                input: input,
                headers: job.platform.forwarded(priority: job.platform.priority.map { _ in job.priority }),
                // In a pool a refused submit moves to the next account at once instead of waiting on this one.
                noRetry: job.platform.noRetry || !patient,
                limits: client.limits,
                keepTrying: { !self.isAbandoned }
            )
        } catch {
            if error is CancellationError, let probeTicket { client.abandonProbe(probeTicket) }
            // Never on the wire (no connection, or TLS refused): certainly not accepted. A connection lost during
            // the exchange, or an answer that cannot be read, may have created the job: never moved elsewhere.
            if let failure = error as? FalQueueClient.TransportFailure,
                failure.phase == .connect || failure.phase == .permanent,
                let mapped = client.jobError(error) as? FalError
            {
                throw NotAccepted(error: mapped)
            }
            throw client.jobError(error)
        }
        let handle: Handle
        let reply: FalQueueClient.Reply
        switch submitted {
        case .refused(let refusal):
            // The origin answered without taking the job.
            throw NotAccepted(error: client.error(for: refusal, purpose: "submit"))
        case .accepted(let accepted, let answer):
            handle = accepted
            reply = answer
        }
        let requestID = handle.requestID
        let abandoned = state.withLock { state -> Bool in
            state.handle = handle
            return state.abandoned
        }
        logger.debug(
            "origin accepted the job",
            metadata: ["origin_request_id": "\(requestID)", "attempts": "\(reply.attempts)"]
        )
        if abandoned {
            sendCancel()
            throw CancellationError()
        }
        job.attached(
            to: UpstreamHandle(
                origin: configuration.handleOrigin,
                requestID: requestID,
                statusURL: handle.statusURL,
                responseURL: handle.responseURL,
                cancelURL: handle.cancelURL
            )
        )
        return handle
    }

    /// A submit the origin certainly did not take (its answer refused it, or it never received it).
    struct NotAccepted: Error {
        let error: FalError
    }

    /// Follows the origin's request to COMPLETED (status stream, else polling), feeding the job as it goes.
    private func follow(_ handle: Handle) async throws -> FalOriginStatus {
        let cursor = Mutex(FalOriginLogCursor())
        let logger = self.logger
        let followed: FalQueueClient.Followed
        do {
            followed = try await client.queue.follow(
                handle,
                limits: client.limits,
                keepTrying: { !self.isAbandoned },
                onFallback: { reason in
                    logger.info("origin status stream unavailable; polling", metadata: ["reason": "\(reason)"])
                },
                onStatus: { value, streamed in
                    guard let status = FalOriginStatus(json: value) else { return }
                    cursor.withLock { self.apply(status, cursor: &$0, streamed: streamed) }
                }
            )
        } catch {
            throw client.jobError(error)
        }
        switch followed {
        case .refused(let reply):
            throw client.error(for: reply, purpose: "status")
        case .completed(let value):
            // `follow` ends only on a status object: this parse cannot fail.
            return FalOriginStatus(json: value) ?? FalOriginStatus(phase: .completed)
        }
    }

    private func apply(_ status: FalOriginStatus, cursor: inout FalOriginLogCursor, streamed: Bool) {
        let fresh = streamed ? cursor.newLines(streamed: status.logs) : cursor.newLines(cumulative: status.logs)
        switch status.phase {
        case .inQueue(let position):
            job.receive(.queued(position: position))
        case .inProgress:
            job.receive(.started)
        case .completed, .other:
            break
        }
        for line in fresh {
            job.receive(.log(line.message, level: line.level))
        }
    }

    /// The error of a job that COMPLETED with one: the result endpoint's error answer (the origin's status and
    /// detail), else the status object's message.
    private func failure(of handle: Handle, message: String, type: String?) async -> FalError {
        let named = type.map { " (\($0))" } ?? ""
        let fallback = FalError.badGateway("origin \(client.baseOrigin) reports the job failed\(named): \(message)")
        // One try, outside the breaker's count: the origin answers for a job that failed, not for its own health.
        guard
            let reply = try? await client.queue.result(
                handle,
                limits: client.limits,
                countsForHealth: false,
                keepTrying: { false }
            ), !reply.isSuccess
        else {
            return fallback
        }
        return client.error(for: reply, purpose: "result")
    }

    private func fetchResult(_ handle: Handle) async throws -> JSONValue {
        let reply: FalQueueClient.Reply
        do {
            reply = try await client.queue.result(handle, limits: client.limits, keepTrying: { !self.isAbandoned })
        } catch {
            throw client.jobError(error)
        }
        guard reply.isSuccess else { throw client.error(for: reply, purpose: "result") }
        do {
            return try Self.parse(reply.body)
        } catch {
            throw FalError.badGateway(
                "origin \(client.baseOrigin) result is not valid JSON (\(error)): \(FalQueueClient.excerpt(reply.body))"
            )
        }
    }

    // MARK: - Media

    private func pullMedia(of result: JSONValue) async throws -> JSONValue {
        let references = FalMediaReferences(in: result).references
        guard !references.isEmpty else { return result }
        var records: [String: BlobRecord] = [:]
        try await withThrowingTaskGroup(of: (String, BlobRecord).self) { group in
            var pending = references.makeIterator()
            for _ in 0..<max(1, configuration.mediaConcurrency) {
                guard let reference = pending.next() else { break }
                group.addTask { (reference.url, try await self.pull(reference)) }
            }
            while let (url, record) = try await group.next() {
                records[url] = record
                if let reference = pending.next() {
                    group.addTask { (reference.url, try await self.pull(reference)) }
                }
            }
        }
        let base = configuration.publicBaseURL()
        return FalMediaReferences.rewrite(
            result,
            replacements: records.mapValues { .init(url: base + "/files/" + $0.fileName, size: Int($0.size)) }
        )
    }

    private func pull(_ reference: FalMediaReferences.Reference) async throws -> BlobRecord {
        let call = FalQueueClient.Call(
            method: .GET,
            url: reference.url,
            accept: "*/*",
            replay: .safe,
            timeout: configuration.mediaTimeout,
            maxBodyBytes: configuration.maxMediaBytes,
            credentials: client.queue.isOnBase(reference.url),
            countsForHealth: false,
            purpose: "media"
        )
        let reply: FalQueueClient.Reply
        do {
            reply = try await client.queue.send(call, keepTrying: { !self.isAbandoned })
        } catch {
            throw client.jobError(error)
        }
        guard reply.isSuccess else {
            throw FalError.badGateway("could not fetch origin media \(reference.url): HTTP \(reply.status)")
        }
        let type = FalMediaReferences.mediaType(
            declared: reference.declaredContentType,
            served: reply.headers.first(name: "content-type"),
            url: reference.url
        )
        do {
            return try await store.put(Array(reply.body.readableBytesView), mediaType: type)
        } catch {
            if error == .cancelled { throw CancellationError() }
            if error.isDiskFull { throw FalError.insufficientStorage() }
            throw FalError.internalError("media store: \(error)")
        }
    }

    // MARK: - Helpers

    private static func parse(_ buffer: ByteBuffer) throws -> JSONValue {
        try buffer.withUnsafeReadableBytes { try JSONValue(parsing: $0) }
    }
}
