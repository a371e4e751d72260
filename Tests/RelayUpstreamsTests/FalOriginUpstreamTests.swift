import FalQueue
import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCore
import RelayJobs
import RelayStore
import Synchronization
import Testing

@testable import RelayUpstreams

/// The origin upstream against a fake fal origin on 127.0.0.1: real sockets, a real BlobStore in a temp directory.
@Suite(.timeLimit(.minutes(2)))
struct FalOriginUpstreamTests {
    static let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX.1 [dev]", kind: .image, upstream: "origin")
    static let publicBase = "https://relay.test"

    /// Everything a test needs, torn down after it.
    struct Fixture {
        let upstream: FalOriginUpstream
        let origin: FakeFalOrigin
        let store: BlobStore
    }

    func withOrigin(
        _ script: FakeFalOrigin.Script = FakeFalOrigin.Script(),
        tls: (certificate: String, key: String)? = nil,
        configure: (inout FalOriginUpstream.Configuration) -> Void = { _ in },
        body: (Fixture) async throws -> Void
    ) async throws {
        let origin = try await FakeFalOrigin.start(script, tls: tls)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("origin-\(UUID().uuidString)")
            .path
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let hasher = KeyedHasher(secret: Array(repeating: 9, count: KeyedHasher.secretSize))
        let store = try BlobStore(directory: directory, hasher: hasher, threadPool: pool)
        var configuration = FalOriginUpstream.Configuration(
            baseURL: origin.baseURL + "/",
            apiKey: "test-key",
            publicBaseURL: { Self.publicBase }
        )
        configuration.retry = RetryPolicy(baseDelay: .milliseconds(10), maxDelay: .milliseconds(40), maxAttempts: 4)
        configuration.statusPollInterval = .milliseconds(10)
        configuration.requestTimeout = .seconds(5)
        configuration.jobDeadline = .seconds(20)
        configure(&configuration)
        var logger = Logger(label: "origin-test")
        logger.logLevel =
            ProcessInfo.processInfo.environment["ORIGIN_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        let upstream = try FalOriginUpstream(configuration: configuration, store: store, logger: logger)
        do {
            try await body(Fixture(upstream: upstream, origin: origin, store: store))
        } catch {
            try? await upstream.shutdown()
            await origin.stop()
            try? await pool.shutdownGracefully()
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        try await upstream.shutdown()
        await origin.stop()
        try await pool.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A job whose every event is recorded from the first one on.
    func makeJob(_ input: JSONObject = ["prompt": "a fox in the snow", "seed": 7]) throws -> (Job, FalOriginEventLog) {
        let job = Job(
            input: try ModelInput(model: Self.model, input: input),
            key: RequestKey(digest: Digest128(high: 1, low: 2))
        )
        let log = FalOriginEventLog()
        _ = job.subscribe(after: 0) { event in log.append(event) }
        return (job, log)
    }

    func outcome(of job: Job, within seconds: Double = 15) async throws -> JobOutcome {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if case .completed(let outcome) = job.status.phase { return outcome }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record("job did not finish within \(seconds) s")
        return .cancelled
    }

    func eventually(within seconds: Double = 5, _ condition: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(5))
        }
        return condition()
    }

    /// Checks a successful result: every media URL rewritten to the relay, the bytes in the store, sizes set.
    func expectMediaPulled(_ result: JSONValue, store: BlobStore, origin: FakeFalOrigin) async throws {
        let images = try #require(result["images"]?.arrayValue)
        #expect(images.count == 2)
        for image in images {
            let url = try #require(image["url"]?.stringValue)
            #expect(url.hasPrefix(Self.publicBase + "/files/") && url.hasSuffix(".png"))
            #expect(try await stored(url, store: store) == FakeFalOrigin.media["cat.png"]?.bytes)
        }
        #expect(images[0]["file_size"] == .number(Double(FakeFalOrigin.media["cat.png"]!.bytes.count)))
        #expect(images[1]["file_size"] == nil && images[0]["width"] == 64)
        let video = try #require(result["video"]?["url"]?.stringValue)
        #expect(video.hasSuffix(".mp4"), "the declared content type wins over the served octet-stream")
        #expect(try await stored(video, store: store) == FakeFalOrigin.media["clip.bin"]?.bytes)
        #expect(result["video"]?["file_size"] == .number(Double(FakeFalOrigin.media["clip.bin"]!.bytes.count)))
        let thumbnail = try #require(result["thumbnail"]?["url"]?.stringValue)
        #expect(thumbnail.hasSuffix(".jpg"))
        #expect(try await stored(thumbnail, store: store) == FakeFalOrigin.media["thumb.jpg"]?.bytes)
        // Not media: left as they were.
        #expect(result["homepage"]?["url"] == .string(origin.baseURL + "/about"))
        #expect(result["echo"]?["image_url"] == .string(origin.baseURL + "/media/cat.png"))
        #expect(result["seed"] == 7)
        let record = origin.record.withLock { $0 }
        #expect(record.mediaRequests == ["cat.png": 1, "clip.bin": 1, "thumb.jpg": 1], "each URL is pulled once")
        #expect(
            record.mediaAuthorizations.allSatisfy { $0 == "Key test-key" },
            "media on the origin's own host get the key"
        )
    }

