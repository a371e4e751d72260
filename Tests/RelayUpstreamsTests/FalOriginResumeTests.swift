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

/// The origin upstream behind a durable job table: a job the origin accepted is followed there again after a
/// restart (never resubmitted), and no failure but a 422 is cached.
@Suite(.timeLimit(.minutes(2)))
struct FalOriginResumeTests {
    static let model = FalOriginUpstreamTests.model
    let hasher = KeyedHasher(secret: Array(repeating: 9, count: KeyedHasher.secretSize))
    let endpoint = EndpointID("fal-ai/flux/dev")!

    /// One relay "process": an origin upstream and a job table over `directory` (restored, not resumed yet).
    struct Relay {
        let upstream: FalOriginUpstream
        let table: JobTable
    }

    func makeRelay(
        _ directory: String,
        origin: FakeFalOrigin,
        store: BlobStore,
        pool: NIOThreadPool
    ) async throws -> Relay {
        var configuration = FalOriginUpstream.Configuration(
            baseURL: origin.baseURL,
            apiKey: "test-key",
            publicBaseURL: { FalOriginUpstreamTests.publicBase }
        )
        configuration.retry = RetryPolicy(baseDelay: .milliseconds(10), maxDelay: .milliseconds(40), maxAttempts: 4)
        configuration.statusPollInterval = .milliseconds(10)
        configuration.requestTimeout = .seconds(5)
        configuration.idleTimeout = .seconds(60)
        configuration.jobDeadline = .seconds(30)
        var logger = Logger(label: "origin-resume-test")
        logger.logLevel =
            ProcessInfo.processInfo.environment["ORIGIN_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        let upstream = try FalOriginUpstream(configuration: configuration, store: store, logger: logger)
        let results = ResultIndex(directory: directory, threadPool: pool)
        try await results.load()
        let table = JobTable(
            results: results,
            log: RequestLog(dataDirectory: directory, threadPool: pool, retentionSeconds: 3600)
        ) { _ in
            upstream
        }
        try await table.restore(models: { $0 == Self.model.id ? Self.model : nil })
        return Relay(upstream: upstream, table: table)
    }

    func withStore(_ body: (String, BlobStore, NIOThreadPool) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "origin-resume-\(UUID().uuidString)"
        ).path
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try BlobStore(directory: directory, hasher: hasher, threadPool: pool)
        do {
            try await body(directory, store, pool)
        } catch {
            try? await pool.shutdownGracefully()
            throw error
        }
        try await pool.shutdownGracefully()
    }

    func submit(_ table: JobTable, _ input: ModelInput, owner: String?) async -> RelayRequest {
        let request = table.submit(
            input,
            endpoint: endpoint,
            key: RequestKey(input: input, hasher: hasher),
            ownerKeyID: owner
        )
        await withCheckedContinuation { continuation in request.recorded.whenDone { continuation.resume() } }
        return request
    }

