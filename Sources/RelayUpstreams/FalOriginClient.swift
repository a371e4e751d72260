import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import RelayCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The origin's queue API as calls: one HTTP client, the retry policy and the circuit breaker around every call.
///
/// Every call either returns the origin's final answer (any status: the caller decides what a 4xx means), or throws
/// a `FalError` for the job (origin unreachable after retries, body too large) or `CancellationError`.
final class FalOriginClient: Sendable {
    /// One call to make.
    struct Call: Sendable {
        var method: HTTPMethod
        var url: String
        var body: ByteBuffer?
        var accept: String
        var replay: RetryPolicy.Replay
        var timeout: Duration
        var maxBodyBytes: Int
        /// Send `Authorization: Key …` (API calls; media only on the origin's own host).
        var credentials: Bool
        /// Outcome counts for the circuit breaker (API calls, not third-party media hosts).
        var countsForBreaker: Bool
        /// What the call is for, in messages: "submit", "status", "result", "cancel", "media".
        var purpose: String

        init(
            method: HTTPMethod,
            url: String,
            body: ByteBuffer? = nil,
            accept: String = "application/json",
            replay: RetryPolicy.Replay,
            timeout: Duration,
            maxBodyBytes: Int,
            credentials: Bool = true,
            countsForBreaker: Bool = true,
            purpose: String
        ) {
            self.method = method
            self.url = url
            self.body = body
            self.accept = accept
            self.replay = replay
            self.timeout = timeout
            self.maxBodyBytes = maxBodyBytes
            self.credentials = credentials
            self.countsForBreaker = countsForBreaker
            self.purpose = purpose
        }
    }

    /// The origin's final answer to a call.
    struct Reply: Sendable {
        let status: Int
        let headers: HTTPHeaders
        let body: ByteBuffer
        /// Attempts it took (1 = no retry).
        let attempts: Int

        var isSuccess: Bool { (200..<300).contains(status) }
    }

    let configuration: FalOriginUpstream.Configuration
    /// `scheme://authority` of the base URL, lowercased: media there get the credentials.
    let baseOrigin: String
    private let http: HTTPClient
    private let breaker: Mutex<OriginCircuitBreaker>
    private let logger: Logger

    /// Builds the HTTP client; throws when the extra CA file cannot be read.
    init(configuration: FalOriginUpstream.Configuration, eventLoopGroup: any EventLoopGroup, logger: Logger) throws {
        guard FalOriginMediaReferences.isHTTPURL(configuration.baseURL), Self.origin(of: configuration.baseURL) != nil
        else {
            throw FalOriginUpstream.ConfigurationError("origin URL \"\(configuration.baseURL)\" is not an http(s) URL")
        }
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
        var settings = HTTPClient.Configuration(
            tlsConfiguration: tls,
            timeout: .init(
                connect: TimeAmount(configuration.connectTimeout),
                read: TimeAmount(configuration.idleTimeout)
            )
        )
        // Refused connections surface at once and go through RetryPolicy (jitter, attempt count, breaker) instead of
        // AHC's own silent reconnect loop.
        settings.connectionPool.retryConnectionEstablishment = false
        self.http = HTTPClient(
            eventLoopGroup: eventLoopGroup,
            configuration: settings,
            backgroundActivityLogger: logger
        )
        self.configuration = configuration
        self.baseOrigin = Self.origin(of: configuration.baseURL) ?? configuration.baseURL.lowercased()
        self.breaker = Mutex(OriginCircuitBreaker(configuration: configuration.breaker))
        self.logger = logger
    }

    func shutdown() async throws {
        try await http.shutdown()
    }

    // MARK: - Circuit breaker

    func acquire() -> OriginCircuitBreaker.Permission {
        breaker.withLock { $0.acquire(now: configuration.now()) }
    }

    func abandonProbe(_ ticket: Int) {
        breaker.withLock { $0.abandonProbe(ticket) }
    }

    var circuitState: OriginCircuitBreaker.State {
        breaker.withLock { $0.state }
    }

    private func recordOutcome(healthy: Bool) {
        breaker.withLock { breaker in
            if healthy { breaker.recordSuccess() } else { breaker.recordFailure(now: configuration.now()) }
        }
    }

    // MARK: - Calls

