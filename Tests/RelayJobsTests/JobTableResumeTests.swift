import Foundation
import NIOPosix
import RelayCore
import RelayStore
import Synchronization
import Testing

@testable import RelayJobs

/// An upstream that keeps jobs by id and can follow, after a restart, those accepted by `origin`.
final class ResumingUpstream: Upstream, Sendable {
    final class Task: UpstreamTask, Sendable {
        let job: Job
        let handle: UpstreamHandle?
        init(job: Job, handle: UpstreamHandle?) {
            self.job = job
            self.handle = handle
        }
        func cancel() {}
    }

    let origin: String
    private let state = Mutex<(started: [Task], resumed: [Task], declined: Int)>(([], [], 0))

    init(origin: String) {
        self.origin = origin
    }

    func start(_ job: Job) -> any UpstreamTask {
        let task = Task(job: job, handle: nil)
        state.withLock { $0.started.append(task) }
        return task
    }

    func resume(_ job: Job, from handle: UpstreamHandle, attachedAt: Timestamp) -> (any UpstreamTask)? {
        guard handle.origin == origin else {
            state.withLock { $0.declined += 1 }
            return nil
        }
        let task = Task(job: job, handle: handle)
        state.withLock { $0.resumed.append(task) }
        return task
    }

    var started: [Task] { state.withLock { $0.started } }
    var resumed: [Task] { state.withLock { $0.resumed } }
    var declined: Int { state.withLock { $0.declined } }
}