    func stored(_ url: String, store: BlobStore) async throws -> [UInt8]? {
        let name = url.dropFirst((Self.publicBase + "/files/").count)
        let digest = try #require(Digest128(hex: name.prefix(32)))
        return try await store.read(digest)
    }

    // MARK: - Progress and results

    @Test func followsTheStatusStreamAndPullsMedia() async throws {
        try await withOrigin { fixture in
            let (job, log) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .success(let result, let seconds) = try await outcome(of: job) else {
                Issue.record("expected success, got \(job.status.phase)")
                return
            }
            #expect(seconds == 1.25)
            #expect(log.positions == [2, 1])
            #expect(log.logs == ["line 1", "line 2", "line 3"])
            #expect(log.starts == 1 && log.terminals == 1)
            try await expectMediaPulled(result, store: fixture.store, origin: fixture.origin)
            let record = fixture.origin.record.withLock { $0 }
            #expect(record.jobsCreated == ["req-1"] && record.streamRequests == 1 && record.statusPolls == 0)
            #expect(record.authorizations == ["Key test-key"])
            // The normalised input went upstream, compact JSON.
            let sent = try JSONValue(parsing: record.submitBodies.first ?? "")
            #expect(sent == .object(job.input.fields))
        }
    }

    @Test func cumulativeStreamLogsAreNotRepeated() async throws {
        var script = FakeFalOrigin.Script()
        script.cumulativeStreamLogs = true
        try await withOrigin(script) { fixture in
            let (job, log) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .success = try await outcome(of: job) else {
                Issue.record("expected success, got \(job.status.phase)")
                return
            }
            #expect(log.logs == ["line 1", "line 2", "line 3"])
        }
    }

    @Test func pollsWhenTheOriginHasNoStatusStream() async throws {
        for mode in [FakeFalOrigin.StreamMode.notFound, .wrongContentType] {
            var script = FakeFalOrigin.Script()
            script.stream = mode
            try await withOrigin(script) { fixture in
                let (job, log) = try makeJob()
                _ = fixture.upstream.start(job)
                guard case .success(let result, let seconds) = try await outcome(of: job) else {
                    Issue.record("expected success, got \(job.status.phase)")
                    return
                }
                #expect(seconds == 1.25)
                #expect(log.positions == [2, 1])
                #expect(log.logs == ["line 1", "line 2", "line 3"])
                #expect(log.terminals == 1)
                try await expectMediaPulled(result, store: fixture.store, origin: fixture.origin)
                let record = fixture.origin.record.withLock { $0 }
                #expect(record.streamRequests == 1 && record.statusPolls >= 6 && record.jobsCreated.count == 1)
            }
        }
    }

    @Test func pollingOnlyWhenTheStreamIsSwitchedOff() async throws {
        try await withOrigin(
            configure: { $0.useStatusStream = false },
            body: { fixture in
                let (job, log) = try makeJob()
                _ = fixture.upstream.start(job)
                guard case .success = try await outcome(of: job) else {
                    Issue.record("expected success, got \(job.status.phase)")
                    return
                }
                #expect(log.logs == ["line 1", "line 2", "line 3"])
                #expect(fixture.origin.record.withLock { $0.streamRequests } == 0)
            }
        )
    }

