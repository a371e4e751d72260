import AsyncHTTPClient
import FalQueue
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import RelayCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One submission from POST to saved files, over the shared fal queue client (`FalQueueClient`): submit, follow
/// (status stream, else polling), result, cancel; what is left here is the command's own: messages, the downloads.
final class SubmitSession: Sendable {
    /// Largest JSON body read from the API (results may carry inline data URIs).
    static let maxJSONBytes = 64 << 20

    /// The command's retry policy: 429 and the "not accepted" 5xx waited out (Retry-After up to a minute), five
    /// calls at most; a submit is repeated only when it certainly did not reach the queue.
    static let retry = RetryPolicy(
        baseDelay: .milliseconds(300),
        maxDelay: .seconds(10),
        maxAttempts: 5,
        maxRetryAfter: .seconds(60)
    )

    let plan: SubmitPlan
    let queue: FalQueueClient
    let display: ProgressDisplay
    let started = ContinuousClock.now
    let limits: FalQueueClient.Limits

    init(plan: SubmitPlan, queue: FalQueueClient, display: ProgressDisplay) {
        self.plan = plan
        self.queue = queue
        self.display = display
        self.limits = FalQueueClient.Limits(
            requestTimeout: .seconds(plan.timeoutSeconds + 5),
            maxJSONBytes: Self.maxJSONBytes,
            // 250 ms, doubling to 2 s.
            pollInterval: { polls in .milliseconds(250 << min(polls - 1, 3)) }
        )
    }

    /// The client's configuration for `plan`.
    static func configuration(_ plan: SubmitPlan) -> FalQueueClient.Configuration {
        var configuration = FalQueueClient.Configuration(
            baseURL: plan.host,
            apiKey: plan.key,
            userAgent: "media-relay-submit/1",
            tls: plan.tls
        )
        configuration.maxRedirects = 5
        configuration.retry = retry
        return configuration
    }

