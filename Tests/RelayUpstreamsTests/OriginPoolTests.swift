import RelayCore
import RelayJobs
import Synchronization
import Testing

@testable import RelayUpstreams

/// The origin pool with scripted accounts and a clock the test moves: spread by work in progress, refusals cooled
/// down and moved on, fallback models when every account failed, and what must never move.
@Suite struct OriginPoolTests {
    /// An account that accepts jobs (and keeps them running) or refuses their submit with an error.
    final class Account: PoolAccount {
        let accountName: String
        let refusal = Mutex<FalError?>(nil)
        let started = Mutex<[(job: Job, endpoint: String)]>([])
        let patience = Mutex<[Bool]>([])
        let cancelled = Atomic<Int>(0)
        var isOpen: Bool { false }

        init(_ name: String) { accountName = name }

        struct Task: UpstreamTask {
            let account: Account
            func cancel() { account.cancelled.add(1, ordering: .relaxed) }
        }

        func start(_ job: Job) -> any UpstreamTask { start(job, endpoint: job.model.id, patient: true, refused: nil) }

        func start(
            _ job: Job,
            endpoint: String,
            patient: Bool,
            refused: (@Sendable (FalError) -> Bool)?
        ) -> any UpstreamTask {
            started.withLock { $0.append((job, endpoint)) }
            patience.withLock { $0.append(patient) }
            if let error = refusal.withLock({ $0 }), refused?(error) != true { job.receive(.failed(error)) }
            return Task(account: self)
        }

        var endpoints: [String] { started.withLock { $0.map(\.endpoint) } }

        /// Follows only what it accepted itself: a handle naming its URL and its account.
        let resumed = Atomic<Int>(0)
        func resume(_ job: Job, from handle: UpstreamHandle, attachedAt: Timestamp) -> (any UpstreamTask)? {
            guard handle.origin == "http://origin#\(accountName)" else { return nil }
            resumed.add(1, ordering: .relaxed)
            return Task(account: self)
        }
    }