/// After a restart, jobs still running at an origin are followed there again by the origin's id; the rest end as
/// `relay_restarted`.
@Suite("JobTable resume", .timeLimit(.minutes(1)))
struct JobTableResumeTests {
    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image, defaults: ["num_images": 1])
    let hasher = KeyedHasher(secret: Array(repeating: 5, count: KeyedHasher.secretSize))
    let endpoint = EndpointID("fal-ai/flux/dev")!

    func input(_ prompt: String, seed: Int? = 1) throws -> ModelInput {
        var object: JSONObject = ["prompt": .string(prompt)]
        if let seed { object["seed"] = .number(Double(seed)) }
        return try ModelInput(model: model, input: object)
    }

    func handle(_ id: String, origin: String) -> UpstreamHandle {
        let base = origin + "/fal-ai/flux/requests/" + id
        return UpstreamHandle(
            origin: origin,
            requestID: id,
            statusURL: base + "/status",
            responseURL: base,
            cancelURL: base + "/cancel"
        )
    }

    /// A table over `directory` as the server builds one, restored with the catalog's one model (not resumed yet).
    func table(_ directory: String, upstream: ResumingUpstream) async throws -> (JobTable, RequestLog.LoadReport?) {
        let results = ResultIndex(directory: directory, threadPool: .singleton)
        try await results.load()
        let table = JobTable(
            results: results,
            log: RequestLog(dataDirectory: directory, threadPool: .singleton, retentionSeconds: 3600)
        ) { _ in
            upstream
        }
        let model = self.model
        let report = try await table.restore(models: { $0 == model.id ? model : nil })
        return (table, report)
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

    func completed(_ table: JobTable, _ id: String, owner: String?) async throws -> JobPhase? {
        for _ in 0..<500 {
            guard let request = table.request(id, keyID: owner) else { return nil }
            if request.phase.isCompleted { return request.phase }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("request \(id) did not complete")
        return nil
    }

    static func directory() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "relayjobs-resume-\(UUID().uuidString)"
        ).path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func aJobAttachedAtTheOriginIsFollowedAgainByItsID() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let origin = "http://origin.test"
        let first = ResumingUpstream(origin: origin)
        let (before, _) = try await table(directory, upstream: first)
        let attachedInput = try input("at the origin")
        let mine = await submit(before, attachedInput, owner: "key-a")
        let theirs = await submit(before, attachedInput, owner: "key-b")
        let unattached = await submit(before, try input("never reached the origin"), owner: "key-a")
        #expect(first.started.count == 2 && theirs.job === mine.job)
        mine.job.attached(to: handle("o-1", origin: origin))
        mine.job.receive(.log("step 1", level: .info))
        await before.log?.flush()

        // "Crash": a new table on the same directory.
        let second = ResumingUpstream(origin: origin)
        let (after, report) = try await table(directory, upstream: second)
        #expect(report?.interrupted == 3 && report?.reattachable == 2)
        let restoredMine = try #require(after.request(mine.id, keyID: "key-a"))
        let restoredTheirs = try #require(after.request(theirs.id, keyID: "key-b"))
        #expect(after.request(mine.id, keyID: "key-b") == nil, "owners are kept")
        #expect(
            restoredMine.job === restoredTheirs.job && restoredMine.job.id == mine.job.id
                && restoredMine.job.key == mine.job.key
        )
        #expect(
            restoredMine.job.input.canonicalBytes == attachedInput.canonicalBytes,
            "the input is rebuilt through the catalog"
        )
        #expect(!restoredMine.phase.isCompleted && second.resumed.isEmpty, "not followed before resumeAttached")
        #expect(
            try await completed(after, unattached.id, owner: "key-a") == .completed(.failure(JobTable.restartedError))
        )

        #expect(after.resumeAttached() == 1)
        #expect(after.resumeAttached() == 0, "once")
        let task = try #require(second.resumed.first)
        #expect(task.job === restoredMine.job && task.handle == handle("o-1", origin: origin))
        #expect(second.started.isEmpty, "never resubmitted")
        // Identical new work coalesces onto the followed job.
        let late = await submit(after, attachedInput, owner: "key-a")
        #expect(late.cacheOutcome == .coalesced && late.job === task.job)

        let result: JSONValue = ["images": [["url": "https://relay.test/files/a.png"]], "seed": 1]
        task.job.receive(.succeeded(result: result, inferenceSeconds: 2))
        let success = JobPhase.completed(.success(result: result, inferenceSeconds: 2))
        #expect(try await completed(after, mine.id, owner: "key-a") == success)
        #expect(try await completed(after, theirs.id, owner: "key-b") == success)
        #expect(try await completed(after, late.id, owner: "key-a") == success)
        #expect(
            after.results.lookup(mine.job.key, modelID: model.id, canonicalInput: attachedInput.canonicalBytes) != nil
        )
        await after.log?.flush()

        // A third start serves the end from the log and follows nothing.
        let third = ResumingUpstream(origin: origin)
        let (again, againReport) = try await table(directory, upstream: third)
        #expect(againReport?.reattachable == 0)
        #expect(again.resumeAttached() == 0 && third.resumed.isEmpty)
        #expect(again.request(theirs.id, keyID: "key-b")?.phase == success)
        #expect(again.request(unattached.id, keyID: "key-a")?.phase == .completed(.failure(JobTable.restartedError)))
    }

    @Test func aJobNoUpstreamCanFollowEndsAsRestartedForGood() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = ResumingUpstream(origin: "http://old-origin.test")
        let (before, _) = try await table(directory, upstream: first)
        let request = await submit(before, try input("moved"), owner: nil)
        request.job.attached(to: handle("o-9", origin: "http://old-origin.test"))
        await before.log?.flush()

        // Restarted with another origin: the job cannot be followed there.
        let second = ResumingUpstream(origin: "http://new-origin.test")
        let (after, _) = try await table(directory, upstream: second)
        #expect(after.resumeAttached() == 0 && second.declined == 1 && second.started.isEmpty)
        #expect(try await completed(after, request.id, owner: nil) == .completed(.failure(JobTable.restartedError)))
        await after.log?.flush()

        let third = ResumingUpstream(origin: "http://old-origin.test")
        let (again, report) = try await table(directory, upstream: third)
        #expect(
            report?.reattachable == 0 && again.resumeAttached() == 0 && third.resumed.isEmpty,
            "the end is on record"
        )
        #expect(again.request(request.id, keyID: nil)?.phase == .completed(.failure(JobTable.restartedError)))
    }

    @Test func anAttachmentAfterTheEndIsNotRecorded() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let origin = "http://origin.test"
        let (before, _) = try await table(directory, upstream: ResumingUpstream(origin: origin))
        let request = await submit(before, try input("quick"), owner: nil)
        request.job.receive(.failed(.badGateway("origin http://origin.test answered HTTP 500 to submit: boom")))
        _ = try await completed(before, request.id, owner: nil)
        request.job.attached(to: handle("o-late", origin: origin))
        await before.log?.flush()
        let (after, report) = try await table(directory, upstream: ResumingUpstream(origin: origin))
        #expect(report?.reattachable == 0 && after.resumeAttached() == 0)
        let failure = FalError.badGateway("origin http://origin.test answered HTTP 500 to submit: boom")
        #expect(after.request(request.id, keyID: nil)?.phase == .completed(.failure(failure)))
        #expect(after.results.count == 0, "a 502 is not cached")
    }
}
