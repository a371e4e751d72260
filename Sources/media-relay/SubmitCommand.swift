import ArgumentParser
import AsyncHTTPClient
import Dispatch
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

/// `media-relay submit`: one generation through a relay (or fal itself), followed live and saved to disk.
struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a request to a relay (or fal), follow its progress, and save the media it returns.",
        discussion: """
            Progress goes to stderr (a live bar on a terminal, one line per change otherwise); stdout holds only \
            the saved paths, one per line, or the result JSON with --json. Ctrl-C cancels the request before \
            exiting. Exit status: 0 done; 1 the request failed (HTTP error, failed generation, download, timeout); \
            2 invalid arguments or input (nothing was sent); 130 interrupted.
            """
    )

    @Argument(help: "Endpoint id, e.g. fal-ai/flux/dev") var model: String
    @Option(help: ArgumentHelp("The input object: literal JSON, @file, or - for stdin", valueName: "json|@file|-"))
    var input: String
    @Option(
        help: ArgumentHelp(
            "Directory for the media, created if missing (default: the current directory)",
            valueName: "dir"
        )
    )
    var out: String?
    @Option(
        help: ArgumentHelp(
            "Queue API base URL (default $MEDIA_RELAY_HOST, else http://127.0.0.1:8080; https://queue.fal.run for fal)",
            valueName: "url"
        )
    )
    var host: String?
    @Option(help: "API key, sent as Authorization: Key … (default $FAL_KEY)") var key: String?
    @Option(help: ArgumentHelp("Extra PEM CA certificate(s) to trust; SSL_CERT_FILE is honoured too", valueName: "pem"))
    var ca: String?
    @Flag(help: "Print the result JSON on stdout instead of downloading the media") var json = false
    @Option(help: ArgumentHelp("Give up after this many seconds, cancelling the request", valueName: "seconds"))
    var timeout: Int = 600

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let plan: SubmitPlan
        do {
            plan = try SubmitPlan(command: self, environment: environment)
        } catch {
            Terminal.error(error.message)
            throw ExitCode(error.exitCode)
        }
        var settings = HTTPClient.Configuration(
            tlsConfiguration: plan.tls,
            redirectConfiguration: .follow(max: 5, allowCycles: false),
            timeout: .init(connect: .seconds(10), read: .seconds(60))
        )
        settings.connectionPool.retryConnectionEstablishment = false
        let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: settings)
        let display = ProgressDisplay(
            label: plan.endpoint.description,
            interactive: Terminal.stderrIsInteractive(environment)
        )
        let session = SubmitSession(plan: plan, http: http, display: display)

        let signals = InterruptSignals()
        let work = Task { try await SubmitSession.within(seconds: plan.timeoutSeconds) { try await session.run() } }
        signals.install { work.cancel() }
        let outcome = await work.result
        signals.uninstall()
        await display.finish()
        try? await http.shutdown()

        switch outcome {
        case .success:
            return
        case .failure where signals.received != nil:
            Terminal.error("interrupted")
            throw ExitCode(128 + (signals.received ?? SIGINT))
        case .failure(let failure as SubmitFailure):
            Terminal.error(failure.message)
            throw ExitCode(failure.exitCode)
        case .failure(let error):
            Terminal.error("\(error)")
            throw ExitCode(1)
        }
    }
}

/// Everything `submit` needs, validated before any network traffic.
struct SubmitPlan: Sendable {
    let endpoint: EndpointID
    /// `scheme://authority[/prefix]`, without a trailing slash.
    let host: String
    let key: String?
    let body: [UInt8]
    let outputDirectory: String
    let printJSON: Bool
    let timeoutSeconds: Int
    let tls: TLSConfiguration

