import AsyncHTTPClient
import CoreMetrics
import FalQueue
public import Logging
public import NIOCore
import NIOHTTP1
public import NIOPosix
public import RelayCore
public import RelayJobs
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Calls `fal_webhook` URLs when requests end: one signed POST per request (PROTOCOL.md §9.5), retried on the
/// `WebhookRetrySchedule`, at most `concurrency` attempts in flight and `queueCapacity` deliveries pending.
///
/// Life cycle: `register` subscribes to the request's job; the terminal event only hands a `Delivery` on (job
/// callbacks run under the job's lock); `run()` delivers until `shutdown()`, then gives pending deliveries
/// `shutdownGrace` before it logs them as not delivered. The HTTP client lives exactly as long as `run()`.
public final class WebhookDispatcher: Sendable {
    /// Delivery settings.
    public struct Configuration: Sendable {
        /// Let loopback and private targets through (development, tests).
        public var allowPrivate = false
        public var schedule = WebhookRetrySchedule()
        /// Deadline of one attempt: connect, send, and the receiver's answer (fal uses 15 s).
        public var timeout: Duration = .seconds(15)
        /// Attempts in flight at once, across all receivers.
        public var concurrency = 16
        /// Deliveries accepted and not yet finished (waiting, in flight or backing off); beyond it they are dropped.
        public var queueCapacity = 10_000
        /// How long pending deliveries may still run once shutdown began.
        public var shutdownGrace: Duration = .seconds(5)
        public var userAgent = "MediaRelay"

        public init() {}
    }

    /// Resolves a host name to addresses (the system resolver on a thread pool; tests inject their own).
    public typealias Resolver = @Sendable (String) async throws -> [IPAddress]

    /// One webhook to send: who it is for, where to, and what happened.
    struct Delivery: Sendable {
        /// `X-Relay-Webhook-Id`: one per delivery, the same on every retry, so receivers can deduplicate.
        let id: String
        let request: RelayRequest
        let target: WebhookTarget
        let outcome: JobOutcome
    }

    private struct State: Sendable {
        var pending = 0
        var accepting = true
        /// Set once shutdown began: retries that would start after it are not waited for.
        var shutdownDeadline: ContinuousClock.Instant?
    }

    /// How an attempt ended, beyond what the retry schedule needs to know.
    private enum AttemptResult {
        case answered(status: Int, retryAfter: Duration?)
        case transport(String)
        /// The name resolved to an address that may not be called: final.
        case forbidden(String)
    }

    public let configuration: Configuration
    private let signer: WebhookSigner
    private let eventLoopGroup: any EventLoopGroup
    /// Set while `run()` runs.
    private let client = Mutex<HTTPClient?>(nil)
    private let logger: Logger
    private let resolve: Resolver
    private let endedOnItsOwn: @Sendable (RelayRequest) -> JobOutcome?
    private let settled: @Sendable (String) -> Void
    private let stillOurs: @Sendable (String) async -> Bool
    private let state = Mutex(State())
    private let gate: AttemptGate
    private let deliveries: AsyncStream<Delivery>
    private let deliveriesInput: AsyncStream<Delivery>.Continuation
    private let shutdownSignal: AsyncStream<Void>
    private let shutdownInput: AsyncStream<Void>.Continuation
    private let delivered = Counter(label: "relay_webhook_deliveries_total", dimensions: [("outcome", "delivered")])
    private let failed = Counter(label: "relay_webhook_deliveries_total", dimensions: [("outcome", "failed")])
    private let dropped = Counter(label: "relay_webhook_deliveries_total", dimensions: [("outcome", "dropped")])