    @Test func aStreamThatDropsFallsBackToPollingWithoutResubmitting() async throws {
        var script = FakeFalOrigin.Script()
        script.stream = .dropAfter(3)  // queued 2, queued 1, running with line 1: then the connection is cut
        try await withOrigin(script) { fixture in
            let (job, log) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .success(let result, _) = try await outcome(of: job) else {
                Issue.record("expected success, got \(job.status.phase)")
                return
            }
            #expect(log.logs == ["line 1", "line 2", "line 3"], "no line lost or repeated across the switch")
            // What the cut connection had delivered, and nothing twice (a reset may discard unread bytes).
            #expect([2, 1].starts(with: log.positions), "\(log.all)")
            #expect(log.starts == 1 && log.terminals == 1)
            try await expectMediaPulled(result, store: fixture.store, origin: fixture.origin)
            let record = fixture.origin.record.withLock { $0 }
            #expect(record.submitAttempts == 1 && record.jobsCreated == ["req-1"])
            #expect(record.streamRequests == 1 && record.statusPolls >= 3)
        }
    }

    // MARK: - Submit failures and retries

    @Test func retriesASubmitTheOriginTurnedAway() async throws {
        var script = FakeFalOrigin.Script()
        script.submitFailures = [503, 503]
        try await withOrigin(script) { fixture in
            let (job, log) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .success = try await outcome(of: job) else {
                Issue.record("expected success, got \(job.status.phase)")
                return
            }
            #expect(log.terminals == 1)
            let record = fixture.origin.record.withLock { $0 }
            #expect(record.submitAttempts == 3 && record.jobsCreated == ["req-3"], "exactly one job created")
        }
    }

