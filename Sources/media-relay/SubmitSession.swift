import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
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

/// One submission from POST to saved files: the protocol steps, each HTTP call bounded and retried where safe.
final class SubmitSession: Sendable {
    /// The queue's answer to a submit: where to follow the request.
    struct Submission: Sendable {
        let requestID: String
        let statusURL: String
        let responseURL: String
        let cancelURL: String
        let cacheOutcome: String?
    }

    /// A finished HTTP exchange with its whole body.
    struct Reply: Sendable {
        let status: Int
        let headers: HTTPHeaders
        let body: ByteBuffer

        var isSuccess: Bool { (200..<300).contains(status) }
        var json: JSONValue? { try? body.withUnsafeReadableBytes { bytes in try JSONValue(parsing: bytes) } }
    }

    /// Largest JSON body read from the API (results may carry inline data URIs).
    static let maxJSONBytes = 64 << 20
    /// Submits and status reads retried on 429 at most this often.
    static let maxRateLimitAttempts = 5
    /// Longest Retry-After honoured before giving up.
    static let maxRetryAfter: Duration = .seconds(60)

    let plan: SubmitPlan
    let http: HTTPClient
    let display: ProgressDisplay
    let started = ContinuousClock.now
    private let deadline: NIODeadline
    /// Origins that get the API key: the host's, plus those of the URLs it hands back.
    private let trustedOrigins: Mutex<Set<String>>

    init(plan: SubmitPlan, http: HTTPClient, display: ProgressDisplay) {
        self.plan = plan
        self.http = http
        self.display = display
        self.deadline = .now() + .seconds(Int64(plan.timeoutSeconds) + 5)
        self.trustedOrigins = Mutex(Set([WebAddress.origin(of: plan.host)].compactMap { $0 }))
    }

