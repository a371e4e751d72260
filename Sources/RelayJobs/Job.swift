public import NIOCore
public import RelayCore
import Synchronization

/// One unit of upstream work, shared by every request attached to it (DESIGN.md "Jobs").
///
/// Thread-safe: upstreams report from their own threads, handlers read and subscribe from event loops. Subscriber
/// callbacks are called under the job's lock, so every subscriber sees events in sequence order even when two
/// threads report at once; a callback must therefore only hand the event on (a handler does
/// `eventLoop.execute`) and never call back into the job.
public final class Job: Sendable {
    public typealias Subscriber = @Sendable (JobEvent) -> Void
    /// Runs when the upstream reports the end, before anyone sees it: it makes the outcome durable and then calls
    /// `publish` (from any thread), which applies and announces the end. Called outside the job's lock.
    public typealias CompletionGate =
        @Sendable (_ outcome: JobOutcome, _ publish: @escaping @Sendable () -> Void) -> Void
    /// Makes an upstream's handle on the job durable (the request log's attachment record).
    public typealias AttachmentRecorder = @Sendable (UpstreamHandle) -> Void

    /// Snapshot for a status poll.
    public struct Status: Sendable {
        public let phase: JobPhase
        public let logs: [LogEntry]
        public let lastSequence: Int
    }

    /// What `subscribe` returns: the events already logged after the requested point, and the handle to stop.
    public struct Subscription: Sendable {
        public let replay: [JobEvent]
        public let token: Int
    }

    /// Hands work to the thread a group of subscribers lives on (an event loop's `execute`).
    public typealias Executor = @Sendable (_ work: @escaping @Sendable () -> Void) -> Void

    /// Subscribers that live on one event loop: one hop to that loop per batch of events, for all of them.
    private struct LoopGroup: Sendable {
        let execute: Executor
        var subscribers: [Int: Subscriber]
    }

    private struct State: Sendable {
        var machine: JobStateMachine
        var subscribers: [Int: Subscriber] = [:]
        var loopGroups: [ObjectIdentifier: LoopGroup] = [:]
        var loopOfToken: [Int: ObjectIdentifier] = [:]
        var nextToken = 1
        var attachedRequests = 0
        var task: (any UpstreamTask)?
        var gate: CompletionGate?
        var recorder: AttachmentRecorder?
        /// The end was reported and is being made durable: later updates are ignored, the end is not shown yet.
        var finishing = false
        /// A successful end's result, serialised by the first read that needed it.
        var resultBytes: ByteBuffer?
        /// Waiting for a follower job to catch up with the log it follows (nil once it has; see `whenCaughtUp`).
        var catchingUp: [@Sendable () -> Void]? = nil
        /// A low-priority job a normal request was coalesced onto; and who waits to hear it (see `whenRaised`).
        var raised = false
        var raiseWatchers: [@Sendable () -> Void] = []
        /// The shortest media lifetime its requests asked for (`X-Fal-Object-Lifecycle-Preference`).
        var mediaExpirySeconds: Double?
        /// Which account of an origin pool, and which model, runs it (`x-relay-upstream`).
        var servedBy: Server?
        /// Where its exact place is read while it waits in a line of this relay's (see `setPositionSource`).
        var positionSource: (@Sendable () -> Int?)?
    }

    /// Names the job in the request log (unique across restarts: random).
    public let id: UInt64
    public let input: ModelInput
    public let key: RequestKey
    public let createdAt: Timestamp
    /// For a job started for a request adopted from the fleet's registry: that request, so the fleet's upstream
    /// follows its job on the node that took it (the same events under the same numbers, even once it finished).
    public let adoptedFrom: FleetRequest?
    /// fal's platform headers of the submission that started the job (an origin upstream forwards them).
    public let platform: PlatformHeaders
    /// Whether other requests may share the job: false for a `no-cache` submission's and for a model that never
    /// dedups. A fleet neither claims nor follows a job that is not shared: it is generated here.
    public let shared: Bool
    private let state: Mutex<State>
    private let everAttached = Atomic<Int>(0)

    /// `maxEvents` bounds the job's event log (see `JobStateMachine`).
    public init(
        input: ModelInput,
        key: RequestKey,
        createdAt: Timestamp = .now(),
        id: UInt64 = .random(in: 1 ... .max),
        maxEvents: Int = JobStateMachine.defaultMaxEvents,
        adoptedFrom: FleetRequest? = nil,
        platform: PlatformHeaders = PlatformHeaders(),
        shared: Bool = true
    ) {
        self.id = id
        self.shared = shared && input.model.dedup != .never
        self.adoptedFrom = adoptedFrom
        self.platform = platform
        self.input = input
        self.key = key
        self.createdAt = createdAt
        state = Mutex(
            State(
                machine: JobStateMachine(maxEvents: maxEvents),
                catchingUp: adoptedFrom == nil ? nil : [],
                mediaExpirySeconds: platform.mediaExpirySeconds
            )
        )
    }