    /// Makes the call, repeating it as the retry policy allows while `keepTrying()` holds.
    func send(_ call: Call, keepTrying: @Sendable () -> Bool = { true }) async throws -> Reply {
        let request = makeRequest(call)
        var generator = SystemRandomNumberGenerator()
        var attempt = 1
        while true {
            try Task.checkCancellation()
            let failure: RetryPolicy.Failure
            var last: Reply?
            var transportError: (any Error)?
            do {
                let response = try await http.execute(
                    request,
                    deadline: .now() + TimeAmount(call.timeout),
                    logger: logger
                )
                let status = Int(response.status.code)
                let headers = response.headers
                if configuration.retry.retryableStatuses.contains(status) {
                    // Read a little of it for the message; the rest is dropped with the connection.
                    let body = (try? await response.body.collect(upTo: 64 << 10)) ?? ByteBuffer()
                    last = Reply(status: status, headers: headers, body: body, attempts: attempt)
                    failure = .status(
                        status,
                        retryAfter: RetryPolicy.retryAfter(headers.first(name: "retry-after")),
                        userTimeout: headers.contains(name: "x-fal-request-timeout-type")
                    )
                } else {
                    let body: ByteBuffer
                    do {
                        body = try await response.body.collect(upTo: call.maxBodyBytes)
                    } catch is NIOTooManyBytesError {
                        if call.countsForBreaker { recordOutcome(healthy: true) }
                        throw FalError.badGateway(
                            "origin \(baseOrigin) \(call.purpose) response exceeds \(call.maxBodyBytes) bytes"
                        )
                    }
                    if call.countsForBreaker { recordOutcome(healthy: status < 500) }
                    return Reply(status: status, headers: headers, body: body, attempts: attempt)
                }
            } catch let error as FalError {
                throw error
            } catch {
                if Task.isCancelled || error is CancellationError { throw CancellationError() }
                transportError = error
                failure = .transport(Self.phase(of: error))
            }
            let decision = configuration.retry.decision(
                after: failure,
                attempt: attempt,
                replay: call.replay,
                using: &generator
            )
            if case .retry(let delay) = decision, keepTrying() {
                logger.info(
                    "retrying origin call",
                    metadata: [
                        "purpose": "\(call.purpose)", "attempt": "\(attempt)", "delay": "\(delay)",
                        "failure": "\(transportError.map { "\($0)" } ?? "HTTP \(last?.status ?? 0)")",
                    ]
                )
                try await Task.sleep(for: delay)
                // A shielded submit is not cancelled; its owner says through `keepTrying` that it gave up meanwhile.
                guard keepTrying() else { throw CancellationError() }
                attempt += 1
                continue
            }
            if call.countsForBreaker { recordOutcome(healthy: false) }
            if let last { return last }
            throw Self.transportFailure(
                transportError,
                phase: Self.phase(of: transportError),
                call: call,
                attempts: attempt,
                origin: baseOrigin
            )
        }
    }

    /// Opens a streaming GET (the status stream): one attempt, no retry; the caller reads and falls back.
    func open(_ url: String, accept: String, timeout: Duration) async throws -> HTTPClientResponse {
        let call = Call(
            method: .GET,
            url: url,
            accept: accept,
            replay: .safe,
            timeout: timeout,
            maxBodyBytes: 0,
            purpose: "status stream"
        )
        return try await http.execute(makeRequest(call), deadline: .now() + TimeAmount(timeout), logger: logger)
    }

    /// Whether `url` is on the origin's own scheme, host and port.
    func isOnOrigin(_ url: String) -> Bool {
        Self.origin(of: url) == baseOrigin
    }

    private func makeRequest(_ call: Call) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: call.url)
        request.method = call.method
        request.headers.add(name: "user-agent", value: configuration.userAgent)
        request.headers.add(name: "accept", value: call.accept)
        if call.credentials, let key = configuration.apiKey {
            request.headers.add(name: "authorization", value: "Key \(key)")
        }
        if let body = call.body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(body)
        } else if call.method == .PUT || call.method == .POST {
            request.body = .bytes(ByteBuffer())
        }
        return request
    }

    // MARK: - Errors

    /// Where a transport error happened: before the request could leave, or possibly after.
    static func phase(of error: (any Error)?) -> RetryPolicy.TransportPhase {
        switch error {
        case let error as HTTPClientError:
            switch error {
            case .connectTimeout, .getConnectionFromPoolTimeout, .tlsHandshakeTimeout, .socksHandshakeTimeout,
                .httpProxyHandshakeTimeout:
                return .connect
            case .invalidURL, .emptyHost, .emptyScheme, .alreadyShutdown, .missingSocketPath:
                return .permanent
            default:
                return "\(error)".contains("unsupportedScheme") ? .permanent : .exchange
            }
        case is NIOConnectionError:
            return .connect
        case let error as ChannelError:
            if case .connectTimeout = error { return .connect }
            return .exchange
        case let error as IOError:
            switch error.errnoCode {
            case ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL:
                return .connect
            default:
                return .exchange
            }
        case let error as NIOSSLError:
            if case .handshakeFailed = error { return .permanent }
            return .exchange
        case is NIOSSLExtraError:
            return .permanent
        default:
            return .exchange
        }
    }

    private static func transportFailure(
        _ error: (any Error)?,
        phase: RetryPolicy.TransportPhase,
        call: Call,
        attempts: Int,
        origin: String
    ) -> FalError {
        let reason = error.map { "\($0)" } ?? "unknown error"
        let tries = attempts == 1 ? "" : " after \(attempts) attempts"
        switch phase {
        case .connect where !call.countsForBreaker:
            return .badGateway("media host unreachable for \(call.url)\(tries): \(reason)")
        case .connect:
            return .unavailable(
                "origin \(origin) unreachable for \(call.purpose)\(tries): \(reason)",
                type: "runner_connection_refused"
            )
        case .permanent:
            return .badGateway("origin \(origin) \(call.purpose) cannot be sent (TLS or URL): \(reason)")
        case .exchange where call.replay == .onlyIfNotAccepted:
            return .unavailable(
                "connection to the origin \(origin) failed during \(call.purpose) (not resubmitted: the job may exist): \(reason)",
                type: "runner_disconnected"
            )
        case .exchange:
            return .unavailable(
                "origin \(origin) \(call.purpose) failed\(tries): \(reason)",
                type: "runner_disconnected"
            )
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
        switch detail {
        case .string(let text)?:
            return text
        case .array(let list)?:
            return list.map { $0["msg"]?.stringValue ?? $0.serializedString }.joined(separator: "; ")
        case let other? where other != .null:
            return other.serializedString
        default:
            let text = String(decoding: body.readableBytesView.prefix(300), as: UTF8.self)
            return text.isEmpty ? "HTTP \(status)" : text
        }
    }

    /// `scheme://authority` of a URL, lowercased; nil when it has no scheme.
    static func origin(of url: String) -> String? {
        guard let range = url.firstRange(of: "://") else { return nil }
        let authority = url[range.upperBound...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        return (url[..<range.upperBound] + authority).lowercased()
    }
}
