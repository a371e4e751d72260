public import AsyncHTTPClient
public import Logging
public import NIOCore
public import NIOHTTP1
import NIOPosix
public import NIOSSL
public import RelayCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// fal's queue API as calls (PROTOCOL.md §3), for every part of MediaRelay that is a queue *client*: the origin
/// upstream, `media-relay submit`, and (its event-stream parser) a node following a peer's job.
///
/// One HTTP client, one retry policy, one credentials rule. Every call either returns the queue's final answer (any
/// status: the caller decides what a 4xx means) or throws `TransportFailure`, `BodyTooLarge` or
/// `CancellationError`. The API key goes only to the base URL's origin and to the origins of the URLs a submit
/// answer hands back (status, response, cancel): never to a third-party media host.
public final class FalQueueClient: Sendable {
    public struct Configuration: Sendable {
        /// The queue API's base URL, e.g. `https://queue.fal.run`, without trailing slashes.
        public var baseURL: String
        /// Sent as `Authorization: Key …` to trusted origins. nil = no header.
        public var apiKey: String?
        public var userAgent: String
        public var tls: TLSConfiguration
        /// TCP (and TLS) connect timeout.
        public var connectTimeout: Duration = .seconds(10)
        /// The longest silence on an open connection (read idle timeout).
        public var idleTimeout: Duration = .seconds(60)
        /// Redirects followed for a call (0 = none).
        public var maxRedirects: Int = 0
        public var retry: RetryPolicy = RetryPolicy()

        public init(baseURL: String, apiKey: String?, userAgent: String, tls: TLSConfiguration) {
            var base = baseURL
            while base.hasSuffix("/") { base.removeLast() }
            self.baseURL = base
            self.apiKey = apiKey
            self.userAgent = userAgent
            self.tls = tls
        }
    }

    /// One call to make.
    public struct Call: Sendable {
        public var method: HTTPMethod
        public var url: String
        /// A JSON body.
        public var body: ByteBuffer?
        public var accept: String
        public var replay: RetryPolicy.Replay
        /// One attempt, up to its response head (and, with `maxBodyBytes`, its whole body).
        public var timeout: Duration
        public var maxBodyBytes: Int
        /// Send the API key (to a trusted origin only).
        public var credentials: Bool
        /// The outcome counts for the queue's health (API calls, not third-party media hosts).
        public var countsForHealth: Bool
        /// What the call is for, in messages: "submit", "status", "result", "cancel", "media".
        public var purpose: String
        /// Headers sent besides the client's own (fal's platform headers on a submit).
        public var headers: [(String, String)] = []
        /// This call's retry policy, when not the client's (`x-fal-no-retry`: one attempt).
        public var retry: RetryPolicy?

        public init(
            method: HTTPMethod,
            url: String,
            body: ByteBuffer? = nil,
            accept: String = "application/json",
            replay: RetryPolicy.Replay,
            timeout: Duration,
            maxBodyBytes: Int,
            credentials: Bool = true,
            countsForHealth: Bool = true,
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
            self.countsForHealth = countsForHealth
            self.purpose = purpose
        }
    }

    /// The queue's final answer to a call.
    public struct Reply: Sendable {
        public let status: Int
        public let headers: HTTPHeaders
        public let body: ByteBuffer
        /// Attempts it took (1 = no retry).
        public let attempts: Int

        public init(status: Int, headers: HTTPHeaders, body: ByteBuffer, attempts: Int = 1) {
            self.status = status
            self.headers = headers
            self.body = body
            self.attempts = attempts
        }

        public var isSuccess: Bool { (200..<300).contains(status) }
        /// The body as JSON, if it is.
        public var json: JSONValue? { try? body.withUnsafeReadableBytes { try JSONValue(parsing: $0) } }
    }

    /// The call never got a final answer: the connection failed on every attempt the policy allowed.
    public struct TransportFailure: Error, Sendable, CustomStringConvertible {
        public let phase: RetryPolicy.TransportPhase
        public let attempts: Int
        public let purpose: String
        public let url: String
        public let underlying: any Error