    /// - Parameters:
    ///   - deploymentSecret: the signing key is derived from it (`WebhookSigner`).
    ///   - endedOnItsOwn: how a request ended on its own, if it did (cancelled, or past its start deadline), while its
    ///     shared job may still succeed for others.
    ///   - settled: told the request id once its webhook was delivered or given up on (a fleet marks it done).
    ///   - stillOurs: asked before each attempt whether this node still delivers the request's webhook (in a fleet,
    ///     another node may have taken it over from this one, slow rather than dead, or delivered it already).
    ///   - resolve: nil uses the system resolver on `threadPool`.
    public init(
        configuration: Configuration,
        deploymentSecret: [UInt8],
        eventLoopGroup: any EventLoopGroup,
        threadPool: NIOThreadPool,
        logger: Logger,
        endedOnItsOwn: @escaping @Sendable (RelayRequest) -> JobOutcome? = { _ in nil },
        settled: @escaping @Sendable (String) -> Void = { _ in },
        stillOurs: @escaping @Sendable (String) async -> Bool = { _ in true },
        resolve: Resolver? = nil
    ) {
        self.settled = settled
        self.stillOurs = stillOurs
        self.configuration = configuration
        self.signer = WebhookSigner(deploymentSecret: deploymentSecret)
        self.logger = logger
        self.endedOnItsOwn = endedOnItsOwn
        self.resolve = resolve ?? { host in try await threadPool.runIfActive { try Self.systemResolve(host) } }
        self.gate = AttemptGate(limit: configuration.concurrency)
        (deliveries, deliveriesInput) = AsyncStream.makeStream(of: Delivery.self)
        (shutdownSignal, shutdownInput) = AsyncStream.makeStream(of: Void.self)
        self.eventLoopGroup = eventLoopGroup
    }

    /// The JWKS receivers verify the signatures with (`/.well-known/jwks.json`).
    public var jwks: JSONValue { signer.jwks }

    // MARK: - Submission

    /// nil when `url` may be a webhook target, else the 422 to answer (`loc: ["query", "fal_webhook"]`).
    public func validate(url: String) -> FalError? {
        switch WebhookTarget.parse(url, allowPrivate: configuration.allowPrivate) {
        case .success: nil
        case .failure(let rejection): Self.validationError(rejection)
        }
    }

    /// Sends the outcome of `request` to `url` once it ends. `url` should have passed `validate`; one that does not is
    /// logged and ignored.
    public func register(request: RelayRequest, url: String) {
        let target: WebhookTarget
        switch WebhookTarget.parse(url, allowPrivate: configuration.allowPrivate) {
        case .success(let parsed): target = parsed
        case .failure(let rejection):
            logger.warning(
                "webhook not registered",
                metadata: ["request_id": "\(request.id)", "reason": "\(rejection)"]
            )
            return
        }
        let job = request.job
        let status = job.status
        if case .completed(let outcome) = status.phase {
            enqueue(request: request, target: target, outcome: outcome)
            return
        }
        let subscription = job.subscribe(after: status.lastSequence) { event in
            // Under the job's lock: hand on only.
            if case .completed(let outcome) = event.kind {
                self.enqueue(request: request, target: target, outcome: outcome)
            }
        }
        for event in subscription.replay {
            if case .completed(let outcome) = event.kind {
                enqueue(request: request, target: target, outcome: outcome)
            }
        }
    }

    static func validationError(_ rejection: WebhookTarget.Rejection) -> FalError {
        .validation(
            FalError.ValidationIssue(
                location: ["query", "fal_webhook"],
                message: rejection.message,
                type: rejection.type
            )
        )
    }

    private func enqueue(request: RelayRequest, target: WebhookTarget, outcome: JobOutcome) {
        let admitted = state.withLock { state -> Bool? in
            guard state.accepting else { return nil }
            guard state.pending < configuration.queueCapacity else { return false }
            state.pending += 1
            return true
        }
        let delivery = Delivery(id: RequestID.make(), request: request, target: target, outcome: outcome)
        switch admitted {
        case true?:
            if case .terminated = deliveriesInput.yield(delivery) {
                finish(delivery, attempts: 0, outcome: .failed, reason: "the relay is shutting down")
            }
        case false?:
            dropped.increment()
            logger.warning(
                "webhook dropped: the delivery queue is full",
                metadata: [
                    "request_id": "\(request.id)", "webhook_host": "\(target.authority)",
                    "capacity": "\(configuration.queueCapacity)",
                ]
            )
        case nil:
            failed.increment()
            logger.warning(
                "webhook not delivered: the relay is shutting down",
                metadata: ["request_id": "\(request.id)"]
            )
        }
    }

    // MARK: - Delivery

