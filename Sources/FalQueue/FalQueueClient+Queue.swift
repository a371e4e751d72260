import AsyncHTTPClient
public import NIOCore
public import RelayCore

/// What a queue's submit answer names (PROTOCOL.md §3.1): where to follow, fetch and cancel the request.
public struct FalQueueHandle: Sendable, Hashable {
    public let requestID: String
    public let statusURL: String
    public let responseURL: String
    public let cancelURL: String

    public init(requestID: String, statusURL: String, responseURL: String, cancelURL: String) {
        self.requestID = requestID
        self.statusURL = statusURL
        self.responseURL = responseURL
        self.cancelURL = cancelURL
    }

    /// From a submit answer; URLs the answer lacks (or that are not http(s)) are fal's canonical ones under
    /// `baseURL`. nil without a `request_id`.
    public init?(answer: JSONValue, baseURL: String, endpoint: String) {
        guard let requestID = answer["request_id"]?.stringValue, !requestID.isEmpty else { return nil }
        let canonical = baseURL + "/" + (EndpointID(endpoint)?.app ?? endpoint) + "/requests/" + requestID
        func url(_ key: String, _ fallback: String) -> String {
            guard let text = answer[key]?.stringValue, FalURL.isHTTP(text) else { return fallback }
            return text
        }
        let responseURL = url("response_url", canonical)
        self.init(
            requestID: requestID,
            statusURL: url("status_url", responseURL + "/status"),
            responseURL: responseURL,
            cancelURL: url("cancel_url", responseURL + "/cancel")
        )
    }

    public var urls: [String] { [statusURL, responseURL, cancelURL] }
}

extension FalQueueClient {
    /// The queue answered, but not in fal's protocol (no `request_id`, a status that is not a status object).
    public struct ProtocolError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// The answer to a submit.
    public enum Submitted: Sendable {
        case accepted(FalQueueHandle, Reply)
        /// A non-2xx final answer: the caller decides what it means.
        case refused(Reply)
    }

    /// How a request ended, as far as following it goes.
    public enum Followed: Sendable {
        /// The COMPLETED status object (with `error` when the request failed).
        case completed(JSONValue)
        /// A status poll got a non-2xx final answer.
        case refused(Reply)
    }

    /// Timeouts and bounds of the protocol steps.
    public struct Limits: Sendable {
        /// One submit, status, result or cancel exchange.
        public var requestTimeout: Duration
        /// Largest JSON body (submit, status, result) and status-stream event.
        public var maxJSONBytes: Int
        /// Follow `{status_url}/stream` first (polling takes over when it is unavailable or drops).
        public var useStatusStream: Bool
        /// The pause after the n-th status poll (1-based).
        public var pollInterval: @Sendable (Int) -> Duration

        public init(
            requestTimeout: Duration,
            maxJSONBytes: Int,
            useStatusStream: Bool = true,
            pollInterval: @escaping @Sendable (Int) -> Duration
        ) {
            self.requestTimeout = requestTimeout
            self.maxJSONBytes = maxJSONBytes
            self.useStatusStream = useStatusStream
            self.pollInterval = pollInterval
        }
    }

    /// `POST {base}/{endpoint}`. Shielded from cancellation: once it may be on the wire it runs to its end, so that
    /// a request it created is known and can be cancelled instead of running on unseen; `keepTrying` says whether
    /// its owner still wants it (a retry is not started otherwise).
    ///
    /// `headers` go with the POST (fal's platform headers, by name); `noRetry` (`x-fal-no-retry`) makes it one
    /// attempt, whatever the client's policy.
    public func submit(
        endpoint: String,
        input: ByteBuffer,
        headers: [(String, String)] = [],
        noRetry: Bool = false,
        limits: Limits,
        keepTrying: @escaping @Sendable () -> Bool = { true }
    ) async throws -> Submitted {
        var call = Call(
            method: .POST,
            url: configuration.baseURL + "/" + endpoint,
            body: input,
            replay: .onlyIfNotAccepted,
            timeout: limits.requestTimeout,
            maxBodyBytes: limits.maxJSONBytes,
            purpose: "submit"
        )
        call.headers = headers
        if noRetry {
            var once = configuration.retry
            once.maxAttempts = 1
            call.retry = once
        }
        let reply = try await Task { try await self.send(call, keepTrying: keepTrying) }.value
        guard reply.isSuccess else { return .refused(reply) }
        guard let answer = reply.json,
            let handle = FalQueueHandle(answer: answer, baseURL: configuration.baseURL, endpoint: endpoint)
        else {
            throw ProtocolError(description: "the submit answer holds no request_id: \(Self.excerpt(reply.body))")
        }
        trust(handle.urls)
        return .accepted(handle, reply)
    }

