import RelayCore
import RelayStore
import Synchronization
import Testing

@testable import RelayJobs

/// An upstream that does nothing until told: the test drives each job by hand.
final class ManualUpstream: Upstream, Sendable {
    final class Task: UpstreamTask, Sendable {
        let job: Job
        private let cancelled = Atomic<Bool>(false)
        init(job: Job) { self.job = job }
        func cancel() { cancelled.store(true, ordering: .relaxed) }
        var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
    }

    private let started = Mutex<[Task]>([])

    func start(_ job: Job) -> any UpstreamTask {
        let task = Task(job: job)
        started.withLock { $0.append(task) }
        return task
    }

    var tasks: [Task] { started.withLock { $0 } }
}

@Suite struct JobTableTests {
    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image, defaults: ["num_images": 1])
    let hasher = KeyedHasher(secret: Array(repeating: 7, count: KeyedHasher.secretSize))
    let endpoint = EndpointID("fal-ai/flux/dev")!

    func input(_ prompt: String, seed: Int? = 1) throws -> ModelInput {
        var object: JSONObject = ["prompt": .string(prompt)]
        if let seed { object["seed"] = .number(Double(seed)) }
        return try ModelInput(model: model, input: object)
    }

    func submit(_ table: JobTable, _ input: ModelInput, owner: String? = nil, coalesce: Bool = true) -> RelayRequest {
        table.submit(
            input,
            endpoint: endpoint,
            key: RequestKey(input: input, hasher: hasher),
            ownerKeyID: owner,
            directives: CacheDirectives(noCache: !coalesce)
        )
    }

    @Test func identicalWorkInFlightIsDoneOnce() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let first = submit(table, try input("a fox"))
        let second = submit(table, try input("a fox"))
        let other = submit(table, try input("a cat"))
        #expect(upstream.tasks.count == 2)
        #expect(first.id != second.id)
        #expect(first.job === second.job && first.job !== other.job)
        #expect(first.cacheOutcome == .miss && second.cacheOutcome == .coalesced)
        upstream.tasks[0].job.receive(.succeeded(result: ["done": true], inferenceSeconds: 1))
        #expect(
            table.request(second.id, keyID: nil)?.phase
                == .completed(.success(result: ["done": true], inferenceSeconds: 1))
        )
        // Finished, seeded work is served from the result cache: no new upstream job.
        let third = submit(table, try input("a fox"))
        #expect(third.job !== first.job && upstream.tasks.count == 2)
        #expect(third.cacheOutcome == .hit && third.cacheStatus.hasPrefix("MediaRelay; hit; ttl="))
        #expect(third.phase == .completed(.success(result: ["done": true], inferenceSeconds: 1)))
    }

    @Test func unseededResultsCoalesceButAreNotCached() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let first = submit(table, try input("random", seed: nil))
        let second = submit(table, try input("random", seed: nil))
        #expect(second.cacheOutcome == .coalesced && upstream.tasks.count == 1)
        #expect(first.cacheStatus.contains("fwd=miss") && !first.cacheStatus.contains("stored"))
        upstream.tasks[0].job.receive(.succeeded(result: ["r": 1], inferenceSeconds: nil))
        let third = submit(table, try input("random", seed: nil))
        #expect(third.cacheOutcome == .miss && upstream.tasks.count == 2)
    }

    @Test func alwaysPolicyCachesWithoutASeed() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let speech = ModelSpec(id: "fal-ai/tts/x", title: "tts", kind: .audio, dedup: .always, required: ["text"])
        let a = try ModelInput(model: speech, input: ["text": "hello"])
        let endpoint = EndpointID("fal-ai/tts/x")!
        _ = table.submit(a, endpoint: endpoint, key: RequestKey(input: a, hasher: hasher), ownerKeyID: nil)
        upstream.tasks[0].job.receive(.succeeded(result: ["audio": "x"], inferenceSeconds: nil))
        let again = table.submit(a, endpoint: endpoint, key: RequestKey(input: a, hasher: hasher), ownerKeyID: nil)
        #expect(again.cacheOutcome == .hit && upstream.tasks.count == 1)
    }

    @Test func noCacheRegeneratesAndNoStoreKeepsNothing() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let stored = submit(table, try input("fresh"))
        upstream.tasks[0].job.receive(.succeeded(result: ["v": 1], inferenceSeconds: nil))
        #expect(stored.cacheStatus.contains("stored"))
        let refreshed = submit(table, try input("fresh"), coalesce: false)
        #expect(
            refreshed.cacheOutcome == .bypass && refreshed.cacheStatus.contains("fwd=request")
                && upstream.tasks.count == 2
        )
        upstream.tasks[1].job.receive(.succeeded(result: ["v": 2], inferenceSeconds: nil))
        // The regenerated result replaced the old one.
        #expect(
            submit(table, try input("fresh")).phase == .completed(.success(result: ["v": 2], inferenceSeconds: nil))
        )

        let secret = try input("secret")
        let key = RequestKey(input: secret, hasher: hasher)
        let kept = table.submit(
            secret,
            endpoint: endpoint,
            key: key,
            ownerKeyID: nil,
            directives: CacheDirectives(noStore: true)
        )
        #expect(!kept.cacheStatus.contains("stored"))
        upstream.tasks[2].job.receive(.succeeded(result: ["v": 3], inferenceSeconds: nil))
        #expect(table.results.count == 1)
        #expect(submit(table, try input("secret")).cacheOutcome == .miss)
    }

    @Test func failuresAreNotCachedButRejectionsAreBriefly() throws {
        let upstream = ManualUpstream()
        let table = JobTable(cachePolicy: .init(resultTTLSeconds: 100, negativeTTLSeconds: 5)) { _ in upstream }
        _ = submit(table, try input("flaky"))
        upstream.tasks[0].job.receive(.failed(.unavailable("busy")))
        #expect(submit(table, try input("flaky")).cacheOutcome == .miss)
        #expect(upstream.tasks.count == 2)

        _ = submit(table, try input("invalid"))
        upstream.tasks[2].job.receive(.failed(.validation(.missing("image_url"))))
        let again = submit(table, try input("invalid"))
        #expect(again.cacheOutcome == .hit && upstream.tasks.count == 3)
        #expect(again.phase == .completed(.failure(.validation(.missing("image_url")))))
        // Negative entries expire quickly.
        table.sweep(now: Timestamp(secondsSinceEpoch: Timestamp.now().secondsSinceEpoch + 10))
        #expect(submit(table, try input("invalid")).cacheOutcome == .miss)
    }

    @Test func cacheHitsAreVerifiedByteForByte() throws {
        let table = JobTable { _ in ManualUpstream() }
        let a = try input("one")
        let b = try input("two")
        let key = RequestKey(input: a, hasher: hasher)
        let now = Timestamp.now()
        table.results.store(
            key,
            CachedResult(
                modelID: model.id,
                canonicalInput: a.canonicalBytes,
                outcome: .success(result: ["a": 1], inferenceSeconds: nil),
                storedAt: now,
                expiresAt: Timestamp(secondsSinceEpoch: now.secondsSinceEpoch + 60)
            )
        )
        // Same key, other input (a forced collision): a miss, never a wrong answer.
        let collided = table.submit(b, endpoint: endpoint, key: key, ownerKeyID: nil)
        #expect(collided.cacheOutcome == .miss)
        #expect(table.submit(a, endpoint: endpoint, key: key, ownerKeyID: nil).cacheOutcome == .hit)
    }

    @Test func noCacheAndNeverPolicyDoNotCoalesce() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        _ = submit(table, try input("a fox"))
        let bypass = submit(table, try input("a fox"), coalesce: false)
        #expect(bypass.cacheOutcome == .bypass && upstream.tasks.count == 2)

        let never = ModelSpec(id: "fal-ai/x/y", title: "x", kind: .image, dedup: .never)
        let a = try ModelInput(model: never, input: ["prompt": "p"])
        _ = table.submit(
            a,
            endpoint: EndpointID("fal-ai/x/y")!,
            key: RequestKey(input: a, hasher: hasher),
            ownerKeyID: nil
        )
        _ = table.submit(
            a,
            endpoint: EndpointID("fal-ai/x/y")!,
            key: RequestKey(input: a, hasher: hasher),
            ownerKeyID: nil
        )
        #expect(upstream.tasks.count == 4)
    }

    @Test func cancelIsReferenceCounted() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let first = submit(table, try input("shared"))
        let second = submit(table, try input("shared"))
        #expect(table.cancel(first.id, keyID: nil) == .cancellationRequested)
        #expect(table.request(first.id, keyID: nil)?.phase == .completed(.cancelled))
        #expect(!upstream.tasks[0].isCancelled)
        #expect(table.request(second.id, keyID: nil)?.phase == .queued(position: 0))
        #expect(table.cancel(first.id, keyID: nil) == .alreadyCompleted)
        #expect(table.cancel(second.id, keyID: nil) == .cancellationRequested)
        #expect(upstream.tasks[0].isCancelled)
        #expect(first.job.status.phase == .completed(.cancelled))
        #expect(table.cancel("0000", keyID: nil) == .notFound)
    }

    @Test func failuresReachEveryAttachedRequest() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let requests = try (0..<3).map { _ in submit(table, try input("doomed")) }
        upstream.tasks[0].job.receive(.failed(.upstreamFailed("GPU on fire")))
        for request in requests {
            #expect(
                table.request(request.id, keyID: nil)?.phase == .completed(.failure(.upstreamFailed("GPU on fire")))
            )
        }
    }

    @Test func requestsAreVisibleOnlyToTheirKey() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let mine = submit(table, try input("private"), owner: "key-a")
        #expect(table.request(mine.id, keyID: "key-a") != nil)
        #expect(table.request(mine.id, keyID: "key-b") == nil)
        #expect(table.request(mine.id, keyID: nil) == nil)
        #expect(table.cancel(mine.id, keyID: "key-b") == .notFound)
        #expect(table.cancel(mine.id, keyID: "key-a", app: "fal-ai/other") == .notFound)
        // Coalescing still shares the work across keys (global scope).
        let theirs = submit(table, try input("private"), owner: "key-b")
        #expect(theirs.job === mine.job)
    }

    @Test func subscribersSeeReplayThenLiveEventsInOrder() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let request = submit(table, try input("watch"))
        let job = request.job
        job.receive(.queued(position: 1))
        job.receive(.started)
        let seen = Mutex<[Int]>([])
        let subscription = job.subscribe(after: 1) { event in seen.withLock { $0.append(event.sequence) } }
        #expect(subscription.replay.map(\.sequence) == [2])
        job.receive(.log("one", level: .info))
        job.receive(.succeeded(result: [:], inferenceSeconds: nil))
        #expect(seen.withLock { $0 } == [3, 4])
        // A finished job replays everything and registers nobody.
        let late = job.subscribe(after: 0) { _ in Issue.record("no live events after the end") }
        // The superseded queue position is compacted away.
        #expect(late.replay.map(\.sequence) == [2, 3, 4] && late.token == 0)
    }

    @Test func sweepForgetsOldFinishedRequestsOnly() throws {
        let upstream = ManualUpstream()
        let table = JobTable(retentionSeconds: 10) { _ in upstream }
        let done = submit(table, try input("done"))
        let running = submit(table, try input("running"))
        upstream.tasks[0].job.receive(.succeeded(result: [:], inferenceSeconds: nil))
        let later = Timestamp(secondsSinceEpoch: Timestamp.now().secondsSinceEpoch + 60)
        #expect(table.sweep(now: later) == 1)
        #expect(table.request(done.id, keyID: nil) == nil)
        #expect(table.request(running.id, keyID: nil) != nil)
    }

    @Test func eachTableBoundsTheEventLogOfItsOwnJobs() throws {
        let upstream = ManualUpstream()
        let bounded = JobTable(maxEvents: 16) { _ in upstream }
        let unbounded = JobTable { _ in upstream }
        let small = submit(bounded, try input("bounded"))
        let large = submit(unbounded, try input("unbounded"))
        for line in 0..<100 {
            small.job.receive(.log("line \(line)", level: .info))
            large.job.receive(.log("line \(line)", level: .info))
        }
        // The bound trims in batches: at most a quarter over it.
        #expect((16...20).contains(small.job.status.logs.count))
        #expect(small.job.status.logs.last?.message == "line 99")
        #expect(large.job.status.logs.count == 100, "another table in the same process keeps its own bound")
    }
}