    func eventually(within seconds: Double = 10, _ condition: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(5))
        }
        return condition()
    }

    @Test func anOriginJobIsFollowedAgainAfterARestartNotResubmitted() async throws {
        var script = FakeFalOrigin.Script()
        script.firstStreamHolds = true
        let origin = try await FakeFalOrigin.start(script)
        try await withStore { directory, store, pool in
            let first = try await makeRelay(directory, origin: origin, store: store, pool: pool)
            let input = try ModelInput(model: Self.model, input: ["prompt": "a fox in the snow", "seed": 7])
            let request = await submit(first.table, input, owner: "key-a")
            // Accepted, and the first status event came through the stream that now hangs: the relay "dies" here.
            #expect(try await eventually { request.job.status.lastSequence >= 1 })
            #expect(origin.record.withLock { $0.jobsCreated } == ["req-1"])
            await first.table.log?.flush()

            let second = try await makeRelay(directory, origin: origin, store: store, pool: pool)
            let restored = try #require(second.table.request(request.id, keyID: "key-a"))
            #expect(!restored.phase.isCompleted && restored.job.id == request.job.id)
            #expect(second.table.resumeAttached() == 1)
            #expect(try await eventually { restored.phase.isCompleted })
            guard case .completed(.success(let result, let seconds)) = restored.phase else {
                Issue.record("expected success, got \(restored.phase)")
                try await first.upstream.shutdown()
                try await second.upstream.shutdown()
                return
            }
            #expect(seconds == 1.25)
            let logs = restored.job.status.logs.map(\.message)
            #expect(logs == ["line 1", "line 2", "line 3"], "the origin's logs, followed from the start")
            try await FalOriginUpstreamTests().expectMediaPulled(result, store: store, origin: origin)
            let record = origin.record.withLock { $0 }
            #expect(record.submitAttempts == 1 && record.jobsCreated == ["req-1"], "never resubmitted")
            #expect(record.streamRequests == 2 && record.cancels.isEmpty)
            #expect(
                second.table.results.lookup(
                    request.job.key,
                    modelID: Self.model.id,
                    canonicalInput: input.canonicalBytes
                ) != nil
            )
            try await first.upstream.shutdown()
            try await second.upstream.shutdown()
        }
        await origin.stop()
    }

    @Test func resumeFollowsOnlyHandlesOfItsOwnOrigin() async throws {
        let origin = try await FakeFalOrigin.start()
        try await withStore { directory, store, pool in
            let relay = try await makeRelay(directory, origin: origin, store: store, pool: pool)
            let job = Job(
                input: try ModelInput(model: Self.model, input: ["prompt": "x"]),
                key: RequestKey(digest: Digest128(high: 3, low: 4))
            )
            func handle(_ base: String, _ url: String? = nil) -> UpstreamHandle {
                let at = url ?? base + "/fal-ai/flux/requests/r"
                return UpstreamHandle(
                    origin: base,
                    requestID: "r",
                    statusURL: at + "/status",
                    responseURL: at,
                    cancelURL: at + "/cancel"
                )
            }
            #expect(
                relay.upstream.resume(job, from: handle("http://127.0.0.1:1"), attachedAt: .now()) == nil,
                "another origin"
            )
            #expect(
                relay.upstream.resume(job, from: handle(origin.baseURL, "file:///etc/passwd"), attachedAt: .now())
                    == nil
            )
            #expect(origin.record.withLock { $0.statusPolls + $0.streamRequests } == 0)
            try await relay.upstream.shutdown()
        }
        await origin.stop()
    }

    /// 5xx and an exhausted 429 reach every request faithfully and are never cached: the same request again goes
    /// to the origin again. A 422 passes through with its detail, and is the one failure cached (briefly).
    @Test(arguments: [500, 503, 429, 422])
    func onlyA422IsCached(status: Int) async throws {
        var script = FakeFalOrigin.Script()
        script.submitAlways = status
        script.retryAfter = "0"
        let origin = try await FakeFalOrigin.start(script)
        try await withStore { directory, store, pool in
            let relay = try await makeRelay(directory, origin: origin, store: store, pool: pool)
            let input = try ModelInput(model: Self.model, input: ["prompt": "same again", "seed": 3])
            var errors: [FalError] = []
            var outcomes: [CacheOutcome] = []
            for _ in 0..<2 {
                let request = await submit(relay.table, input, owner: nil)
                outcomes.append(request.cacheOutcome)
                #expect(try await eventually { request.phase.isCompleted })
                guard case .completed(.failure(let error)) = request.phase else {
                    Issue.record("expected a failure, got \(request.phase)")
                    break
                }
                errors.append(error)
            }
            let attempts = origin.record.withLock { $0.submitAttempts }
            let first = try #require(errors.first)
            switch status {
            case 422:
                #expect(first.status == 422 && first.message == "body.prompt: prompt is too long")
                #expect(outcomes == [.miss, .hit] && attempts == 1 && errors.last == first)
            case 429:
                #expect(first.status == 503 && first.errorType == "rate_limited" && first.message.contains("HTTP 429"))
                #expect(outcomes == [.miss, .miss] && attempts == 8 && relay.table.results.count == 0)
            default:
                #expect(first.status == 502 && first.errorType == "upstream_error", "\(first)")
                #expect(
                    first.message.contains("origin \(origin.baseURL) answered HTTP \(status)")
                        && first.message.contains("scripted \(status)")
                )
                #expect(outcomes == [.miss, .miss] && relay.table.results.count == 0)
                #expect(attempts == (status == 503 ? 8 : 2), "503 is retried, 500 is not")
            }
            try await relay.upstream.shutdown()
        }
        await origin.stop()
    }
}
