import NIOCore
import Synchronization

/// A FIFO of jobs waiting for a fixed number of slots ("GPUs"), telling each waiter its place in line.
///
/// A release costs O(1): it hands the slot to the longest waiter and notes that the line moved. Places are told by
/// one coalesced pass at most once per `interval` after the line moved (the trailing edge included), never to every
/// waiter on every release: with 20,000 waiters that broadcast was O(n²) events in all, and each job kept every
/// position it was told. A pass tells a waiter its new place when it is near the front (`exactAhead`) or when its
/// place dropped by at least a quarter since it was last told: a waiter hears O(log n) places in all however often
/// passes run, and a status poll of it is never off by more than a third.
///
/// A pass walks the whole line, so a long line is walked less often: once per `interval` for every `spotsPerInterval`
/// waiters (100,000 waiting: every 5 s). The walk then costs a constant number of spots a second, however long the
/// line: a pass over 100,000 waiters every 250 ms took most of a core in a debug build.
///
/// Observers are called under the queue's lock, so a waiter's places arrive in order and never after it was granted.
final class SlotQueue: Sendable {
    /// Told 0-based positions (the number of waiters ahead).
    typealias PositionObserver = @Sendable (Int) -> Void
    /// Runs `work` once `delay` has passed: the queue's only use of time, injected so tests need no sleeps.
    typealias Scheduler = @Sendable (_ delay: Duration, _ work: @escaping @Sendable () -> Void) -> Void

    /// A waiter's lifecycle. A granted or cancelled waiter has no entry, so nothing is left behind whenever its task
    /// is cancelled.
    private enum Entry {
        /// `acquire` began; its continuation is not registered yet.
        case arriving
        /// Cancelled before its continuation was registered: the continuation throws as soon as it arrives.
        case cancelledWhileArriving
        case waiting(Waiter)
    }

    private struct Waiter {
        let observer: PositionObserver
        let continuation: CheckedContinuation<Void, any Error>
    }

    /// A waiter's spot in line: plain values, so that a pass over the whole line copies no closures.
    private struct Spot {
        let id: Int
        /// The last place it was told.
        var told: Int
    }

    private struct State {
        var free: Int
        var entries: [Int: Entry] = [:]
        /// Waiters in arrival order. Those that left (cancelled) stay until they reach the front, and are skipped.
        var line = CircularBuffer<Spot>()
        /// Ids in `line` of waiters that left.
        var left: Set<Int> = []
        var waiting = 0
        var nextID = 1
        /// Places changed since the last pass.
        var moved = false
        var passScheduled = false
    }

    /// Waiters this close to the front are told every change (they move fast, relative to their place).
    static let exactAhead = 10

    private let state: Mutex<State>
    private let interval: Duration
    private let spotsPerInterval: Int
    private let scheduler: Scheduler

    /// `interval` bounds how often places are told (a few times a second in production), and `spotsPerInterval` how
    /// many waiters a pass may walk per interval.
    init(
        slots: Int,
        interval: Duration = .milliseconds(250),
        spotsPerInterval: Int = 5_000,
        scheduler: @escaping Scheduler = SlotQueue.taskScheduler
    ) {
        state = Mutex(State(free: max(1, slots)))
        self.interval = interval
        self.spotsPerInterval = max(1, spotsPerInterval)
        self.scheduler = scheduler
    }

    /// The production scheduler: a task that sleeps.
    static let taskScheduler: Scheduler = { delay, work in
        Task {
            try? await Task.sleep(for: delay)
            work()
        }
    }

    /// Waits for a slot; throws CancellationError when the task is cancelled while waiting. `observer` is told the
    /// first place at once (0 when a slot is free).
    func acquire(observer: @escaping PositionObserver) async throws {
        let id = state.withLock { state -> Int in
            defer { state.nextID += 1 }
            state.entries[state.nextID] = .arriving
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let granted = state.withLock { state -> Bool? in
                    guard case .arriving = state.entries.removeValue(forKey: id) else { return nil }
                    if state.free > 0 && state.waiting == 0 {
                        state.free -= 1
                        observer(0)
                        return true
                    }
                    observer(state.waiting)
                    state.entries[id] = .waiting(Waiter(observer: observer, continuation: continuation))
                    state.line.append(Spot(id: id, told: state.waiting))
                    state.waiting += 1
                    return false
                }
                switch granted {
                case nil: continuation.resume(throwing: CancellationError())
                case true?: continuation.resume()
                case false?: break
                }
            }
        } onCancel: {
            let cancelled = state.withLock { state -> Waiter? in
                switch state.entries[id] {
                case .arriving:
                    state.entries[id] = .cancelledWhileArriving
                    return nil
                case .waiting(let waiter):
                    // Its spot stays in `line` and is skipped when it reaches the front: O(1) here.
                    state.entries[id] = nil
                    state.left.insert(id)
                    state.waiting -= 1
                    state.moved = true
                    return waiter
                case .cancelledWhileArriving, nil:
                    // Already granted (or already cancelled): the holder gives its slot back with `release()`.
                    return nil
                }
            }
            guard let cancelled else { return }
            cancelled.continuation.resume(throwing: CancellationError())
            schedulePassIfNeeded()
        }
    }

    /// Gives a slot back; the longest waiter gets it. O(1) amortised: nobody else is told anything here.
    func release() {
        let next = state.withLock { state -> Waiter? in
            while let spot = state.line.popFirst() {
                if !state.left.isEmpty, state.left.remove(spot.id) != nil { continue }
                guard case .waiting(let waiter) = state.entries.removeValue(forKey: spot.id) else { continue }
                state.waiting -= 1
                state.moved = true
                return waiter
            }
            state.free += 1
            return nil
        }
        guard let next else { return }
        next.continuation.resume()
        schedulePassIfNeeded()
    }

    var waitingCount: Int {
        state.withLock { $0.waiting }
    }

    /// Waiters the queue keeps books on (waiting, between `acquire` and joining the line, or left but still in
    /// line): 0 whenever nobody waits, whenever their tasks were cancelled.
    var trackedWaiters: Int {
        state.withLock { $0.entries.count + $0.left.count }
    }

    /// Tells waiters their new places (see the type's comment); what the scheduled pass runs.
    func tellPlaces() {
        state.withLock { state in
            state.passScheduled = false
            guard state.moved else { return }
            state.moved = false
            var place = 0
            for index in state.line.indices {
                let spot = state.line[index]
                if !state.left.isEmpty, state.left.contains(spot.id) { continue }
                defer { place += 1 }
                guard place != spot.told else { continue }
                guard place < Self.exactAhead || place <= spot.told - spot.told / 4 else { continue }
                guard case .waiting(let waiter) = state.entries[spot.id] else { continue }
                waiter.observer(place)
                state.line[index].told = place
            }
        }
    }

    private func schedulePassIfNeeded() {
        let lineLength = state.withLock { state -> Int? in
            guard state.moved, !state.passScheduled else { return nil }
            state.passScheduled = true
            return state.line.count
        }
        guard let lineLength else { return }
        scheduler(interval * max(1, lineLength / spotsPerInterval)) { [weak self] in self?.tellPlaces() }
    }
}