    init(command: Submit, environment: [String: String]) throws(SubmitFailure) {
        guard let endpoint = EndpointID(command.model) else {
            throw .usage("invalid model \"\(command.model)\": expected owner/alias[/path], e.g. fal-ai/flux/dev")
        }
        self.endpoint = endpoint
        var host =
            command.host ?? environment["MEDIA_RELAY_HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? "http://127.0.0.1:8080"
        while host.hasSuffix("/") { host.removeLast() }
        guard WebAddress.origin(of: host) != nil else {
            throw .usage("invalid --host \"\(host)\": expected an http:// or https:// URL")
        }
        self.host = host
        self.key = (command.key ?? environment["FAL_KEY"]).flatMap { $0.isEmpty ? nil : $0 }
        self.body = try Self.readInput(command.input)
        self.outputDirectory = command.out ?? "."
        self.printJSON = command.json
        guard command.timeout > 0 else { throw .usage("--timeout must be a positive number of seconds") }
        self.timeoutSeconds = command.timeout

        do {
            self.tls = try ClientTLS.configuration(ca: command.ca, environment: environment)
        } catch {
            throw .usage(error.description)
        }
    }

    /// The request body: `--input` as JSON text, `@file` or `-` (stdin); it must be one JSON object.
    private static func readInput(_ argument: String) throws(SubmitFailure) -> [UInt8] {
        let bytes: [UInt8]
        let source: String
        if argument == "-" {
            bytes = [UInt8](FileHandle.standardInput.readDataToEndOfFile())
            source = "stdin"
        } else if argument.hasPrefix("@") {
            let path = String(argument.dropFirst())
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .usage("cannot read the input file \(path)")
            }
            bytes = [UInt8](data)
            source = path
        } else {
            bytes = Array(argument.utf8)
            source = "--input"
        }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: bytes)
        } catch {
            throw .usage("invalid JSON in \(source): \(error)")
        }
        guard case .object = value else {
            throw .usage("the input (\(source)) must be a JSON object, like {\"prompt\":\"…\"}")
        }
        return value.serialized()
    }
}

/// Why `submit` stopped, with the exit status to report.
struct SubmitFailure: Error, Sendable, CustomStringConvertible {
    private enum Code: Int32 {
        case failed = 1
        case usage = 2
    }

    private let code: Code
    let message: String

    var exitCode: Int32 { code.rawValue }
    var description: String { message }

    /// Bad arguments or input: nothing was sent.
    static func usage(_ message: String) -> SubmitFailure { SubmitFailure(code: .usage, message: message) }
    /// The request, its result or a download failed.
    static func failed(_ message: String) -> SubmitFailure { SubmitFailure(code: .failed, message: message) }
}

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

/// One media file the result points at: an object with an http(s) `url`.
struct MediaReference: Sendable, Hashable {
    let url: String
    let contentType: String?

    /// Every media reference in document order, each URL once.
    static func all(in value: JSONValue) -> [MediaReference] {
        var found: [MediaReference] = []
        var seen: Set<String> = []
        func visit(_ value: JSONValue) {
            switch value {
            case .object(let object):
                if let url = object["url"]?.stringValue, WebAddress.origin(of: url) != nil, seen.insert(url).inserted {
                    found.append(MediaReference(url: url, contentType: object["content_type"]?.stringValue))
                }
                for (_, member) in object { visit(member) }
            case .array(let elements):
                elements.forEach(visit)
            default:
                break
            }
        }
        visit(value)
        return found
    }

    /// From the URL's path when it has a plausible extension, else from the content type, else `bin`.
    static func fileExtension(url: String, contentType: String?) -> String {
        let path = URL(string: url)?.path ?? ""
        let last = path.split(separator: "/").last.map(String.init) ?? ""
        if let dot = last.lastIndex(of: "."), dot != last.startIndex {
            let candidate = last[last.index(after: dot)...].lowercased()
            if (1...5).contains(candidate.count), candidate.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) {
                return candidate
            }
        }
        let type =
            (contentType ?? "").split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        let known: [String: String] = [
            "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif", "image/avif": "avif",
            "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov", "audio/wav": "wav",
            "audio/x-wav": "wav",
            "audio/wave": "wav", "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/flac": "flac", "text/plain": "txt",
            "application/json": "json", "model/gltf-binary": "glb",
        ]
        if let known = known[type] { return known }
        if let subtype = type.split(separator: "/").last, (1...5).contains(subtype.count),
            subtype.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) })
        {
            return String(subtype)
        }
        return "bin"
    }
}

