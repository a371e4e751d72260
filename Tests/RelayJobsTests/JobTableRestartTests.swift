import Foundation
import NIOPosix
import RelayCore
import RelayStore
import Synchronization
import Testing

@testable import RelayJobs

/// The job table over a request log and a durable result index: what survives a restart, and when a client may
/// see what.
@Suite("JobTable restarts")
struct JobTableRestartTests {
    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image)
    let hasher = KeyedHasher(secret: Array(repeating: 9, count: KeyedHasher.secretSize))
    let endpoint = EndpointID("fal-ai/flux/dev")!

    func input(_ prompt: String, seed: Int? = 1) throws -> ModelInput {
        var object: JSONObject = ["prompt": .string(prompt)]
        if let seed { object["seed"] = .number(Double(seed)) }
        return try ModelInput(model: model, input: object)
    }

    /// A table as the server builds it: durable results and request log in `directory`, restored before use.
    func table(_ directory: String, pool: NIOThreadPool = .singleton, upstream: ManualUpstream) async throws -> JobTable
    {
        let results = ResultIndex(directory: directory, threadPool: pool)
        try await results.load()
        let table = JobTable(
            results: results,
            log: RequestLog(dataDirectory: directory, threadPool: pool, retentionSeconds: 3600)
        ) { _ in upstream }
        try await table.restore()
        return table
    }

    func submit(_ table: JobTable, _ input: ModelInput, owner: String? = "key-a") async -> RelayRequest {
        let request = table.submit(
            input,
            endpoint: endpoint,
            key: RequestKey(input: input, hasher: hasher),
            ownerKeyID: owner
        )
        await withCheckedContinuation { continuation in request.recorded.whenDone { continuation.resume() } }
        return request
    }

    func waitUntilCompleted(_ request: RelayRequest) async throws {
        for _ in 0..<500 where !request.phase.isCompleted {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(request.phase.isCompleted)
    }

    static func directory() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("relayjobs-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func requestsAreServedByIDAfterARestart() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let upstream = ManualUpstream()
        let before = try await table(directory, upstream: upstream)
        let done = await submit(before, try input("done"))
        let coalesced = await submit(before, try input("done"), owner: "key-b")
        let failed = await submit(before, try input("failed"), owner: nil)
        let running = await submit(before, try input("running"))
        let cancelled = await submit(before, try input("cancelled"))
        let random = await submit(before, try input("random", seed: nil))
        #expect(upstream.tasks.count == 5 && coalesced.job === done.job)
        let result: JSONValue = ["images": [["url": "https://relay.test/files/x.png"]], "seed": 1]
        upstream.tasks[0].job.receive(.succeeded(result: result, inferenceSeconds: 0.5))
        upstream.tasks[1].job.receive(.failed(.upstreamFailed("GPU on fire")))
        upstream.tasks[4].job.receive(.succeeded(result: ["n": 4], inferenceSeconds: nil))
        upstream.tasks[2].job.receive(.log("step 1", level: .info))
        #expect(before.cancel(cancelled.id, keyID: "key-a") == .cancellationRequested)
        for request in [done, coalesced, failed, random] { try await waitUntilCompleted(request) }
        let hit = await submit(before, try input("done"))
        #expect(hit.cacheOutcome == .hit)
        await before.log?.flush()

        // "Crash": a new table on the same directory, nothing shut down.
        let after = try await table(directory, upstream: ManualUpstream())
        let success = JobPhase.completed(.success(result: result, inferenceSeconds: 0.5))
        #expect(after.request(done.id, keyID: "key-a")?.phase == success)
        #expect(after.request(hit.id, keyID: "key-a")?.phase == success)
        #expect(after.request(hit.id, keyID: "key-a")?.cacheOutcome == .hit)
        #expect(after.request(coalesced.id, keyID: "key-b")?.phase == success)
        #expect(
            after.request(random.id, keyID: "key-a")?.phase
                == .completed(.success(result: ["n": 4], inferenceSeconds: nil))
        )
        #expect(
            after.request(failed.id, keyID: "anyone")?.phase == .completed(.failure(.upstreamFailed("GPU on fire")))
        )
        #expect(after.request(running.id, keyID: "key-a")?.phase == .completed(.failure(JobTable.restartedError)))
        #expect(after.request(cancelled.id, keyID: "key-a")?.phase == .completed(.cancelled))
        // Isolation holds across the restart: another key does not see them.
        #expect(after.request(done.id, keyID: "key-b") == nil)
        #expect(after.request(coalesced.id, keyID: "key-a") == nil)
        #expect(after.request(done.id, keyID: nil) == nil)
        // By key too: the result is a cache hit after the restart. Its manifest is not decoded yet, and memory, which
        // an event loop asks, does not read files: the files tier is asked first, off the loop, as a responder does.
        let doneInput = try input("done")
        let doneKey = RequestKey(input: doneInput, hasher: hasher)
        let tiers = after.tiersToAsk(for: doneKey, input: doneInput, fleet: nil)
        #expect(tiers.count == 1)
        for tier in tiers {
            #expect(await tier.fill(doneKey, input: doneInput, into: after.results).found)
        }
        #expect(after.tiersToAsk(for: doneKey, input: doneInput, fleet: nil).isEmpty)
        let again = await submit(after, doneInput)
        #expect(again.cacheOutcome == .hit && again.phase == success)
        // A restored stream ends at once: the replay holds the end and nothing is registered.
        let subscription = try #require(after.request(running.id, keyID: "key-a")).job.subscribe(after: 0) { _ in }
        #expect(subscription.token == 0 && subscription.replay.last?.isTerminal == true)
    }

    @Test func theEndIsPublishedOnlyOnceDurable() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let upstream = ManualUpstream()
        let table = try await table(directory, pool: pool, upstream: upstream)
        let request = await submit(table, try input("slow disk"))

        // Hold the only pool thread: no fsync can finish until it is released.
        let gate = Mutex(false)
        pool.submit { _ in
            while !gate.withLock({ $0 }) { usleep(1000) }
        }
        // The end reaches the completion gate at once, and the gate can do nothing durable while the pool is held.
        upstream.tasks[0].job.receive(.succeeded(result: ["ok": true], inferenceSeconds: 1))
        #expect(!request.phase.isCompleted, "the end was shown before its records were durable")
        // Updates after the end was reported are ignored while it is being written.
        upstream.tasks[0].job.receive(.log("late", level: .info))
        // A submission meanwhile is not answered (its id not handed out) before its record is durable.
        let other = table.submit(
            try input("other"),
            endpoint: endpoint,
            key: RequestKey(input: try input("other"), hasher: hasher),
            ownerKeyID: nil
        )
        #expect(!other.recorded.isDone)

        gate.withLock { $0 = true }
        try await waitUntilCompleted(request)
        #expect(request.phase == .completed(.success(result: ["ok": true], inferenceSeconds: 1)))
        #expect(request.job.status.logs.isEmpty)
        await withCheckedContinuation { continuation in other.recorded.whenDone { continuation.resume() } }
        #expect(table.commitLatency.ends.count == 1 && table.commitLatency.submissions.count == 2)

        // What was published is on disk: a restarted table serves it.
        let after = try await self.table(directory, upstream: ManualUpstream())
        #expect(after.request(request.id, keyID: "key-a")?.phase == request.phase)
        #expect(after.request(other.id, keyID: nil)?.phase == .completed(.failure(JobTable.restartedError)))
        try await pool.shutdownGracefully()
    }
}