    /// Follows a request to COMPLETED: its status stream first (events reach `onStatus` with `streamed` set, logs
    /// incremental), then polling (logs cumulative) when the stream is off, unavailable, malformed or drops.
    /// `onFallback` hears why the stream was left.
    public func follow(
        _ handle: FalQueueHandle,
        limits: Limits,
        keepTrying: @escaping @Sendable () -> Bool = { true },
        onFallback: @Sendable (String) async -> Void = { _ in },
        onStatus: @Sendable (_ status: JSONValue, _ streamed: Bool) async -> Void
    ) async throws -> Followed {
        trust(handle.urls)
        if limits.useStatusStream {
            switch try await followStream(handle, limits: limits, onStatus: onStatus) {
            case .success(let completed):
                return .completed(completed)
            case .failure(let reason):
                await onFallback(reason.description)
            }
        }
        let call = Call(
            method: .GET,
            url: FalURL.appending("", query: "logs=1", to: handle.statusURL),
            replay: .safe,
            timeout: limits.requestTimeout,
            maxBodyBytes: limits.maxJSONBytes,
            purpose: "status"
        )
        var polls = 0
        while true {
            let reply = try await send(call, keepTrying: keepTrying)
            guard reply.isSuccess else { return .refused(reply) }
            guard let status = reply.json, let state = status["status"]?.stringValue else {
                throw ProtocolError(
                    description: "the status answer is not a status object: \(Self.excerpt(reply.body))"
                )
            }
            await onStatus(status, false)
            if state == "COMPLETED" { return .completed(status) }
            polls += 1
            try await Task.sleep(for: limits.pollInterval(polls))
        }
    }

    /// Why the status stream was left for polling.
    struct StreamBreak: Error, CustomStringConvertible {
        let description: String
    }

    /// `{status_url}/stream?logs=1` to its COMPLETED event, or why it could not be followed there.
    private func followStream(
        _ handle: FalQueueHandle,
        limits: Limits,
        onStatus: @Sendable (JSONValue, Bool) async -> Void
    ) async throws -> Result<JSONValue, StreamBreak> {
        let url = FalURL.appending("/stream", query: "logs=1", to: handle.statusURL)
        let response: HTTPClientResponse
        do {
            response = try await open(
                url,
                accept: "text/event-stream",
                timeout: limits.requestTimeout,
                purpose: "status stream"
            )
        } catch let failure as TransportFailure {
            return .failure(StreamBreak(description: "\(failure.underlying)"))
        }
        let contentType = response.headers.first(name: "content-type")?.lowercased() ?? ""
        guard (200..<300).contains(response.status.code) else {
            let body = (try? await response.body.collect(upTo: 64 << 10)) ?? ByteBuffer()
            let reply = Reply(status: Int(response.status.code), headers: response.headers, body: body)
            return .failure(StreamBreak(description: FalErrorText.describe(reply)))
        }
        guard contentType.hasPrefix("text/event-stream") else {
            return .failure(StreamBreak(description: "the status stream is \(contentType), not text/event-stream"))
        }
        var parser = FalEventStreamParser(maxEventBytes: limits.maxJSONBytes)
        do {
            for try await chunk in response.body {
                for event in try parser.feed(chunk) where event.readableBytes > 0 {
                    guard let status = try? event.withUnsafeReadableBytes({ try JSONValue(parsing: $0) }),
                        let state = status["status"]?.stringValue
                    else {
                        return .failure(StreamBreak(description: "a malformed event: \(Self.excerpt(event))"))
                    }
                    await onStatus(status, true)
                    if state == "COMPLETED" { return .success(status) }
                }
            }
            return .failure(StreamBreak(description: "the stream ended before COMPLETED"))
        } catch {
            if Task.isCancelled || error is CancellationError { throw CancellationError() }
            return .failure(StreamBreak(description: "the stream dropped: \(error)"))
        }
    }

    /// `GET {response_url}`: the result, or the request's error answer.
    public func result(
        _ handle: FalQueueHandle,
        limits: Limits,
        countsForHealth: Bool = true,
        keepTrying: @Sendable () -> Bool = { true }
    ) async throws -> Reply {
        trust(handle.urls)
        let call = Call(
            method: .GET,
            url: handle.responseURL,
            replay: .safe,
            timeout: limits.requestTimeout,
            maxBodyBytes: limits.maxJSONBytes,
            countsForHealth: countsForHealth,
            purpose: "result"
        )
        return try await send(call, keepTrying: keepTrying)
    }

    /// `PUT {cancel_url}`.
    public func cancel(_ handle: FalQueueHandle, limits: Limits) async throws -> Reply {
        trust(handle.urls)
        let call = Call(
            method: .PUT,
            url: handle.cancelURL,
            replay: .safe,
            timeout: limits.requestTimeout,
            maxBodyBytes: 64 << 10,
            purpose: "cancel"
        )
        return try await send(call)
    }

    /// The first 200 bytes of a body, for messages.
    public static func excerpt(_ buffer: ByteBuffer) -> String {
        let text = String(decoding: buffer.readableBytesView.prefix(200), as: UTF8.self)
        return buffer.readableBytes > 200 ? text + "…" : text
    }
}