/// URL text helpers for the few shapes `submit` needs.
enum WebAddress {
    /// `scheme://authority`, lowercased, for http(s) URLs with a host; nil otherwise.
    static func origin(of url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else { return nil }
        let port = components.port.map { ":\($0)" } ?? ""
        return "\(scheme)://\(host.lowercased())\(port)"
    }

    /// Appends a path suffix before any query, then adds `query`.
    static func appending(_ suffix: String, query: String, to url: String) -> String {
        let parts = url.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let base = String(parts[0]) + suffix
        let existing = parts.count > 1 ? String(parts[1]) : ""
        return base + "?" + (existing.isEmpty ? query : existing + "&" + query)
    }
}

/// Splits a `text/event-stream` body into event data (WHATWG §9.2.6), chunk by chunk: comments, `event:` and `id:`
/// are skipped (fal statuses are told apart by their JSON); several `data:` lines join with LF.
struct EventStreamDecoder: Sendable {
    static let maxEventBytes = 8 << 20
    private var pending = ByteBuffer()
    private var data: ByteBuffer?
    private var skipLineFeed = false

    mutating func feed(_ chunk: ByteBuffer) throws -> [ByteBuffer] {
        var chunk = chunk
        if skipLineFeed, chunk.readableBytesView.first == UInt8(ascii: "\n") { chunk.moveReaderIndex(forwardBy: 1) }
        skipLineFeed = false
        pending.writeBuffer(&chunk)
        var events: [ByteBuffer] = []
        while let end = pending.readableBytesView.firstIndex(where: {
            $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r")
        }) {
            guard let line = pending.readSlice(length: end - pending.readerIndex),
                let terminator = pending.readInteger(as: UInt8.self)
            else { break }
            if terminator == UInt8(ascii: "\r") {
                if let next = pending.readableBytesView.first {
                    if next == UInt8(ascii: "\n") { pending.moveReaderIndex(forwardBy: 1) }
                } else {
                    skipLineFeed = true
                }
            }
            if let event = try process(line) { events.append(event) }
        }
        guard pending.readableBytes <= Self.maxEventBytes else {
            throw SubmitFailure.failed("a status stream line exceeds \(Self.maxEventBytes) bytes")
        }
        pending.discardReadBytes()
        return events
    }

    private mutating func process(_ line: ByteBuffer) throws -> ByteBuffer? {
        var line = line
        guard line.readableBytes > 0 else {
            defer { data = nil }
            return data
        }
        guard line.readableBytesView.first != UInt8(ascii: ":") else { return nil }
        let colon = line.readableBytesView.firstIndex(of: UInt8(ascii: ":")) ?? line.writerIndex
        let field = line.readSlice(length: colon - line.readerIndex) ?? ByteBuffer()
        guard field.readableBytesView.elementsEqual("data".utf8) else { return nil }
        if line.readableBytes > 0 { line.moveReaderIndex(forwardBy: 1) }
        if line.readableBytesView.first == UInt8(ascii: " ") { line.moveReaderIndex(forwardBy: 1) }
        if data == nil {
            data = ByteBuffer()
        } else {
            data?.writeInteger(UInt8(ascii: "\n"))
        }
        data?.writeBuffer(&line)
        if let size = data?.readableBytes, size > Self.maxEventBytes {
            throw SubmitFailure.failed("a status stream event exceeds \(Self.maxEventBytes) bytes")
        }
        return nil
    }
}