    @Test func aServerErrorOnSubmitIsNotRetried() async throws {
        var script = FakeFalOrigin.Script()
        script.submitAlways = 500
        try await withOrigin(script) { fixture in
            let (job, log) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .failure(let error) = try await outcome(of: job) else {
                Issue.record("expected failure, got \(job.status.phase)")
                return
            }
            #expect(
                error.status == 502 && error.errorType == "upstream_error" && error.message.contains("scripted 500")
            )
            #expect(
                error.message.contains("origin \(fixture.origin.baseURL) answered HTTP 500 to submit"),
                "\(error.message)"
            )
            #expect(log.terminals == 1)
            #expect(fixture.origin.record.withLock { $0.submitAttempts } == 1)
        }
    }

    @Test func rateLimitIsRetriedThenReported() async throws {
        var script = FakeFalOrigin.Script()
        script.submitAlways = 429
        script.retryAfter = "0"
        try await withOrigin(script) { fixture in
            let (job, log) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .failure(let error) = try await outcome(of: job) else {
                Issue.record("expected failure, got \(job.status.phase)")
                return
            }
            #expect(error.status == 503 && error.errorType == "rate_limited")
            #expect(
                error.message.contains("origin \(fixture.origin.baseURL)") && error.message.contains("HTTP 429"),
                "\(error.message)"
            )
            #expect(
                error.message.contains("after 4 attempts") && error.message.contains("scripted 429"),
                "\(error.message)"
            )
            #expect(log.terminals == 1)
            #expect(fixture.origin.record.withLock { $0.submitAttempts } == 4)
        }
    }

    @Test func validationErrorsOnSubmitKeepTheir422() async throws {
        var script = FakeFalOrigin.Script()
        script.submitAlways = 422
        try await withOrigin(script) { fixture in
            let (job, _) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .failure(let error) = try await outcome(of: job) else {
                Issue.record("expected failure, got \(job.status.phase)")
                return
            }
            #expect(error.status == 422 && error.message == "body.prompt: prompt is too long")
            #expect(fixture.origin.record.withLock { $0.submitAttempts } == 1)
        }
    }

    // MARK: - Failed jobs and broken answers

    @Test func aJobThatCompletedWithAnErrorFailsWithTheOriginsStatus() async throws {
        var script = FakeFalOrigin.Script()
        script.result = .validationError
        try await withOrigin(script) { fixture in
            let (job, log) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .failure(let error) = try await outcome(of: job) else {
                Issue.record("expected failure, got \(job.status.phase)")
                return
            }
            #expect(error == .validation(.invalid("prompt", "prompt is too long")))
            #expect(log.logs == ["line 1", "line 2", "line 3"] && log.terminals == 1)
            #expect(fixture.origin.record.withLock { $0.resultRequests } == 1)
        }
    }

    @Test func aMalformedResultFailsClearly() async throws {
        var script = FakeFalOrigin.Script()
        script.result = .malformed
        try await withOrigin(script) { fixture in
            let (job, log) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .failure(let error) = try await outcome(of: job) else {
                Issue.record("expected failure, got \(job.status.phase)")
                return
            }
            #expect(
                error.status == 502
                    && error.message.contains("origin \(fixture.origin.baseURL) result is not valid JSON")
            )
            #expect(log.terminals == 1)
        }
    }

    @Test func aStalledOriginFailsAtTheJobDeadlineAndIsCancelled() async throws {
        var script = FakeFalOrigin.Script()
        script.stream = .stallAfter(3)
        try await withOrigin(
            script,
            configure: { $0.jobDeadline = .milliseconds(600) },
            body: { fixture in
                let (job, log) = try makeJob()
                let started = ContinuousClock.now
                _ = fixture.upstream.start(job)
                guard case .failure(let error) = try await outcome(of: job, within: 10) else {
                    Issue.record("expected failure, got \(job.status.phase)")
                    return
                }
                #expect(
                    ContinuousClock.now - started < .seconds(5),
                    "the deadline, not the 45 s idle timeout, ended it"
                )
                #expect(error.status == 503 && error.errorType == "request_timeout")
                #expect(["line 1"].starts(with: log.logs) && log.terminals == 1)
                #expect(try await eventually { fixture.origin.record.withLock { $0.cancels } == ["req-1"] })
            }
        )
    }

    @Test func aSubmitThatNeverAnswersStillEndsTheJob() async throws {
        var script = FakeFalOrigin.Script()
        script.submitStalls = true
        try await withOrigin(
            script,
            configure: {
                $0.jobDeadline = .milliseconds(500)
                $0.requestTimeout = .seconds(1)
            },
            body: { fixture in
                let (job, log) = try makeJob()
                _ = fixture.upstream.start(job)
                guard case .failure(let error) = try await outcome(of: job, within: 5) else {
                    Issue.record("expected failure, got \(job.status.phase)")
                    return
                }
                #expect(error.errorType == "request_timeout" && log.terminals == 1)
                // The submit may have reached the origin, so it is not repeated after its timeout.
                try await Task.sleep(for: .milliseconds(1500))
                #expect(fixture.origin.record.withLock { $0.submitAttempts } == 1)
            }
        )
    }

    // MARK: - Cancel

    @Test func cancellingTheLastRequestCancelsAtTheOrigin() async throws {
        var script = FakeFalOrigin.Script()
        script.stream = .stallAfter(3)
        try await withOrigin(script) { fixture in
            let upstream = fixture.upstream
            let table = JobTable(upstream: { _ in upstream })
            let input = try ModelInput(model: Self.model, input: ["prompt": "a fox", "seed": 3])
            let request = table.submit(
                input,
                endpoint: try #require(EndpointID(Self.model.id)),
                key: RequestKey(digest: Digest128(high: 5, low: 6)),
                ownerKeyID: nil
            )
            #expect(try await eventually { request.job.status.logs.count == 1 })
            #expect(table.cancel(request.id, keyID: nil) == .cancellationRequested)
            #expect(try await eventually { fixture.origin.record.withLock { $0.cancels } == ["req-1"] })
            #expect(request.job.status.phase == .completed(.cancelled))
            // Nothing more reaches the job, and the origin is not polled on.
            try await Task.sleep(for: .milliseconds(200))
            #expect(fixture.origin.record.withLock { $0.statusPolls } == 0)
            #expect(request.job.status.phase == .completed(.cancelled))
        }
    }

    @Test func cancellingDuringTheSubmitCancelsTheJobItCreated() async throws {
        try await withOrigin { fixture in
            let (job, log) = try makeJob()
            let task = fixture.upstream.start(job)
            task.cancel()
            // Either the submit was not sent yet (nothing to cancel), or the job it created is cancelled.
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await eventually { fixture.origin.record.withLock { $0.cancels == $0.jobsCreated } })
            #expect(
                fixture.origin.record.withLock { $0.jobsCreated.count <= 1 && $0.statusPolls + $0.streamRequests == 0 }
            )
            #expect(log.terminals == 0)
        }
    }
}

/// Every event a job delivered, in order.
final class FalOriginEventLog: Sendable {
    private let events = Mutex<[JobEvent]>([])

    func append(_ event: JobEvent) {
        events.withLock { $0.append(event) }
    }

    var all: [JobEvent] { events.withLock { $0 } }

    var positions: [Int] {
        all.compactMap { if case .queuePosition(let position) = $0.kind { position } else { nil } }
    }

    var logs: [String] {
        all.compactMap { if case .log(let entry) = $0.kind { entry.message } else { nil } }
    }

    var starts: Int { all.count { if case .started = $0.kind { true } else { false } } }

    var terminals: Int { all.count { $0.isTerminal } }
}
