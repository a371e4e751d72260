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

    private struct State: Sendable {
        var machine = JobStateMachine()
        var subscribers: [Int: Subscriber] = [:]
        var nextToken = 1
        var attachedRequests = 0
        var task: (any UpstreamTask)?
    }

    public let input: ModelInput
    public let key: RequestKey
    public let createdAt: Timestamp
    private let state = Mutex(State())
    private let everAttached = Atomic<Int>(0)

    public init(input: ModelInput, key: RequestKey, createdAt: Timestamp = .now()) {
        self.input = input
        self.key = key
        self.createdAt = createdAt
    }

    public var model: ModelSpec { input.model }

    public var status: Status {
        state.withLock { Status(phase: $0.machine.phase, logs: $0.machine.logs, lastSequence: $0.machine.lastSequence) }
    }

    public var isTerminal: Bool {
        state.withLock { $0.machine.isTerminal }
    }

    /// Applies an upstream update and tells every subscriber. Safe from any thread.
    public func receive(_ update: JobUpdate) {
        let now = Timestamp.now()
        state.withLock { state in
            let before = state.machine.lastSequence
            guard state.machine.apply(update, at: now) != nil else { return }
            Self.deliver(state.machine.events(after: before), to: state.subscribers.values)
            if state.machine.isTerminal {
                state.subscribers.removeAll()
                state.task = nil
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

    /// The log after `sequence` without subscribing (a subscriber that fell behind catches up from here).
    public func replay(after sequence: Int) -> [JobEvent] {
        state.withLock { $0.machine.replay(after: sequence) }
    }

    public func unsubscribe(_ token: Int) {
        _ = state.withLock { $0.subscribers.removeValue(forKey: token) }
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
            Self.deliver(CollectionOfOne(event), to: state.subscribers.values)
            state.subscribers.removeAll()
            let task = state.task
            state.task = nil
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

    private static func deliver(
        _ events: some Collection<JobEvent>,
        to subscribers: Dictionary<Int, Subscriber>.Values
    ) {
        for subscriber in subscribers {
            for event in events {
                subscriber(event)
            }
        }
    }
}
