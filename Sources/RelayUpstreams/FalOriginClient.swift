import AsyncHTTPClient
import FalQueue
import Logging
import NIOCore
import NIOSSL
import RelayCore
import Synchronization

/// The origin's queue API for the relay's jobs: the shared fal queue client (`FalQueueClient`: calls, retries,
/// protocol steps) with the circuit breaker listening to every API call, and the mapping of what goes wrong to the
/// `FalError` a job fails with.
final class FalOriginClient: Sendable {
    typealias Reply = FalQueueClient.Reply

    let configuration: FalOriginUpstream.Configuration
    let queue: FalQueueClient
    /// `scheme://authority` of the base URL, lowercased: media there get the credentials.
    var baseOrigin: String { queue.baseOrigin }
    private let breaker: SharedBreaker

    /// Builds the HTTP client; throws when the URL is not http(s) or the extra CA file cannot be read.
    init(configuration: FalOriginUpstream.Configuration, eventLoopGroup: any EventLoopGroup, logger: Logger) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let path = configuration.additionalCAPath {
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(path)
            } catch {
                throw FalOriginUpstream.ConfigurationError("cannot read the origin CA file \(path): \(error)")
            }
            guard !certificates.isEmpty else {
                throw FalOriginUpstream.ConfigurationError("the origin CA file \(path) holds no PEM certificate")
            }
            tls.additionalTrustRoots = [.certificates(certificates)]
        }
        var settings = FalQueueClient.Configuration(
            baseURL: configuration.baseURL,
            apiKey: configuration.apiKey,
            userAgent: configuration.userAgent,
            tls: tls
        )
        settings.connectTimeout = configuration.connectTimeout
        settings.idleTimeout = configuration.idleTimeout
        settings.retry = configuration.retry
        let breaker = SharedBreaker(OriginCircuitBreaker(configuration: configuration.breaker))
        let now = configuration.now
        do {
            self.queue = try FalQueueClient(
                configuration: settings,
                eventLoopGroup: eventLoopGroup,
                logger: logger,
                health: { healthy in
                    breaker.state.withLock { breaker in
                        if healthy { breaker.recordSuccess() } else { breaker.recordFailure(now: now()) }
                    }
                }
            )
        } catch {
            throw FalOriginUpstream.ConfigurationError("origin URL \"\(configuration.baseURL)\" is not an http(s) URL")
        }
        self.configuration = configuration
        self.breaker = breaker
    }

    func shutdown() async throws {
        try await queue.shutdown()
    }

    /// The protocol steps' bounds, from the origin's configuration.
    var limits: FalQueueClient.Limits {
        let interval = configuration.statusPollInterval
        return FalQueueClient.Limits(
            requestTimeout: configuration.requestTimeout,
            maxJSONBytes: configuration.maxJSONBytes,
            useStatusStream: configuration.useStatusStream,
            pollInterval: { _ in interval }
        )
    }

    // MARK: - Circuit breaker

    func acquire() -> OriginCircuitBreaker.Permission {
        breaker.state.withLock { $0.acquire(now: configuration.now()) }
    }

    func abandonProbe(_ ticket: Int) {
        breaker.state.withLock { $0.abandonProbe(ticket) }
    }

    var circuitState: OriginCircuitBreaker.State {
        breaker.state.withLock { $0.state }
    }

    // MARK: - Errors

    /// What a queue call's failure means for the job: `FalError`s and cancellation pass; a transport failure and an
    /// oversized body become the job's 503 or 502 naming the origin.
    func jobError(_ error: any Error) -> any Error {
        switch error {
        case let failure as FalQueueClient.TransportFailure:
            return Self.transportFailure(failure, origin: baseOrigin)
        case let tooLarge as FalQueueClient.BodyTooLarge:
            return FalError.badGateway(
                "origin \(baseOrigin) \(tooLarge.purpose) response exceeds \(tooLarge.limit) bytes"
            )
        case let broken as FalQueueClient.ProtocolError:
            return FalError.badGateway("origin \(baseOrigin): \(broken.description)")
        default:
            return error
        }
    }

    private static func transportFailure(_ failure: FalQueueClient.TransportFailure, origin: String) -> FalError {
        let reason = "\(failure.underlying)"
        let tries = failure.attempts == 1 ? "" : " after \(failure.attempts) attempts"
        let purpose = failure.purpose
        switch failure.phase {
        case .connect where purpose == "media":
            return .badGateway("media host unreachable for \(failure.url)\(tries): \(reason)")
        case .connect:
            return .unavailable(
                "origin \(origin) unreachable for \(purpose)\(tries): \(reason)",
                type: "runner_connection_refused"
            )
        case .permanent:
            return .badGateway("origin \(origin) \(purpose) cannot be sent (TLS or URL): \(reason)")
        case .exchange where purpose == "submit":
            return .unavailable(
                "connection to the origin \(origin) failed during submit (not resubmitted: the job may exist): \(reason)",
                type: "runner_disconnected"
            )
        case .exchange:
            return .unavailable("origin \(origin) \(purpose) failed\(tries): \(reason)", type: "runner_disconnected")
        }
    }

    /// The job's error for this origin's non-2xx final answer (after any retries).
    func error(for reply: Reply, purpose: String) -> FalError {
        Self.error(for: reply, purpose: purpose, origin: baseOrigin)
    }

    /// The job's error for an origin's non-2xx final answer: faithful where the client can act on it, and otherwise
    /// clear about whose failure it is (every message names the origin, its HTTP status and error type).
    ///
    /// - 422: the origin's validation issues as they are (the one failure the result cache keeps, briefly).
    /// - 400 and other 4xx but those below: the origin's detail and error type (the request is wrong there too).
    /// - 429 that outlasted every retry: 503 `rate_limited`. Not 429: fal clients retry a 429 on the result fetch.
    /// - 401, 403 (the relay's key), 404 (the origin lost the model or request), every 5xx, anything else: 502
    ///   `upstream_error`.
    static func error(for reply: Reply, purpose: String, origin: String) -> FalError {
        let document = try? reply.body.withUnsafeReadableBytes { try JSONValue(parsing: $0) }
        let errorType = document?["error_type"]?.stringValue ?? reply.headers.first(name: "x-fal-error-type")
        let detail = document?["detail"]
        let message = Self.message(detail: detail, body: reply.body, status: reply.status)
        let answered = "HTTP \(reply.status)" + (errorType.map { " \($0)" } ?? "")
        let tries = reply.attempts > 1 ? " after \(reply.attempts) attempts" : ""
        switch reply.status {
        case 422:
            if let list = detail?.arrayValue, !list.isEmpty {
                return .validation(list.map(Self.issue))
            }
            return .validation(.init(location: ["body"], message: message, type: errorType ?? "value_error"))
        case 400:
            return .badRequest(message, type: errorType ?? "bad_request")
        case 401, 403:
            return .badGateway(
                "origin \(origin) refused the relay's credentials (\(answered)) for \(purpose): \(message)"
            )
        case 404:
            return .badGateway("origin \(origin) answered \(answered) to \(purpose): \(message)")
        case 429:
            return .unavailable(
                "origin \(origin) kept rate-limiting the relay (\(answered)) for \(purpose)\(tries): \(message)",
                type: "rate_limited"
            )
        case 405..<500:
            return .badRequest(
                "origin \(origin) answered \(answered) to \(purpose): \(message)",
                type: errorType ?? "bad_request"
            )
        default:
            return .badGateway("origin \(origin) answered \(answered) to \(purpose)\(tries): \(message)")
        }
    }

    private static func issue(_ entry: JSONValue) -> FalError.ValidationIssue {
        let location = entry["loc"]?.arrayValue?.map { $0.stringValue ?? $0.serializedString } ?? ["body"]
        let message = entry["msg"]?.stringValue ?? entry.serializedString
        return .init(location: location, message: message, type: entry["type"]?.stringValue ?? "value_error")
    }

    private static func message(detail: JSONValue?, body: ByteBuffer, status: Int) -> String {
        if let detail, detail != .null { return FalErrorText.describe(detail: detail) }
        let text = String(decoding: body.readableBytesView.prefix(300), as: UTF8.self)
        return text.isEmpty ? "HTTP \(status)" : text
    }
}

/// The circuit breaker, shared by the client (which asks it) and the queue client's health callback (which feeds it).
private final class SharedBreaker: Sendable {
    let state: Mutex<OriginCircuitBreaker>

    init(_ breaker: OriginCircuitBreaker) {
        self.state = Mutex(breaker)
    }
}
