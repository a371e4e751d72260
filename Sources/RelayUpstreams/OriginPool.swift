import CoreMetrics
public import RelayCore
public import RelayJobs
import Synchronization

/// One account of an origin pool: a fal-compatible origin with its own key.
public protocol PoolAccount: Upstream {
    /// Its name in the pool (`x-relay-upstream`, metrics).
    var accountName: String { get }
    /// Its circuit breaker is open: it would fail a job at once.
    var isOpen: Bool { get }
    /// Starts `job` on `endpoint`; `refused` hears a submit the origin certainly did not take (true: the job goes
    /// elsewhere and this account reports nothing more about it). `patient`: retry the submit as a single origin
    /// would (the pool's last chance) rather than hand it back at the first refusal.
    func start(
        _ job: Job,
        endpoint: String,
        patient: Bool,
        refused: (@Sendable (FalError) -> Bool)?
    ) -> any UpstreamTask
}

extension FalOriginUpstream: PoolAccount {
    public var accountName: String { configuration.accountName ?? configuration.baseURL }
    public var isOpen: Bool {
        if case .open = circuitState { return true }
        return false
    }
}

/// Several origin accounts (or origins) for the same models: each job goes to the account with the least work in
/// progress for its concurrency cap; an account that refuses a submit (429, 5xx, unreachable, or its key refused) is
/// cooled down — skipped while others can take its load — and the job tries the next one; when every account failed
/// a model, its catalog `fallbacks` are tried in order the same way. Only a submit no origin accepted moves: a job an
/// origin accepted is never submitted twice.
public final class OriginPool: Upstream {
    public struct Account: Sendable {
        public let upstream: any PoolAccount
        /// Jobs in progress this account takes before the others are preferred (fal allows 2–40 per account); nil:
        /// no cap of its own.
        public let cap: Int?

        public init(_ upstream: any PoolAccount, cap: Int?) {
            self.upstream = upstream
            self.cap = cap
        }
    }

    private struct State {
        var inFlight: [Int]
        var coolUntil: [ContinuousClock.Instant?]
    }

    public let accounts: [Account]
    private let coolDown: Duration
    private let now: @Sendable () -> ContinuousClock.Instant
    private let fallbacks: @Sendable (ModelSpec) -> [String]
    private let state: Mutex<State>

    public init(
        accounts: [Account],
        coolDown: Duration = .seconds(30),
        fallbacks: @escaping @Sendable (ModelSpec) -> [String] = { $0.fallbacks },
        now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
    ) {
        precondition(!accounts.isEmpty, "an origin pool needs an account")
        self.accounts = accounts
        self.coolDown = coolDown
        self.fallbacks = fallbacks
        self.now = now
        state = Mutex(State(inFlight: accounts.map { _ in 0 }, coolUntil: accounts.map { _ in nil }))
    }

    /// Whether a refusal (only ever one the origin certainly did not take the job with) is the account's — it moves
    /// the job on — rather than the request's (a 422 fails the job).
    static func failsOver(_ error: FalError) -> Bool {
        [401, 403, 429, 502, 503, 504].contains(error.status)
    }

    /// An account without a cap ranks as if it had this one.
    static let nominalCap = 10

    public func start(_ job: Job) -> any UpstreamTask {
        let task = PoolTask()
        attempt(job, endpoints: [job.model.id] + fallbacks(job.model), at: 0, tried: [], task: task, lastError: nil)
        return task
    }

    /// A job is followed after a restart by the account that accepted it (its handle names the account); a handle a
    /// single origin wrote before the pool existed (no account in it) by the first account on that URL.
    public func resume(_ job: Job, from handle: UpstreamHandle, attachedAt: Timestamp) -> (any UpstreamTask)? {
        for account in accounts {
            if let task = account.upstream.resume(job, from: handle, attachedAt: attachedAt) { return task }
        }
        guard !handle.origin.contains("#") else { return nil }
        for account in accounts {
            var named = handle
            named.origin = handle.origin + "#" + account.upstream.accountName
            if let task = account.upstream.resume(job, from: named, attachedAt: attachedAt) { return task }
        }
        return nil
    }

    /// Jobs in progress per account, and which accounts are cooling down now (for tests and the admin view).
    public var load: [(name: String, inFlight: Int, coolingDown: Bool)] {
        let moment = now()
        return state.withLock { state in
            accounts.indices.map { index in
                (
                    accounts[index].upstream.accountName, state.inFlight[index],
                    state.coolUntil[index].map { $0 > moment } ?? false
                )
            }
        }
    }