    /// Delivers until `shutdown()` and the grace period after it; then whatever is left is logged as not delivered.
    public func run() async {
        var settings = HTTPClient.Configuration(
            // A redirect could point anywhere, private addresses included: the receiver's answer is final.
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(5), read: TimeAmount(configuration.timeout))
        )
        settings.connectionPool.retryConnectionEstablishment = false
        let http = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: settings, backgroundActivityLogger: logger)
        client.withLock { $0 = http }
        defer {
            client.withLock { $0 = nil }
        }
        await deliverUntilShutdown()
        do {
            try await http.shutdown()
        } catch {
            logger.debug("webhook HTTP client shutdown failed", metadata: ["error": "\(error)"])
        }
    }

    private func deliverUntilShutdown() async {
        await withTaskGroup(of: Void.self) { outer in
            outer.addTask {
                await withDiscardingTaskGroup { group in
                    for await delivery in self.deliveries {
                        group.addTask { await self.deliver(delivery) }
                    }
                }
            }
            outer.addTask {
                for await _ in self.shutdownSignal {}
                guard !Task.isCancelled else { return }
                try? await Task.sleep(for: self.configuration.shutdownGrace)
            }
            await outer.next()
            outer.cancelAll()
        }
    }

    /// Stops taking deliveries; those pending have `shutdownGrace` to finish.
    public func shutdown() {
        let pending = state.withLock { state in
            state.accepting = false
            state.shutdownDeadline = .now + configuration.shutdownGrace
            return state.pending
        }
        if pending > 0 {
            logger.info("webhooks: waiting for pending deliveries", metadata: ["pending": "\(pending)"])
        }
        deliveriesInput.finish()
        shutdownInput.finish()
    }

    /// Deliveries accepted and not yet finished.
    public var pendingCount: Int { state.withLock { $0.pending } }

    private enum Final {
        case delivered
        case failed
    }

    private func deliver(_ delivery: Delivery) async {
        var outcome = delivery.outcome
        // A request that ended on its own ends so, whatever its shared job did for the others.
        if case .cancelled = outcome {
        } else if let early = endedOnItsOwn(delivery.request) {
            outcome = early
        }
        let body = WebhookPayload.body(requestID: delivery.request.id, outcome: outcome).serialized()
        var generator = SystemRandomNumberGenerator()
        var attempt = 1
        while true {
            guard await stillOurs(delivery.request.id) else {
                // Another node of the fleet took it over (this one looked dead to it) or delivered it: not twice.
                logger.info(
                    "webhook left to the node that took it over",
                    metadata: ["request_id": "\(delivery.request.id)"]
                )
                return
            }
            let result: AttemptResult
            do {
                try await gate.acquire()
                result = await send(delivery, body: body)
                gate.release()
            } catch {
                return finish(
                    delivery,
                    attempts: attempt - 1,
                    outcome: .failed,
                    reason: "the relay shut down before it could be sent"
                )
            }
            let decision: WebhookRetrySchedule.Decision
            let reason: String
            switch result {
            case .answered(let status, let retryAfter):
                decision = configuration.schedule.decision(
                    after: .status(status, retryAfter: retryAfter),
                    attempt: attempt,
                    jitter: Double.random(in: 0...1, using: &generator)
                )
                reason = "HTTP \(status)"
            case .transport(let why):
                decision = configuration.schedule.decision(
                    after: .transport,
                    attempt: attempt,
                    jitter: Double.random(in: 0...1, using: &generator)
                )
                reason = why
            case .forbidden(let why):
                decision = .giveUp
                reason = why
            }
            switch decision {
            case .delivered:
                return finish(delivery, attempts: attempt, outcome: .delivered, reason: reason)
            case .giveUp:
                return finish(delivery, attempts: attempt, outcome: .failed, reason: reason)
            case .retry(let delay):
                let deadline = state.withLock { $0.shutdownDeadline }
                if let deadline, ContinuousClock.now + delay > deadline {
                    return finish(
                        delivery,
                        attempts: attempt,
                        outcome: .failed,
                        reason: "\(reason); the relay shut down before the next attempt"
                    )
                }
                logger.debug(
                    "webhook attempt failed, retrying",
                    metadata: [
                        "request_id": "\(delivery.request.id)", "webhook_id": "\(delivery.id)", "attempt": "\(attempt)",
                        "delay": "\(delay)", "reason": "\(reason)",
                    ]
                )
                do {
                    try await Task.sleep(for: delay)
                } catch {
                    return finish(
                        delivery,
                        attempts: attempt,
                        outcome: .failed,
                        reason: "\(reason); the relay shut down before the next attempt"
                    )
                }
                attempt += 1
            }
        }
    }

    private func finish(_ delivery: Delivery, attempts: Int, outcome: Final, reason: String) {
        state.withLock { $0.pending -= 1 }
        settled(delivery.request.id)
        let metadata: Logger.Metadata = [
            "request_id": "\(delivery.request.id)", "webhook_id": "\(delivery.id)",
            "webhook_host": "\(delivery.target.authority)",
            "attempts": "\(attempts)", "last": "\(reason)",
        ]
        switch outcome {
        case .delivered:
            delivered.increment()
            logger.debug("webhook delivered", metadata: metadata)
        case .failed:
            failed.increment()
            logger.warning("webhook not delivered", metadata: metadata)
        }
    }

    /// One attempt: resolve (and re-check) the host, then POST the signed body.
    private func send(_ delivery: Delivery, body: [UInt8]) async -> AttemptResult {
        let target = delivery.target
        var url = target.url
        var pinnedHost: String?
        if case .name(let name) = target.host, !(target.isHTTPS && configuration.allowPrivate) {
            let addresses: [IPAddress]
            do {
                addresses = try await resolve(name)
            } catch {
                return .transport("cannot resolve \(name): \(error)")
            }
            guard let first = addresses.first(where: \.isIPv4) ?? addresses.first else {
                return .transport("\(name) has no addresses")
            }
            if !configuration.allowPrivate, let bad = addresses.lazy.compactMap(WebhookTarget.forbiddenReason).first {
                return .forbidden("\(name) resolves to a forbidden address: \(bad)")
            }
            // Plain HTTP goes to the address just checked (no second lookup to rebind). HTTPS keeps the name: the
            // certificate must match it, which an internal service behind a rebound name cannot offer.
            if !target.isHTTPS {
                url = target.url(pinnedTo: first)
                pinnedHost = target.authority
            }
        }

        guard let http = client.withLock({ $0 }) else { return .transport("the dispatcher is not running") }
        let timestamp = Int64(Timestamp.now().secondsSinceEpoch)
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        if let pinnedHost { request.headers.add(name: "host", value: pinnedHost) }
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "user-agent", value: configuration.userAgent)
        // fal's headers and signature (PROTOCOL.md §11.4), signed again at every attempt: receivers refuse a
        // timestamp older than 5 minutes. `X-Relay-Webhook-Id` stays the same across retries, to deduplicate on.
        let userID = delivery.request.ownerKeyID ?? "anonymous"
        request.headers.add(name: "x-relay-webhook-id", value: delivery.id)
        request.headers.add(name: "x-fal-webhook-request-id", value: delivery.request.id)
        request.headers.add(name: "x-fal-webhook-user-id", value: userID)
        request.headers.add(name: "x-fal-webhook-timestamp", value: String(timestamp))
        request.headers.add(
            name: "x-fal-webhook-signature",
            value: signer.signature(requestID: delivery.request.id, userID: userID, timestamp: timestamp, body: body)
        )
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await http.execute(
                request,
                deadline: .now() + TimeAmount(configuration.timeout),
                logger: logger
            )
            // The answer's body means nothing to us; read a little so the connection can be reused.
            _ = try? await response.body.collect(upTo: 64 << 10)
            return .answered(
                status: Int(response.status.code),
                retryAfter: RetryPolicy.retryAfter(response.headers.first(name: "retry-after"))
            )
        } catch {
            return .transport("\(error)")
        }
    }

    // MARK: - Resolution

    /// Blocking `getaddrinfo`: run it on a thread pool, never on an event loop.
    static func systemResolve(_ host: String) throws -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Darwin)
        hints.ai_socktype = SOCK_STREAM
        #else
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let first = list else {
            throw ResolutionError(message: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(first) }
        var addresses: [IPAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            if let socketAddress = entry.pointee.ai_addr {
                switch Int32(socketAddress.pointee.sa_family) {
                case AF_INET:
                    let address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                        $0.pointee.sin_addr
                    }
                    if let parsed = withUnsafeBytes(of: address, { IPAddress(bytes: Array($0)) }) {
                        addresses.append(parsed)
                    }
                case AF_INET6:
                    let address = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                        $0.pointee.sin6_addr
                    }
                    if let parsed = withUnsafeBytes(of: address, { IPAddress(bytes: Array($0)) }) {
                        addresses.append(parsed)
                    }
                default:
                    break
                }
            }
            cursor = entry.pointee.ai_next
        }
        return addresses
    }

    struct ResolutionError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}