/// The progress of one request on stderr: a redrawn bar on a terminal, one plain line per change otherwise.
actor ProgressDisplay {
    private enum Phase: Equatable {
        case submitting
        case queued(position: Int?)
        case running(step: Int?, of: Int?)
        case completed
    }

    private static let spinner = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]
    private static let barWidth = 24

    let label: String
    let interactive: Bool
    private let started = ContinuousClock.now
    private var phase = Phase.submitting
    /// Log lines already shown (status polls repeat all logs, stream events carry only new ones).
    private var logsSeen = 0
    /// A progress line is drawn and must be cleared before anything else is written.
    private var drawn = false
    private var frame = 0
    private var ticker: Task<Void, Never>?
    private var finished = false

    init(label: String, interactive: Bool) {
        self.label = label
        self.interactive = interactive
    }

    /// Takes one status object (submit response, stream event or poll).
    func update(_ status: JSONValue, logsAreCumulative: Bool) {
        guard !finished else { return }
        let logs = status["logs"]?.arrayValue ?? []
        let fresh: ArraySlice<JSONValue>
        if logsAreCumulative {
            fresh = logs.count > logsSeen ? logs[logsSeen...] : []
            logsSeen = max(logsSeen, logs.count)
        } else {
            fresh = logs[...]
            logsSeen += logs.count
        }
        var step: (Int, Int)?
        for entry in fresh {
            guard let message = entry["message"]?.stringValue else { continue }
            if let parsed = Self.step(in: message) {
                step = parsed
            } else if !message.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                emit("  log: \(message)")
            }
        }
        let next: Phase
        switch status["status"]?.stringValue {
        case "IN_QUEUE":
            next = .queued(position: status["queue_position"]?.intValue)
        case "IN_PROGRESS":
            if let step {
                next = .running(step: step.0, of: step.1)
            } else if case .running = phase {
                next = phase
            } else {
                next = .running(step: nil, of: nil)
            }
        case "COMPLETED":
            if let step, case .running = phase { change(to: .running(step: step.0, of: step.1)) }
            next = .completed
            if let error = status["error"]?.stringValue { emit("  error: \(error)") }
        default:
            return
        }
        change(to: next)
    }

    /// A permanent line on stderr (the bar is redrawn below it).
    func note(_ text: String) {
        emit(text)
    }

    /// Clears the bar and stops redrawing.
    func finish() {
        finished = true
        ticker?.cancel()
        ticker = nil
        clear()
    }

    private func change(to next: Phase) {
        guard next != phase else { return }
        phase = next
        if interactive {
            startTicker()
            draw()
        } else {
            let elapsed = SubmitSession.format(ContinuousClock.now - started)
            Terminal.write(ByteBuffer(string: "[\(elapsed)] \(describe(next))\n"), to: STDERR_FILENO)
        }
    }

    private func describe(_ phase: Phase) -> String {
        switch phase {
        case .submitting: "submitting"
        case .queued(let position?): "in queue, position \(position)"
        case .queued(nil): "in queue"
        case .running(let step?, let total?): "in progress, step \(step)/\(total)"
        case .running: "in progress"
        case .completed: "completed"
        }
    }

    private func startTicker() {
        guard ticker == nil, !finished else { return }
        ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                await self?.draw()
            }
        }
    }

    private func draw() {
        guard interactive, !finished else { return }
        frame += 1
        let spin = Self.spinner[frame % Self.spinner.count]
        let elapsed = SubmitSession.format(ContinuousClock.now - started)
        var line = ""
        switch phase {
        case .submitting:
            line += "submitting"
        case .queued(let position):
            line += position.map { "in queue · position \($0)" } ?? "in queue"
        case .running(let step?, let total?) where total > 0:
            let filled = min(Self.barWidth, Self.barWidth * step / total)
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: Self.barWidth - filled)
            line += "[\(bar)] \(step)/\(total) \(100 * step / total)%"
        case .running:
            line += "in progress"
        case .completed:
            line += "completed, fetching the result"
        }
        line += " · \(elapsed)"
        // A line wider than the terminal wraps, and "\r" then redraws only its last row: shorten the label instead.
        let room = Terminal.columns() - 1 - line.count - 4
        let name = room >= label.count ? label : room > 8 ? "…" + label.suffix(room - 1) : ""
        line = name.isEmpty ? "\(spin) \(line)" : "\(spin) \(name)  \(line)"
        Terminal.write(ByteBuffer(string: "\r\u{1B}[2K" + line), to: STDERR_FILENO)
        drawn = true
    }

    private func emit(_ text: String) {
        clear()
        Terminal.write(ByteBuffer(string: text + "\n"), to: STDERR_FILENO)
        if interactive, !finished, phase != .submitting { draw() }
    }

    private func clear() {
        guard drawn else { return }
        Terminal.write(ByteBuffer(string: "\r\u{1B}[2K"), to: STDERR_FILENO)
        drawn = false
    }

    /// `n/N` in a log line like "step 3/28" or tqdm's "36%|███▋ | 10/28 [...]"; nil when there is none.
    static func step(in message: String) -> (Int, Int)? {
        let bytes = Array(message.utf8)
        var result: (Int, Int)?
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "/"), index > 0, index + 1 < bytes.count else {
                index += 1
                continue
            }
            var start = index
            while start > 0, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[start - 1]) { start -= 1 }
            var end = index + 1
            while end < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[end]) { end += 1 }
            if start < index, end > index + 1, start == 0 || !Self.isWordByte(bytes[start - 1]),
                end == bytes.count || !Self.isWordByte(bytes[end]) || bytes[end] == UInt8(ascii: " "),
                let done = Int(String(decoding: bytes[start..<index], as: UTF8.self)),
                let total = Int(String(decoding: bytes[(index + 1)..<end], as: UTF8.self)),
                total > 0, done <= total
            {
                result = (done, total)
            }
            index = end
        }
        return result
    }

    private static func isWordByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "/") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ":")
            || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
    }
}