    /// Runs `body`, throwing a timeout failure (and cancelling it) when it outlasts `seconds`.
    static func within<T: Sendable>(seconds: Int, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw SubmitFailure.failed("timed out after \(seconds) s (--timeout)")
            }
            return value
        }
    }

    func run() async throws {
        let submission = try await submit()
        let final: JSONValue
        do {
            final = try await follow(submission)
        } catch {
            if Task.isCancelled {
                // Interrupted or timed out: the job must not run on unattended. The cancelled task cannot make calls,
                // so an unstructured task (not cancelled, bounded by its own deadline) sends the PUT.
                let session = self
                await Task { await session.cancelRemotely(submission) }.value
            }
            throw error
        }
        await display.finish()
        let result = try await fetchResult(submission, final: final)
        let cache = result.headers.first(name: "x-relay-cache") ?? submission.cacheOutcome
        let elapsed = Self.format(ContinuousClock.now - started)
        let cacheNote = cache.map { ", cache \($0)" } ?? ""

        let media = result.json.map(MediaReference.all(in:)) ?? []
        if plan.printJSON || media.isEmpty {
            var body = result.body
            if body.readableBytesView.last != UInt8(ascii: "\n") { body.writeInteger(UInt8(ascii: "\n")) }
            Terminal.write(body, to: STDOUT_FILENO)
            let why = plan.printJSON ? "" : " (no media URL in the result: printed its JSON)"
            await display.note("completed in \(elapsed)\(cacheNote)\(why)")
            return
        }
        try createDirectory(plan.outputDirectory)
        var saved: [String] = []
        for (index, reference) in media.enumerated() {
            let path = try await download(reference, number: index + 1, requestID: submission.requestID)
            Terminal.write(ByteBuffer(string: path + "\n"), to: STDOUT_FILENO)
            saved.append(path)
        }
        let files = saved.count == 1 ? "1 file" : "\(saved.count) files"
        await display.note("completed in \(elapsed)\(cacheNote); saved \(files) to \(plan.outputDirectory)")
    }

    // MARK: - Protocol steps

    private func submit() async throws -> Submission {
        let url = plan.host + "/" + plan.endpoint.description
        // The POST itself is not cancelled midway: a job it created must be known, so that Ctrl-C can cancel it.
        let reply = try await send(.POST, url, body: plan.body, purpose: "submit", shielded: true)
        guard reply.isSuccess else { throw SubmitFailure.failed(Self.describe(reply, purpose: "submit")) }
        guard let json = reply.json, let id = json["request_id"]?.stringValue, !id.isEmpty else {
            throw SubmitFailure.failed("submit: the response holds no request_id (is \(plan.host) a fal queue API?)")
        }
        let canonical = plan.host + "/" + plan.endpoint.app + "/requests/" + id
        func returned(_ name: String, _ fallback: String) -> String {
            guard let value = json[name]?.stringValue, WebAddress.origin(of: value) != nil else { return fallback }
            return value
        }
        let responseURL = returned("response_url", canonical)
        let submission = Submission(
            requestID: id,
            statusURL: returned("status_url", responseURL + "/status"),
            responseURL: responseURL,
            cancelURL: returned("cancel_url", responseURL + "/cancel"),
            cacheOutcome: reply.headers.first(name: "x-relay-cache")
        )
        trustedOrigins.withLock { origins in
            for address in [submission.statusURL, submission.responseURL, submission.cancelURL] {
                if let origin = WebAddress.origin(of: address) { origins.insert(origin) }
            }
        }
        await display.note("request \(id) submitted to \(plan.host)")
        await display.update(json, logsAreCumulative: true)
        if Task.isCancelled {
            await cancelRemotely(submission)
            throw CancellationError()
        }
        return submission
    }

    /// Waits for COMPLETED on the status stream, then by polling if the stream is unavailable or drops.
    private func follow(_ submission: Submission) async throws -> JSONValue {
        do {
            if let final = try await stream(submission) { return final }
        } catch let error where !(error is CancellationError) && !Task.isCancelled {
            await display.note("status stream unavailable (\(Self.brief(error))); polling instead")
        }
        try Task.checkCancellation()
        return try await poll(submission)
    }

    /// Follows `{status_url}/stream?logs=1`; nil when it ends before COMPLETED.
    private func stream(_ submission: Submission) async throws -> JSONValue? {
        var request = makeRequest(.GET, WebAddress.appending("/stream", query: "logs=1", to: submission.statusURL))
        request.headers.replaceOrAdd(name: "Accept", value: "text/event-stream")
        let response = try await http.execute(request, deadline: deadline)
        guard (200..<300).contains(response.status.code) else {
            let body = (try? await response.body.collect(upTo: 1 << 16)) ?? ByteBuffer()
            throw SubmitFailure.failed(
                Self.describe(
                    Reply(status: Int(response.status.code), headers: response.headers, body: body),
                    purpose: "status stream"
                )
            )
        }
        guard response.headers.first(name: "content-type")?.lowercased().hasPrefix("text/event-stream") == true else {
            throw SubmitFailure.failed("the status stream is not text/event-stream")
        }
        var decoder = EventStreamDecoder()
        for try await chunk in response.body {
            for data in try decoder.feed(chunk) {
                guard let status = try? data.withUnsafeReadableBytes({ bytes in try JSONValue(parsing: bytes) }) else {
                    throw SubmitFailure.failed("the status stream sent an event that is not JSON")
                }
                await display.update(status, logsAreCumulative: false)
                if status["status"]?.stringValue == "COMPLETED" { return status }
            }
        }
        return nil
    }

    /// Polls `{status_url}?logs=1` until COMPLETED (logs there are cumulative).
    private func poll(_ submission: Submission) async throws -> JSONValue {
        let url = WebAddress.appending("", query: "logs=1", to: submission.statusURL)
        var interval = Duration.milliseconds(250)
        while true {
            let reply = try await send(.GET, url, purpose: "status")
            guard reply.isSuccess else { throw SubmitFailure.failed(Self.describe(reply, purpose: "status")) }
            guard let status = reply.json, let state = status["status"]?.stringValue else {
                throw SubmitFailure.failed("status: the response is not a fal status object")
            }
            await display.update(status, logsAreCumulative: true)
            if state == "COMPLETED" { return status }
            try await Task.sleep(for: interval)
            interval = min(interval * 2, .seconds(2))
        }
    }

    private func fetchResult(_ submission: Submission, final: JSONValue) async throws -> Reply {
        let reply = try await send(.GET, submission.responseURL, purpose: "result")
        if !reply.isSuccess {
            throw SubmitFailure.failed(Self.describe(reply, purpose: "the request failed"))
        }
        if let json = reply.json, case .object(let object) = json, let detail = object["detail"],
            Set(object.keys).isSubset(of: ["detail", "error_type"])
        {
            // A 2xx whose body is fal's error shape: the model failed.
            throw SubmitFailure.failed("the request failed: \(Self.describe(detail: detail))")
        }
        if let error = final["error"]?.stringValue {
            throw SubmitFailure.failed("the request failed: \(error)")
        }
        return reply
    }

    /// `PUT {cancel_url}`, best effort and bounded: reports the outcome on stderr.
    func cancelRemotely(_ submission: Submission) async {
        await display.finish()
        var request = makeRequest(.PUT, submission.cancelURL)
        request.headers.replaceOrAdd(name: "Content-Length", value: "0")
        do {
            let response = try await http.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 16)
            let reply = Reply(status: Int(response.status.code), headers: response.headers, body: body)
            if reply.isSuccess {
                let state = reply.json?["status"]?.stringValue ?? "HTTP \(reply.status)"
                await display.note("cancelled request \(submission.requestID) (\(state))")
            } else {
                await display.note(
                    "could not cancel request \(submission.requestID): \(Self.describe(reply, purpose: "cancel"))"
                )
            }
        } catch {
            await display.note("could not cancel request \(submission.requestID): \(Self.brief(error))")
        }
    }

    // MARK: - Media

    /// Streams one media file to `<out>/<request_id>-<n>.<ext>` through a temporary file and a rename.
    private func download(_ reference: MediaReference, number: Int, requestID: String) async throws -> String {
        let response = try await withTransientRetry(purpose: "download") {
            try await self.http.execute(self.makeRequest(.GET, reference.url), deadline: self.deadline)
        }
        guard (200..<300).contains(response.status.code) else {
            let body = (try? await response.body.collect(upTo: 1 << 16)) ?? ByteBuffer()
            let reply = Reply(status: Int(response.status.code), headers: response.headers, body: body)
            throw SubmitFailure.failed(Self.describe(reply, purpose: "download \(reference.url)"))
        }
        let fileExtension = MediaReference.fileExtension(
            url: reference.url,
            contentType: response.headers.first(name: "content-type") ?? reference.contentType
        )
        let safeID = String(
            requestID.unicodeScalars.filter {
                $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-" || $0 == "_")
            }
        )
        let name = "\(safeID.isEmpty ? "result" : safeID)-\(number).\(fileExtension)"
        let path = (plan.outputDirectory as NSString).appendingPathComponent(name)
        let temporary = (plan.outputDirectory as NSString).appendingPathComponent(".\(name).\(getpid()).part")
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw SubmitFailure.failed("cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        do {
            var written = 0
            for try await chunk in response.body {
                try Self.writeAll(chunk, to: descriptor, path: temporary)
                written += chunk.readableBytes
            }
            if let expected = response.headers.first(name: "content-length").flatMap(Int.init), expected != written {
                throw SubmitFailure.failed("download \(reference.url): got \(written) of \(expected) bytes")
            }
            guard fsync(descriptor) == 0 else {
                throw SubmitFailure.failed("cannot write \(temporary): \(String(cString: strerror(errno)))")
            }
            close(descriptor)
            guard rename(temporary, path) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(temporary)
                throw SubmitFailure.failed("cannot rename \(temporary) to \(path): \(reason)")
            }
        } catch {
            close(descriptor)
            unlink(temporary)
            throw error
        }
        return path
    }

    private static func writeAll(_ chunk: ByteBuffer, to descriptor: Int32, path: String) throws {
        try chunk.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let count = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    throw SubmitFailure.failed("cannot write \(path): \(String(cString: strerror(errno)))")
                }
                offset += count
            }
        }
    }

    private func createDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw SubmitFailure.failed("cannot create the output directory \(path): \(error.localizedDescription)")
        }
    }

    // MARK: - HTTP

    private func makeRequest(_ method: HTTPMethod, _ url: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "User-Agent", value: "media-relay-submit/1")
        request.headers.add(name: "Accept", value: "application/json")
        if let key = plan.key, let origin = WebAddress.origin(of: url), trustedOrigins.withLock({ $0.contains(origin) })
        {
            request.headers.add(name: "Authorization", value: "Key \(key)")
        }
        return request
    }

    /// One API call with its whole body; 429 is retried after Retry-After (bounded), network errors for idempotent calls.
    private func send(
        _ method: HTTPMethod,
        _ url: String,
        body: [UInt8]? = nil,
        purpose: String,
        shielded: Bool = false
    ) async throws -> Reply {
        var attempt = 1
        while true {
            var request = makeRequest(method, url)
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body))
            }
            let reply: Reply
            let exchange: @Sendable () async throws -> Reply = { [http, deadline, request] in
                let response = try await http.execute(request, deadline: deadline)
                let collected = try await response.body.collect(upTo: Self.maxJSONBytes)
                return Reply(status: Int(response.status.code), headers: response.headers, body: collected)
            }
            do {
                if shielded {
                    reply = try await Task { try await exchange() }.value
                } else {
                    reply = try await withTransientRetry(purpose: purpose, exchange)
                }
            } catch let error where !(error is SubmitFailure) && !(error is CancellationError) && !Task.isCancelled {
                let prefix = purpose == "submit" ? "" : "\(purpose): "
                throw SubmitFailure.failed("\(prefix)cannot reach \(url): \(Self.brief(error))\(Self.tlsHint(error))")
            }
            guard reply.status == 429, attempt < Self.maxRateLimitAttempts else { return reply }
            let delay = min(Self.retryAfter(reply.headers) ?? .seconds(1), Self.maxRetryAfter)
            guard NIODeadline.now() + TimeAmount.nanoseconds(Int64(delay.components.seconds) * 1_000_000_000) < deadline
            else {
                return reply
            }
            await display.note(
                "rate limited (\(Self.describe(reply, purpose: purpose))); retrying in \(Self.format(delay)) "
                    + "(attempt \(attempt + 1) of \(Self.maxRateLimitAttempts))"
            )
            try await Task.sleep(for: delay)
            attempt += 1
        }
    }

    /// Retries connection failures a few times with backoff; HTTP answers and TLS failures are returned at once.
    private func withTransientRetry<T: Sendable>(
        purpose: String,
        _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        var delay = Duration.milliseconds(300)
        var attempt = 1
        while true {
            do {
                return try await operation()
            } catch {
                if attempt >= 3 || error is NIOSSLError || error is CancellationError || Task.isCancelled {
                    throw error
                }
                await display.note("\(purpose): \(Self.brief(error)); retrying")
                try await Task.sleep(for: delay)
                delay *= 3
                attempt += 1
            }
        }
    }

    /// Retry-After as delta-seconds or an HTTP date.
    static func retryAfter(_ headers: HTTPHeaders) -> Duration? {
        guard let value = headers.first(name: "retry-after")?.trimmingCharacters(in: .whitespaces) else { return nil }
        if let seconds = Int(value), seconds >= 0 { return .seconds(max(seconds, 1)) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return .seconds(max(1, Int(date.timeIntervalSinceNow.rounded(.up))))
    }

    // MARK: - Messages

    /// `HTTP 422 (purpose): prompt: field required`, from fal's error shapes (PROTOCOL.md §3.5).
    static func describe(_ reply: Reply, purpose: String) -> String {
        let reason = HTTPResponseStatus(statusCode: reply.status).reasonPhrase
        // "submit" is the command's own name, which every message already starts with.
        var text = (purpose == "submit" ? "" : "\(purpose): ") + "HTTP \(reply.status) \(reason)"
        if let json = reply.json, case .object(let object) = json, let detail = object["detail"] {
            text += ": " + describe(detail: detail)
            if let type = object["error_type"]?.stringValue ?? reply.headers.first(name: "x-fal-error-type") {
                text += " [\(type)]"
            }
        } else if reply.body.readableBytes > 0 {
            let raw = String(buffer: reply.body).trimmingCharacters(in: .whitespacesAndNewlines)
            text += ": " + (raw.count > 300 ? String(raw.prefix(300)) + "…" : raw)
        }
        switch reply.status {
        case 401, 403: text += " (pass --key or set FAL_KEY)"
        case 404 where purpose == "submit": text += " (is the model id right?)"
        default: break
        }
        return text
    }

    /// A `detail` value: a string, or FastAPI's list of `{loc, msg}` as `field: message; …`.
    static func describe(detail: JSONValue) -> String {
        switch detail {
        case .string(let message):
            return message
        case .array(let entries):
            return entries.map { entry in
                guard let message = entry["msg"]?.stringValue else { return entry.serializedString }
                var location = (entry["loc"]?.arrayValue ?? []).map { $0.stringValue ?? $0.serializedString }
                if location.first == "body" { location.removeFirst() }
                return location.isEmpty ? message : location.joined(separator: ".") + ": " + message
            }.joined(separator: "; ")
        default:
            return detail.serializedString
        }
    }

    static func brief(_ error: any Error) -> String {
        if let failure = error as? SubmitFailure { return failure.message }
        return String(describing: error)
    }

    private static func tlsHint(_ error: any Error) -> String {
        error is NIOSSLError ? " (for the relay's development CA, pass --ca data/tls/ca.pem or set SSL_CERT_FILE)" : ""
    }

    static func format(_ duration: Duration) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        return String(format: "%dm%02ds", Int(seconds) / 60, Int(seconds) % 60)
    }
}