    private func attempt(
        _ job: Job,
        endpoints: [String],
        at level: Int,
        tried: Set<Int>,
        task: PoolTask,
        lastError: FalError?
    ) {
        guard !task.isCancelled else { return }
        guard let index = choose(excluding: tried) else {
            if level + 1 < endpoints.count {
                attempt(job, endpoints: endpoints, at: level + 1, tried: [], task: task, lastError: lastError)
            } else {
                job.receive(.failed(lastError ?? .unavailable("no origin account could take the job")))
            }
            return
        }
        let account = accounts[index].upstream
        let endpoint = endpoints[level]
        job.servedBy = Job.Server(account: account.accountName, model: endpoint)
        // The last account left for the last model waits out a 429 as a single origin would, instead of failing.
        let lastChance = level + 1 == endpoints.count && tried.count + 1 == accounts.count
        Counter(label: "relay_origin_pool_submits_total", dimensions: [("account", account.accountName)]).increment()
        // Released once: by the refusal that moves the job on, or by the job's end.
        let released = Atomic<Bool>(false)
        let release: @Sendable (_ cool: Bool) -> Void = { [weak self] cool in
            guard let self, !released.exchange(true, ordering: .relaxed) else { return }
            self.release(index, cool: cool)
        }
        let generation = task.nextGeneration()
        let inner = account.start(job, endpoint: endpoint, patient: lastChance) { [weak self] error in
            // `x-fal-no-retry`: the caller wants one attempt, on one account.
            guard let self, !job.platform.noRetry, Self.failsOver(error) else { return false }
            Counter(label: "relay_origin_pool_failovers_total", dimensions: [("account", account.accountName)])
                .increment()
            release(true)
            self.attempt(
                job,
                endpoints: endpoints,
                at: level,
                tried: tried.union([index]),
                task: task,
                lastError: error
            )
            return true
        }
        task.set(inner, generation: generation)
        let handle: @Sendable (JobEvent) -> Void = { event in
            if case .completed = event.kind { release(false) }
        }
        let subscription = job.subscribe(after: 0, handle)
        for event in subscription.replay { handle(event) }
    }

    /// The untried account with the least work in progress for its cap, among those not cooling down (nor with an
    /// open circuit) if any is; else the one whose cool-down ends first.
    private func choose(excluding tried: Set<Int>) -> Int? {
        let moment = now()
        return state.withLock { state -> Int? in
            let candidates = accounts.indices.filter { !tried.contains($0) }
            guard !candidates.isEmpty else { return nil }
            let ready = candidates.filter { index in
                !(state.coolUntil[index].map { $0 > moment } ?? false) && !accounts[index].upstream.isOpen
            }
            let chosen: Int?
            if ready.isEmpty {
                chosen = candidates.min { (state.coolUntil[$0] ?? moment) < (state.coolUntil[$1] ?? moment) }
            } else {
                chosen = ready.min { load(of: $0, in: state) < load(of: $1, in: state) }
            }
            if let chosen { state.inFlight[chosen] += 1 }
            return chosen
        }
    }

    /// Work in progress for the cap: beyond its cap an account ranks behind every account still under its own.
    private func load(of index: Int, in state: State) -> (Int, Double) {
        let inFlight = state.inFlight[index]
        let cap = accounts[index].cap ?? Self.nominalCap
        return (inFlight >= cap ? 1 : 0, Double(inFlight) / Double(cap))
    }

    private func release(_ index: Int, cool: Bool) {
        let until = now() + coolDown
        state.withLock { state in
            state.inFlight[index] = max(0, state.inFlight[index] - 1)
            if cool { state.coolUntil[index] = until }
        }
    }
}

/// The pool's handle on a job: cancels whichever account's attempt is current.
final class PoolTask: UpstreamTask {
    private struct State {
        var current: (any UpstreamTask)?
        var generation = 0
        var currentGeneration = -1
        var cancelled = false
    }

    private let state = Mutex(State())

    var isCancelled: Bool { state.withLock { $0.cancelled } }

    func nextGeneration() -> Int {
        state.withLock { state in
            state.generation += 1
            return state.generation
        }
    }

    /// Keeps `task` unless a later attempt already set its own (a refusal heard inside `start` moves on at once).
    func set(_ task: any UpstreamTask, generation: Int) {
        let cancelNow = state.withLock { state -> Bool in
            guard generation > state.currentGeneration else { return false }
            state.current = task
            state.currentGeneration = generation
            return state.cancelled
        }
        if cancelNow { task.cancel() }
    }

    func cancel() {
        let current = state.withLock { state -> (any UpstreamTask)? in
            state.cancelled = true
            return state.current
        }
        current?.cancel()
    }
}