    /// A job that ended before a restart, rebuilt from the request log: already terminal with `outcome`.
    /// `input` stands in for the original (only its model id is known): such a job is never started.
    convenience init(
        restoredID id: UInt64,
        key: RequestKey,
        input: ModelInput,
        outcome: JobOutcome,
        createdAt: Timestamp,
        endedAt: Timestamp? = nil,
        maxEvents: Int = JobStateMachine.defaultMaxEvents
    ) {
        self.init(input: input, key: key, createdAt: createdAt, id: id, maxEvents: maxEvents)
        let ended = endedAt ?? createdAt
        state.withLock { state in
            switch outcome {
            case .success(let result, let seconds):
                _ = state.machine.apply(.succeeded(result: result, inferenceSeconds: seconds), at: ended)
            case .failure(let error):
                _ = state.machine.apply(.failed(error), at: ended)
            case .cancelled:
                _ = state.machine.cancel(at: ended)
            }
        }
    }

    /// Runs `body` once this job holds what the log it follows held when it started following (at once for a job
    /// that follows nothing): an adopted request answers its first call only then, so a client never sees a request
    /// that finished on its node as still in progress on this one.
    public func whenCaughtUp(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            guard state.catchingUp != nil else { return true }
            state.catchingUp?.append(body)
            return false
        }
        if now { body() }
    }

    /// The queue priority the job waits with: its first request's, raised to normal once a normal request shares it.
    public var priority: PlatformHeaders.Priority {
        platform.priority == .low && !state.withLock({ $0.raised }) ? .low : .normal
    }

    /// A normal-priority request shares this job: a low job is raised to normal, and whoever queued it is told (once).
    public func raisePriority() {
        guard platform.priority == .low else { return }
        let watchers = state.withLock { state -> [@Sendable () -> Void] in
            guard !state.raised else { return [] }
            state.raised = true
            defer { state.raiseWatchers = [] }
            return state.raiseWatchers
        }
        for watcher in watchers { watcher() }
    }

    /// Which account of an origin pool runs a job, on which model (its own, or a fallback's).
    public struct Server: Sendable, Hashable {
        public var account: String
        public var model: String

        public init(account: String, model: String) {
            self.account = account
            self.model = model
        }

        /// `x-relay-upstream`.
        public var header: String { "\(account); model=\(model)" }
    }

    /// Who runs it (nil for a single upstream).
    public var servedBy: Server? {
        get { state.withLock { $0.servedBy } }
        set { state.withLock { $0.servedBy = newValue } }
    }

    /// A fallback model runs it: its result is not the job's model's, and is not cached as it.
    public var servedByFallback: Bool { servedBy.map { $0.model != model.id } ?? false }

    /// How long its media are kept after it ends: the shortest lifetime any of its requests asked for (nil: the relay's
    /// own policy).
    public var mediaExpirySeconds: Double? { state.withLock { $0.mediaExpirySeconds } }

    /// A request that asked its media be deleted after `seconds` shares this job: the shortest lifetime wins (one asked
    /// for its media to go, and they are the same files).
    public func shortenMediaExpiry(to seconds: Double) {
        state.withLock { state in state.mediaExpirySeconds = min(state.mediaExpirySeconds ?? seconds, seconds) }
    }

    /// Runs `body` when the job is raised to normal priority (at once if it was).
    public func whenRaised(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            guard !state.raised else { return true }
            state.raiseWatchers.append(body)
            return false
        }
        if now { body() }
    }

    /// Logs an event a peer that runs this job sent, under the peer's number; false when this job logged that number
    /// already (a replay overlapping what it had).
    public func receive(fromPeer update: JobUpdate, numbered sequence: Int) -> Bool {
        guard sequence > status.lastSequence else { return false }
        // Under the owner's number, which skips ahead where a node took the job over.
        numberFrom(sequence)
        receive(update)
        return true
    }

    /// Numbers the job's next event `sequence` at least (`JobStateMachine.numberFrom`): a follower takes the owner's
    /// numbers, and a node that takes a job over skips past every number the node before it gave out.
    public func numberFrom(_ sequence: Int) {
        state.withLock { $0.machine.numberFrom(sequence) }
    }

    /// The job caught up with the log it follows, or gave up following it.
    public func caughtUp() {
        let waiters = state.withLock { state -> [@Sendable () -> Void] in
            defer { state.catchingUp = nil }
            return state.catchingUp ?? []
        }
        for waiter in waiters { waiter() }
    }

    /// Installs the gate the end must pass through (before the upstream starts).
    func setCompletionGate(_ gate: @escaping CompletionGate) {
        state.withLock { $0.gate = gate }
    }

    /// Installs what records the upstream's handle (before the upstream starts).
    func setAttachmentRecorder(_ recorder: @escaping AttachmentRecorder) {
        state.withLock { $0.recorder = recorder }
    }

    /// The upstream accepted the job under its own id: recorded, so that a restart follows the job there again
    /// instead of losing it. Called at most once, by the upstream, before the job's end; ignored once it ended.
    public func attached(to handle: UpstreamHandle) {
        let recorder = state.withLock { state -> AttachmentRecorder? in
            guard !state.machine.isTerminal, !state.finishing else { return nil }
            defer { state.recorder = nil }
            return state.recorder
        }
        recorder?(handle)
    }

    public var model: ModelSpec { input.model }

    public var status: Status {
        state.withLock { Status(phase: $0.machine.phase, logs: $0.machine.logs, lastSequence: $0.machine.lastSequence) }
    }

    /// The job's phase as a status poll should read it: a queued job's place is read exactly from the line it waits
    /// in, when that line says (the place its events carry is told in coalesced passes, and may lag). Read after the
    /// job's lock is let go, so the line's lock is never taken inside it.
    public var phase: JobPhase {
        let (phase, source) = state.withLock { ($0.machine.phase, $0.positionSource) }
        guard case .queued = phase, let source, let exact = source() else { return phase }
        return .queued(position: exact)
    }

    /// Names where the job's exact place in a line is read while it waits there (nil: nowhere, its events say): set by
    /// a line of this relay's as the job joins it, and replaced by the next one it joins.
    public func setPositionSource(_ source: (@Sendable () -> Int?)?) {
        state.withLock { $0.positionSource = $0.machine.isTerminal ? nil : source }
    }

    /// When work on it began and when it ended (nil while not yet), for the request history.
    public var times: (started: Timestamp?, ended: Timestamp?) {
        state.withLock { ($0.machine.startedAt, $0.machine.endedAt) }
    }

    /// The serialised result once the job has succeeded (nil before, or after a failure): made once and shared by every
    /// result fetch of every request attached to the job (a `ByteBuffer` is copy-on-write, so a write never copies it).
    public var resultBytes: ByteBuffer? {
        state.withLock { state in
            if let bytes = state.resultBytes { return bytes }
            guard case .completed(.success(let result, _)) = state.machine.phase else { return nil }
            let bytes = ByteBuffer(bytes: result.serialized())
            state.resultBytes = bytes
            return bytes
        }
    }

    public var isTerminal: Bool {
        state.withLock { $0.machine.isTerminal }
    }

    /// Applies an upstream update and tells every subscriber. Safe from any thread. The end (`succeeded`, `failed`)
    /// first passes the completion gate, if one is set: until the gate publishes it nobody sees it, and updates
    /// meanwhile are ignored.
    public func receive(_ update: JobUpdate) {
        let outcome: JobOutcome
        switch update {
        case .succeeded(let result, let seconds): outcome = .success(result: result, inferenceSeconds: seconds)
        case .failed(let error): outcome = .failure(error)
        default:
            apply(update)
            return
        }
        let gate = state.withLock { state -> CompletionGate? in
            guard !state.finishing, !state.machine.isTerminal, let gate = state.gate else { return nil }
            state.finishing = true
            return gate
        }
        guard let gate else {
            apply(update)
            return
        }
        gate(outcome) { self.apply(update, publishing: true) }
    }

    private func apply(_ update: JobUpdate, publishing: Bool = false) {
        let now = Timestamp.now()
        state.withLock { state in
            guard publishing || !state.finishing else { return }
            let before = state.machine.lastSequence
            guard state.machine.apply(update, at: now) != nil else { return }
            Self.deliver(state.machine.events(after: before), to: &state)
            if state.machine.isTerminal {
                state.subscribers.removeAll()
                state.loopGroups.removeAll()
                state.loopOfToken.removeAll()
                state.task = nil
                state.positionSource = nil
                state.gate = nil
                state.recorder = nil
            }
        }
    }

    /// Registers for events after `sequence` (0 = from the start). The replay is returned, not delivered, so the
    /// caller handles it before any live event (which arrives through `subscriber`, possibly from another thread).
    /// A finished job returns its whole replay and registers nothing.
    public func subscribe(after sequence: Int, _ subscriber: @escaping Subscriber) -> Subscription {
        state.withLock { state in
            let replay = state.machine.replay(after: sequence)
            guard !state.machine.isTerminal else { return Subscription(replay: replay, token: 0) }
            let token = state.nextToken
            state.nextToken += 1
            state.subscribers[token] = subscriber
            return Subscription(replay: replay, token: token)
        }
    }

    /// Like `subscribe(after:_:)`, but `subscriber` is called on its own thread: every subscriber that names the same
    /// `loop` (an event loop) shares one `execute` per batch of events, instead of one hop each — what keeps a job
    /// with thousands of watchers cheap to announce. Events reach each subscriber in sequence order (the batches are
    /// queued under the job's lock, and a loop runs its queue in order). A subscriber may still receive a batch
    /// queued just before it unsubscribed.
    public func subscribe(
        after sequence: Int,
        loop: ObjectIdentifier,
        execute: @escaping Executor,
        _ subscriber: @escaping Subscriber
    ) -> Subscription {
        state.withLock { state in
            let replay = state.machine.replay(after: sequence)
            guard !state.machine.isTerminal else { return Subscription(replay: replay, token: 0) }
            let token = state.nextToken
            state.nextToken += 1
            state.loopGroups[loop, default: LoopGroup(execute: execute, subscribers: [:])].subscribers[token] =
                subscriber
            state.loopOfToken[token] = loop
            return Subscription(replay: replay, token: token)
        }
    }

    /// Subscribers currently registered (both kinds), for tests and statistics.
    public var subscriberCount: Int {
        state.withLock { state in state.subscribers.count + state.loopOfToken.count }
    }

    /// The log after `sequence` without subscribing (a subscriber that fell behind catches up from here).
    public func replay(after sequence: Int) -> [JobEvent] {
        state.withLock { $0.machine.replay(after: sequence) }
    }

    /// Every retained event after `sequence`, superseded snapshots included (and the latest one the bound dropped):
    /// what a peer node that follows this job logs, so that its numbers stay the same as this job's.
    public func events(after sequence: Int) -> [JobEvent] {
        state.withLock { $0.machine.peerEvents(after: sequence) }
    }

    /// The replay a watcher of `kind` gets: peers get every event (`events(after:)`), clients the replay.
    public func catchUp(after sequence: Int, everyEvent: Bool) -> [JobEvent] {
        everyEvent ? events(after: sequence) : replay(after: sequence)
    }

    public func unsubscribe(_ token: Int) {
        state.withLock { state in
            if state.subscribers.removeValue(forKey: token) != nil { return }
            guard let loop = state.loopOfToken.removeValue(forKey: token) else { return }
            state.loopGroups[loop]?.subscribers[token] = nil
            if state.loopGroups[loop]?.subscribers.isEmpty == true {
                state.loopGroups[loop] = nil
            }
        }
    }

    /// Counts a request that now waits on this job. Returns false when the job already ended (attach elsewhere).
    func attach() -> Bool {
        state.withLock { state in
            guard !state.machine.isTerminal else { return false }
            state.attachedRequests += 1
            everAttached.wrappingAdd(1, ordering: .relaxed)
            return true
        }
    }

    /// A request stopped waiting. When none is left the job is cancelled and the upstream told.
    func detach() {
        let task = state.withLock { state -> (any UpstreamTask)? in
            state.attachedRequests = max(0, state.attachedRequests - 1)
            guard state.attachedRequests == 0, let event = state.machine.cancel() else { return nil }
            Self.deliver(CollectionOfOne(event), to: &state)
            state.subscribers.removeAll()
            state.loopGroups.removeAll()
            state.loopOfToken.removeAll()
            state.gate = nil
            state.recorder = nil
            let task = state.task
            state.task = nil
            state.positionSource = nil
            return task
        }
        task?.cancel()
    }

    func setTask(_ task: any UpstreamTask) {
        let cancelNow = state.withLock { state -> Bool in
            if state.machine.isTerminal { return true }
            state.task = task
            return false
        }
        if cancelNow, case .completed(.cancelled) = status.phase {
            task.cancel()
        }
    }

    /// Requests that ever waited on this job (coalesced ones included), for dedup savings.
    /// An atomic outside the lock, so a subscriber (called under the lock) may read it.
    var requestsEverAttached: Int {
        everAttached.load(ordering: .relaxed)
    }

    var attachedRequests: Int {
        state.withLock { $0.attachedRequests }
    }

    /// Under the lock: direct subscribers at once, loop groups as one queued batch per loop.
    private static func deliver(_ events: some Collection<JobEvent>, to state: inout State) {
        for subscriber in state.subscribers.values {
            for event in events {
                subscriber(event)
            }
        }
        guard !state.loopGroups.isEmpty else { return }
        let batch = Array(events)
        for group in state.loopGroups.values {
            let subscribers = Array(group.subscribers.values)
            group.execute {
                for subscriber in subscribers {
                    for event in batch {
                        subscriber(event)
                    }
                }
            }
        }
    }
}