/// `write(2)`, named apart from `Terminal.write`.
private func systemWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}

/// Writes to the standard streams without stdio buffering (stderr and stdout interleave as written).
enum Terminal {
    static func write(_ buffer: ByteBuffer, to descriptor: Int32) {
        buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let count = systemWrite(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { return }
                offset += count
            }
        }
    }

    static func error(_ message: String) {
        write(ByteBuffer(string: "media-relay submit: \(message)\n"), to: STDERR_FILENO)
    }

    /// The terminal's width on stderr (80 when unknown).
    static func columns() -> Int {
        var size = winsize()
        guard ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }

    static func stderrIsInteractive(_ environment: [String: String]) -> Bool {
        isatty(STDERR_FILENO) == 1 && environment["TERM"] != "dumb"
    }
}

/// SIGINT/SIGTERM while a request runs: the first cancels the work (which cancels the request), a second exits at once.
final class InterruptSignals: Sendable {
    private let state = Mutex<(signal: Int32?, sources: [any DispatchSourceSignal])>((nil, []))
    private static let queue = DispatchQueue(label: "media-relay.submit.signals")

    /// The first signal received, if any.
    var received: Int32? { state.withLock { $0.signal } }

    func install(_ onFirst: @escaping @Sendable () -> Void) {
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: Self.queue)
            source.setEventHandler { [weak self] in
                guard let self else { return }
                let first = self.state.withLock { state -> Bool in
                    guard state.signal == nil else { return false }
                    state.signal = number
                    return true
                }
                if first {
                    onFirst()
                } else {
                    _exit(128 + number)
                }
            }
            source.resume()
            sources.append(source)
        }
        state.withLock { $0.sources = sources }
    }

    func uninstall() {
        state.withLock { state in
            for source in state.sources { source.cancel() }
            state.sources = []
        }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