    final class Clock: Sendable {
        let now = Mutex(ContinuousClock.now)
        func advance(_ duration: Duration) { now.withLock { $0 += duration } }
    }

    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image, fallbacks: ["fal-ai/flux/schnell"])

    func job(_ n: Int) throws -> Job {
        Job(
            input: try ModelInput(model: model, input: ["prompt": .string("p\(n)")]),
            key: RequestKey(digest: .init(high: 0, low: UInt64(n)))
        )
    }

    func pool(_ accounts: [Account], caps: [Int?]? = nil, clock: Clock = Clock()) -> OriginPool {
        OriginPool(
            accounts: accounts.enumerated().map { OriginPool.Account($1, cap: caps?[$0] ?? nil) },
            coolDown: .seconds(30),
            now: { clock.now.withLock { $0 } }
        )
    }

    @Test func jobsGoToTheAccountWithTheLeastWorkForItsCap() throws {
        let (a, b, c) = (Account("a"), Account("b"), Account("c"))
        let pool = pool([a, b, c], caps: [1, 4, 4])
        var jobs: [Job] = []
        for n in 0..<7 {
            jobs.append(try job(n))
            _ = pool.start(jobs[n])
        }
        #expect(pool.load.map(\.inFlight) == [1, 3, 3])
        #expect(jobs[0].servedBy?.header == "a; model=fal-ai/flux/dev")
        // A job's end frees its place.
        a.started.withLock { $0[0].job }.receive(.succeeded(result: [:], inferenceSeconds: nil))
        #expect(pool.load.map(\.inFlight) == [0, 3, 3])
    }

    @Test func aRefusingAccountIsCooledDownAndTheJobMovesOn() throws {
        let (a, b) = (Account("a"), Account("b"))
        let clock = Clock()
        let pool = pool([a, b], clock: clock)
        a.refusal.withLock { $0 = .rateLimited("slow down") }
        let first = try job(1)
        _ = pool.start(first)
        #expect(a.endpoints.count == 1 && b.endpoints.count == 1 && !first.isTerminal)
        #expect(first.servedBy?.header == "b; model=fal-ai/flux/dev")
        #expect(pool.load.map(\.coolingDown) == [true, false])
        // While it cools down, new work skips it, even with more in progress elsewhere.
        for n in 2..<4 { _ = pool.start(try job(n)) }
        #expect(a.endpoints.count == 1 && b.endpoints.count == 3)
        // After the cool-down it is tried again.
        a.refusal.withLock { $0 = nil }
        clock.advance(.seconds(31))
        _ = pool.start(try job(4))
        #expect(a.endpoints.count == 2)
    }

    @Test func whenEveryAccountFailsAModelItsFallbackIsTriedThenTheJobFails() throws {
        let (a, b) = (Account("a"), Account("b"))
        let pool = pool([a, b])
        a.refusal.withLock { $0 = .unavailable("down") }
        b.refusal.withLock { $0 = .unavailable("down") }
        let first = try job(1)
        _ = pool.start(first)
        #expect(a.endpoints == ["fal-ai/flux/dev", "fal-ai/flux/schnell"])
        #expect(b.endpoints == ["fal-ai/flux/dev", "fal-ai/flux/schnell"])
        // Only the very last account for the very last model waits out refusals as a single origin would.
        #expect(a.patience.withLock { $0 } + b.patience.withLock { $0 } == [false, false, false, true])
        #expect(first.servedByFallback)
        guard case .completed(.failure(let error)) = first.status.phase else {
            Issue.record("every account and fallback failed: the job fails")
            return
        }
        #expect(error.status == 503)
        #expect(pool.load.map(\.inFlight) == [0, 0])
        // A fallback that works serves it, and says so.
        b.refusal.withLock { $0 = nil }
        let second = try job(2)
        _ = pool.start(second)
        #expect(!second.isTerminal)
    }

    @Test func aRequestsOwnErrorOrNoRetryNeverMoves() throws {
        let (a, b) = (Account("a"), Account("b"))
        let pool = pool([a, b])
        a.refusal.withLock { $0 = .validation(.missing("prompt")) }
        let invalid = try job(1)
        _ = pool.start(invalid)
        #expect(invalid.isTerminal && b.endpoints.isEmpty, "a 422 is the request's, not the account's")
        a.refusal.withLock { $0 = .rateLimited("slow down") }
        var platform = PlatformHeaders()
        platform.noRetry = true
        let once = Job(
            input: try ModelInput(model: model, input: ["prompt": "once"]),
            key: RequestKey(digest: .init(high: 1, low: 1)),
            platform: platform
        )
        // Both accounts are equally loaded: the first one gets it, refuses, and the job fails there.
        _ = pool.start(once)
        #expect(once.isTerminal && b.endpoints.isEmpty)
    }

    @Test func cancellingReachesTheCurrentAttempt() throws {
        let (a, b) = (Account("a"), Account("b"))
        let pool = pool([a, b])
        a.refusal.withLock { $0 = .rateLimited("slow down") }
        let task = pool.start(try job(1))
        task.cancel()
        #expect(a.cancelled.load(ordering: .relaxed) == 0 && b.cancelled.load(ordering: .relaxed) == 1)
    }

    /// After a restart a job is followed by the account its handle names; a handle from before the pool (no account)
    /// by the first account on its URL; one from elsewhere by none.
    @Test func aJobIsResumedByTheAccountThatTookIt() throws {
        let (a, b) = (Account("a"), Account("b"))
        let pool = pool([a, b])
        func handle(_ origin: String) -> UpstreamHandle {
            UpstreamHandle(origin: origin, requestID: "r", statusURL: "s", responseURL: "r", cancelURL: "c")
        }
        #expect(pool.resume(try job(1), from: handle("http://origin#b"), attachedAt: .now()) != nil)
        #expect(a.resumed.load(ordering: .relaxed) == 0 && b.resumed.load(ordering: .relaxed) == 1)
        #expect(pool.resume(try job(2), from: handle("http://origin"), attachedAt: .now()) != nil)
        #expect(a.resumed.load(ordering: .relaxed) == 1)
        #expect(pool.resume(try job(3), from: handle("http://elsewhere"), attachedAt: .now()) == nil)
        #expect(pool.resume(try job(4), from: handle("http://origin#gone"), attachedAt: .now()) == nil)
    }
}