        /// The certificate or handshake was refused (a missing CA, most likely).
        public var isTLS: Bool { underlying is NIOSSLError || underlying is NIOSSLExtraError }
        public var description: String {
            let tries = attempts == 1 ? "" : " after \(attempts) attempts"
            return "cannot reach \(url) for \(purpose)\(tries): \(underlying)"
        }
    }

    /// A response body past the call's `maxBodyBytes`.
    public struct BodyTooLarge: Error, Sendable, CustomStringConvertible {
        public let limit: Int
        public let purpose: String
        public var description: String { "the \(purpose) response exceeds \(limit) bytes" }
    }

    /// A retry about to happen, for a caller that reports them (a progress display, a log).
    public struct RetryNote: Sendable {
        public let purpose: String
        /// The attempt that failed (1-based).
        public let attempt: Int
        public let delay: Duration
        /// `HTTP 429` or the transport error.
        public let reason: String
        /// The answer that is retried (nil after a transport error).
        public let reply: Reply?
    }

    public let configuration: Configuration
    /// `scheme://authority` of the base URL, lowercased.
    public let baseOrigin: String
    private let http: HTTPClient
    private let trustedOrigins: Mutex<Set<String>>
    private let logger: Logger
    /// Told the outcome of every call that counts for health (a circuit breaker listens).
    private let health: (@Sendable (_ healthy: Bool) -> Void)?
    private let retryNotes: (@Sendable (RetryNote) async -> Void)?

    /// At most this many origins get the key: the base's and those a queue named in its answers.
    static let maxTrustedOrigins = 64

    public init(
        configuration: Configuration,
        eventLoopGroup: any EventLoopGroup = HTTPClient.defaultEventLoopGroup,
        logger: Logger,
        health: (@Sendable (_ healthy: Bool) -> Void)? = nil,
        retryNotes: (@Sendable (RetryNote) async -> Void)? = nil
    ) throws(ConfigurationError) {
        guard let origin = FalURL.origin(of: configuration.baseURL) else {
            throw ConfigurationError("\"\(configuration.baseURL)\" is not an http(s) URL")
        }
        var settings = HTTPClient.Configuration(
            tlsConfiguration: configuration.tls,
            redirectConfiguration: configuration.maxRedirects > 0
                ? .follow(max: configuration.maxRedirects, allowCycles: false) : .disallow,
            timeout: .init(
                connect: TimeAmount(configuration.connectTimeout),
                read: TimeAmount(configuration.idleTimeout)
            )
        )
        // Refused connections surface at once and go through the retry policy (jitter, attempt count, health)
        // instead of AHC's own silent reconnect loop.
        settings.connectionPool.retryConnectionEstablishment = false
        self.http = HTTPClient(
            eventLoopGroup: eventLoopGroup,
            configuration: settings,
            backgroundActivityLogger: logger
        )
        self.configuration = configuration
        self.baseOrigin = origin
        self.trustedOrigins = Mutex([origin])
        self.logger = logger
        self.health = health
        self.retryNotes = retryNotes
    }

    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// Whether `url` is on the base URL's scheme, host and port.
    public func isOnBase(_ url: String) -> Bool {
        FalURL.origin(of: url) == baseOrigin
    }

    /// Trusts the origins of the URLs a queue handed back, so that calls there carry the key.
    func trust(_ urls: [String]) {
        trustedOrigins.withLock { origins in
            for url in urls {
                guard origins.count < Self.maxTrustedOrigins, let origin = FalURL.origin(of: url) else { continue }
                origins.insert(origin)
            }
        }
    }

    // MARK: - Calls