    /// How a retry is reported on stderr.
    static func note(_ retry: FalQueueClient.RetryNote) -> String {
        let attempts = "attempt \(retry.attempt + 1) of \(Self.retry.maxAttempts)"
        if let reply = retry.reply, reply.status == 429 {
            return
                "rate limited (\(describe(reply, purpose: retry.purpose))); retrying in \(format(retry.delay)) (\(attempts))"
        }
        return "\(retry.purpose): \(retry.reason); retrying in \(format(retry.delay)) (\(attempts))"
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
        let (handle, cacheOutcome) = try await submit()
        let final: JSONValue
        do {
            final = try await follow(handle)
        } catch {
            if Task.isCancelled {
                // Interrupted or timed out: the job must not run on unattended. The cancelled task cannot make calls,
                // so an unstructured task (not cancelled, bounded by its own deadline) sends the PUT.
                let session = self
                await Task { await session.cancelRemotely(handle) }.value
            }
            throw error
        }
        await display.finish()
        let result = try await fetchResult(handle, final: final)
        let cache = result.headers.first(name: "x-relay-cache") ?? cacheOutcome
        let elapsed = Self.format(ContinuousClock.now - started)
        let cacheNote = cache.map { ", cache \($0)" } ?? ""

        let media = result.json.map { FalMediaReferences(in: $0).references } ?? []
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
            let path = try await download(reference, number: index + 1, requestID: handle.requestID)
            Terminal.write(ByteBuffer(string: path + "\n"), to: STDOUT_FILENO)
            saved.append(path)
        }
        let files = saved.count == 1 ? "1 file" : "\(saved.count) files"
        await display.note("completed in \(elapsed)\(cacheNote); saved \(files) to \(plan.outputDirectory)")
    }

    // MARK: - Protocol steps

    private func submit() async throws -> (FalQueueHandle, cacheOutcome: String?) {
        let submitted: FalQueueClient.Submitted
        do {
            // Shielded: a job the POST created must be known, so that Ctrl-C can cancel it.
            submitted = try await queue.submit(
                endpoint: plan.endpoint.description,
                input: ByteBuffer(bytes: plan.body),
                limits: limits
            )
        } catch {
            throw failure(error, purpose: "submit")
        }
        guard case .accepted(let handle, let reply) = submitted else {
            if case .refused(let reply) = submitted {
                throw SubmitFailure.failed(Self.describe(reply, purpose: "submit"))
            }
            throw SubmitFailure.failed("submit: no answer")
        }
        await display.note("request \(handle.requestID) submitted to \(plan.host)")
        if let json = reply.json { await display.update(json, logsAreCumulative: true) }
        if Task.isCancelled {
            await cancelRemotely(handle)
            throw CancellationError()
        }
        return (handle, reply.headers.first(name: "x-relay-cache"))
    }

    /// Waits for COMPLETED on the status stream, then by polling if the stream is unavailable or drops.
    private func follow(_ handle: FalQueueHandle) async throws -> JSONValue {
        let display = self.display
        let followed: FalQueueClient.Followed
        do {
            followed = try await queue.follow(
                handle,
                limits: limits,
                onFallback: { reason in await display.note("status stream unavailable (\(reason)); polling instead") },
                onStatus: { status, streamed in await display.update(status, logsAreCumulative: !streamed) }
            )
        } catch {
            throw failure(error, purpose: "status")
        }
        switch followed {
        case .completed(let status):
            return status
        case .refused(let reply):
            throw SubmitFailure.failed(Self.describe(reply, purpose: "status"))
        }
    }

    private func fetchResult(_ handle: FalQueueHandle, final: JSONValue) async throws -> FalQueueClient.Reply {
        let reply: FalQueueClient.Reply
        do {
            reply = try await queue.result(handle, limits: limits)
        } catch {
            throw failure(error, purpose: "result")
        }
        if !reply.isSuccess {
            throw SubmitFailure.failed(Self.describe(reply, purpose: "the request failed"))
        }
        if let json = reply.json, case .object(let object) = json, let detail = object["detail"],
            Set(object.keys).isSubset(of: ["detail", "error_type"])
        {
            // A 2xx whose body is fal's error shape: the model failed.
            throw SubmitFailure.failed("the request failed: \(FalErrorText.describe(detail: detail))")
        }
        if let error = final["error"]?.stringValue {
            throw SubmitFailure.failed("the request failed: \(error)")
        }
        return reply
    }

    /// `PUT {cancel_url}`, best effort and bounded: reports the outcome on stderr.
    func cancelRemotely(_ handle: FalQueueHandle) async {
        await display.finish()
        var bounded = limits
        bounded.requestTimeout = .seconds(10)
        do {
            let reply = try await queue.cancel(handle, limits: bounded)
            if reply.isSuccess {
                let state = reply.json?["status"]?.stringValue ?? "HTTP \(reply.status)"
                await display.note("cancelled request \(handle.requestID) (\(state))")
            } else {
                await display.note(
                    "could not cancel request \(handle.requestID): \(Self.describe(reply, purpose: "cancel"))"
                )
            }
        } catch {
            await display.note("could not cancel request \(handle.requestID): \(Self.brief(error))")
        }
    }

    // MARK: - Media

    /// Streams one media file to `<out>/<request_id>-<n>.<ext>` through a temporary file and a rename.
    private func download(
        _ reference: FalMediaReferences.Reference,
        number: Int,
        requestID: String
    ) async throws
        -> String
    {
        let response: HTTPClientResponse
        do {
            response = try await queue.open(
                reference.url,
                accept: "*/*",
                timeout: limits.requestTimeout,
                retrying: true,
                purpose: "download"
            )
        } catch {
            throw failure(error, purpose: "download")
        }
        guard (200..<300).contains(response.status.code) else {
            let body = (try? await response.body.collect(upTo: 1 << 16)) ?? ByteBuffer()
            let reply = FalQueueClient.Reply(status: Int(response.status.code), headers: response.headers, body: body)
            throw SubmitFailure.failed(Self.describe(reply, purpose: "download \(reference.url)"))
        }
        let fileExtension = FalMediaReferences.fileExtension(
            url: reference.url,
            declared: reference.declaredContentType,
            served: response.headers.first(name: "content-type")
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

    // MARK: - Messages

    /// `(purpose: )HTTP 422 Unprocessable Entity: prompt: field required [validation_error]`, with a hint where
    /// the user can act.
    static func describe(_ reply: FalQueueClient.Reply, purpose: String) -> String {
        // "submit" is the command's own name, which every message already starts with.
        var text = (purpose == "submit" ? "" : "\(purpose): ") + FalErrorText.describe(reply)
        switch reply.status {
        case 401, 403: text += " (pass --key or set FAL_KEY)"
        case 404 where purpose == "submit": text += " (is the model id right?)"
        default: break
        }
        return text
    }

    /// A queue client's error as the command's failure.
    private func failure(_ error: any Error, purpose: String) -> any Error {
        let prefix = purpose == "submit" ? "" : "\(purpose): "
        switch error {
        case let failure as FalQueueClient.TransportFailure:
            let hint =
                failure.isTLS ? " (for the relay's development CA, pass --ca data/tls/ca.pem or set SSL_CERT_FILE)" : ""
            return SubmitFailure.failed("\(prefix)cannot reach \(failure.url): \(failure.underlying)\(hint)")
        case let failure as FalQueueClient.ProtocolError:
            return SubmitFailure.failed("\(prefix)\(failure.description) (is \(plan.host) a fal queue API?)")
        case let failure as FalQueueClient.BodyTooLarge:
            return SubmitFailure.failed("\(prefix)\(failure.description)")
        default:
            return error
        }
    }

    static func brief(_ error: any Error) -> String {
        if let failure = error as? SubmitFailure { return failure.message }
        return String(describing: error)
    }

    static func format(_ duration: Duration) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        return String(format: "%dm%02ds", Int(seconds) / 60, Int(seconds) % 60)
    }
}