    /// Makes the call, repeating it as the retry policy allows while `keepTrying()` holds.
    public func send(_ call: Call, keepTrying: @Sendable () -> Bool = { true }) async throws -> Reply {
        let request = makeRequest(call)
        let policy = call.retry ?? configuration.retry
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
                if policy.retryableStatuses.contains(status) {
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
                        if call.countsForHealth { health?(true) }
                        throw BodyTooLarge(limit: call.maxBodyBytes, purpose: call.purpose)
                    }
                    if call.countsForHealth { health?(status < 500) }
                    return Reply(status: status, headers: headers, body: body, attempts: attempt)
                }
            } catch let error as BodyTooLarge {
                throw error
            } catch {
                if Task.isCancelled || error is CancellationError { throw CancellationError() }
                transportError = error
                failure = .transport(Self.phase(of: error))
            }
            let decision = policy.decision(
                after: failure,
                attempt: attempt,
                replay: call.replay,
                using: &generator
            )
            if case .retry(let delay) = decision, keepTrying() {
                let reason = transportError.map { "\($0)" } ?? "HTTP \(last?.status ?? 0)"
                logger.info(
                    "retrying queue call",
                    metadata: [
                        "purpose": "\(call.purpose)", "attempt": "\(attempt)", "delay": "\(delay)",
                        "failure": "\(reason)",
                    ]
                )
                await retryNotes?(
                    RetryNote(purpose: call.purpose, attempt: attempt, delay: delay, reason: reason, reply: last)
                )
                try await Task.sleep(for: delay)
                // A shielded submit is not cancelled; its owner says through `keepTrying` that it gave up meanwhile.
                guard keepTrying() else { throw CancellationError() }
                attempt += 1
                continue
            }
            if call.countsForHealth { health?(false) }
            if let last { return last }
            throw TransportFailure(
                phase: Self.phase(of: transportError),
                attempts: attempt,
                purpose: call.purpose,
                url: call.url,
                underlying: transportError ?? CancellationError()
            )
        }
    }

    /// Opens a streaming GET (a status stream, a media download) and returns at its response head; the caller
    /// reads the body (bounded by the idle timeout) and decides what its status means. A transport failure is
    /// retried by the policy when `retrying` (a download); a status stream tries once and falls back instead.
    public func open(
        _ url: String,
        accept: String,
        timeout: Duration,
        credentials: Bool = true,
        retrying: Bool = false,
        purpose: String
    ) async throws -> HTTPClientResponse {
        let call = Call(
            method: .GET,
            url: url,
            accept: accept,
            replay: .safe,
            timeout: timeout,
            maxBodyBytes: 0,
            credentials: credentials,
            countsForHealth: false,
            purpose: purpose
        )
        let request = makeRequest(call)
        var generator = SystemRandomNumberGenerator()
        var attempt = 1
        while true {
            do {
                return try await http.execute(request, deadline: .now() + TimeAmount(timeout), logger: logger)
            } catch {
                if Task.isCancelled || error is CancellationError { throw CancellationError() }
                let phase = Self.phase(of: error)
                let decision = configuration.retry.decision(
                    after: .transport(phase),
                    attempt: attempt,
                    replay: .safe,
                    using: &generator
                )
                guard retrying, case .retry(let delay) = decision else {
                    throw TransportFailure(
                        phase: phase,
                        attempts: attempt,
                        purpose: purpose,
                        url: url,
                        underlying: error
                    )
                }
                await retryNotes?(
                    RetryNote(purpose: purpose, attempt: attempt, delay: delay, reason: "\(error)", reply: nil)
                )
                try await Task.sleep(for: delay)
                attempt += 1
            }
        }
    }

    private func makeRequest(_ call: Call) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: call.url)
        request.method = call.method
        request.headers.add(name: "user-agent", value: configuration.userAgent)
        request.headers.add(name: "accept", value: call.accept)
        for (name, value) in call.headers { request.headers.add(name: name, value: value) }
        if call.credentials, let key = configuration.apiKey, let origin = FalURL.origin(of: call.url),
            trustedOrigins.withLock({ $0.contains(origin) })
        {
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

    /// A client that cannot be built: a base URL that is not http(s).
    public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
        public let description: String

        public init(_ description: String) {
            self.description = description
        }
    }

    /// Where a transport error happened: before the request could leave, or possibly after.
    public static func phase(of error: (any Error)?) -> RetryPolicy.TransportPhase {
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
}
