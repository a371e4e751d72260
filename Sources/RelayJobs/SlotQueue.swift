import NIOCore
package import RelayCore
import Synchronization

/// A FIFO of jobs waiting for a fixed number of slots ("GPUs"), telling each waiter its place in line.
///
/// Two priorities, as fal's `X-Fal-Queue-Priority`: a `low` waiter sits behind every `normal` one (its place counts
/// them all), and a waiter raised to `normal` while it waits (a normal submission coalesced onto its job) joins the end
/// of the normal line.
///
/// A release costs O(1): it hands the slot to the longest waiter and notes that the line moved. Places are told by
/// one coalesced pass at most once per `interval` after the line moved (the trailing edge included), never to every
/// waiter on every release: with 20,000 waiters that broadcast was O(n²) events in all, and each job kept every
/// position it was told. A pass tells a waiter its new place when it is near the front (`exactAhead`) or when its
/// place dropped by at least a quarter since it was last told: a waiter hears O(log n) places in all however often
/// passes run. What a live watcher hears is never off by more than a third; a status poll reads the exact place,
/// derived when asked (`place(of:)`, O(log n), see `QueueLine`).
///
/// A pass walks the whole line, so a long line is walked less often: once per `interval` for every `spotsPerInterval`
/// waiters (100,000 waiting: every 5 s). The walk then costs a constant number of spots a second, however long the
/// line: a pass over 100,000 waiters every 250 ms took most of a core in a debug build.
///
/// Observers are called under the queue's lock, so a waiter's places arrive in order and never after it was granted.
package final class SlotQueue: Sendable {
    /// Told 0-based positions (the number of waiters ahead).
    package typealias PositionObserver = @Sendable (Int) -> Void
    /// Runs `work` once `delay` has passed: the queue's only use of time, injected so tests need no sleeps.
    package typealias Scheduler = @Sendable (_ delay: Duration, _ work: @escaping @Sendable () -> Void) -> Void

    /// A waiter's lifecycle. A granted or cancelled waiter has no entry, so nothing is left behind whenever its task
    /// is cancelled.
    private enum Entry {
        /// `acquire` began; its continuation is not registered yet. `raised`: promoted before it joined a line.
        case arriving(raised: Bool)
        /// Cancelled before its continuation was registered: the continuation throws as soon as it arrives.
        case cancelledWhileArriving
        case waiting(Waiter)
    }

    private struct Waiter {
        let observer: PositionObserver
        let continuation: CheckedContinuation<Void, any Error>
        var priority: PlatformHeaders.Priority
        /// Its spot's order in its priority's line.
        var order: Int
    }

    private struct State {
        var free: Int
        var entries: [Int: Entry] = [:]
        /// Normal waiters in arrival order. Those that left (cancelled) stay until they reach the front, and are
        /// skipped; so are low waiters' spots in `lowLine` once they were raised into this one.
        var line = QueueLine()
        /// Low waiters, the same way, served once `line` is empty.
        var lowLine = QueueLine()
        /// Normal waiters (a low waiter's place counts them).
        var waitingNormal = 0
        var waiting = 0
        var nextID = 1
        /// Places changed since the last pass.
        var moved = false
        var passScheduled = false
    }

    /// Waiters this close to the front are told every change (they move fast, relative to their place).
    static let exactAhead = 10

    private let state: Mutex<State>
    /// `State.waiting`, as of the last change.
    private let waitingNow = Atomic<Int>(0)
    private let interval: Duration
    private let spotsPerInterval: Int
    private let scheduler: Scheduler

    /// `interval` bounds how often places are told (a few times a second in production), and `spotsPerInterval` how
    /// many waiters a pass may walk per interval.
    package init(
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
    package static let taskScheduler: Scheduler = { delay, work in
        Task {
            try? await Task.sleep(for: delay)
            work()
        }
    }

    /// A place in the queue for one waiter, taken before it waits, so that it can be raised (`raise`) from the start.
    package func ticket() -> Int {
        state.withLock { state in
            defer { state.nextID += 1 }
            state.entries[state.nextID] = .arriving(raised: false)
            return state.nextID
        }
    }

    /// Waits for a slot; throws CancellationError when the task is cancelled while waiting. `observer` is told the
    /// first place at once (0 when a slot is free).
    package func acquire(
        ticket: Int? = nil,
        priority: PlatformHeaders.Priority = .normal,
        observer: @escaping PositionObserver
    ) async throws {
        let id = ticket ?? self.ticket()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // nil: cancelled while arriving; true: granted; false: waiting (`pushedBack`: low waiters moved).
                var pushedBack = false
                let granted = state.withLock { state -> Bool? in
                    guard case .arriving(let raised) = state.entries.removeValue(forKey: id) else { return nil }
                    if state.free > 0 && state.waiting == 0 {
                        state.free -= 1
                        observer(0)
                        return true
                    }
                    let priority = raised ? .normal : priority
                    let place = priority == .normal ? state.waitingNormal : state.waiting
                    observer(place)
                    let order =
                        priority == .normal
                        ? state.line.append(id: id, told: place) : state.lowLine.append(id: id, told: place)
                    let waiter = Waiter(
                        observer: observer,
                        continuation: continuation,
                        priority: priority,
                        order: order
                    )
                    state.entries[id] = .waiting(waiter)
                    if priority == .normal {
                        state.waitingNormal += 1
                        // Every low waiter is one place further back now.
                        if state.waiting > place {
                            state.moved = true
                            pushedBack = true
                        }
                    }
                    state.waiting += 1
                    waitingNow.store(state.waiting, ordering: .relaxed)
                    return false
                }
                switch granted {
                case nil: continuation.resume(throwing: CancellationError())
                case true?: continuation.resume()
                case false?: if pushedBack { schedulePassIfNeeded() }
                }
            }
        } onCancel: {
            let cancelled = state.withLock { state -> Waiter? in
                switch state.entries[id] {
                case .arriving:
                    state.entries[id] = .cancelledWhileArriving
                    return nil
                case .waiting(let waiter):
                    // Its spot stays in its line and is skipped when it reaches the front.
                    state.entries[id] = nil
                    if waiter.priority == .normal {
                        state.line.markLeft(waiter.order)
                        state.waitingNormal -= 1
                    } else {
                        state.lowLine.markLeft(waiter.order)
                    }
                    state.waiting -= 1
                    waitingNow.store(state.waiting, ordering: .relaxed)
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

    /// Raises a low waiter to normal: it joins the end of the normal line (one that has not joined a line yet will
    /// join that one). Nothing happens to a normal, granted or gone waiter.
    package func raise(_ ticket: Int) {
        let changed = state.withLock { state -> Bool in
            switch state.entries[ticket] {
            case .arriving:
                state.entries[ticket] = .arriving(raised: true)
                return false
            case .waiting(var waiter) where waiter.priority == .low:
                // Its low spot stays behind and is skipped; it waits in the normal line from now on (-1: its place
                // there was never told).
                state.lowLine.markLeft(waiter.order)
                waiter.priority = .normal
                waiter.order = state.line.append(id: ticket, told: -1)
                state.entries[ticket] = .waiting(waiter)
                state.waitingNormal += 1
                state.moved = true
                return true
            default:
                return false
            }
        }
        if changed { schedulePassIfNeeded() }
    }

    /// Gives a slot back; the longest normal waiter gets it, else the longest low one. O(1) amortised: nobody else
    /// is told anything here.
    package func release() {
        let next = state.withLock { state -> Waiter? in
            for priority in [PlatformHeaders.Priority.normal, .low] {
                while let (spot, hadLeft) = priority == .normal ? state.line.popFirst() : state.lowLine.popFirst() {
                    guard !hadLeft, case .waiting(let waiter) = state.entries[spot.id], waiter.priority == priority
                    else { continue }
                    state.entries[spot.id] = nil
                    state.waiting -= 1
                    waitingNow.store(state.waiting, ordering: .relaxed)
                    if priority == .normal { state.waitingNormal -= 1 }
                    state.moved = true
                    return waiter
                }
            }
            state.free += 1
            return nil
        }
        guard let next else { return }
        next.continuation.resume()
        schedulePassIfNeeded()
    }

    /// Read without the queue's lock (a copy kept beside it): a line that reports it from under its own lock (the
    /// per-caller gate's backlog) must not take this queue's lock there, or three locks could wait on each other.
    package var waitingCount: Int {
        waitingNow.load(ordering: .relaxed)
    }

    /// Waiters the queue keeps books on (waiting, between `acquire` and joining the line, or left but still in
    /// line): 0 whenever nobody waits, whenever their tasks were cancelled.
    var trackedWaiters: Int {
        state.withLock { $0.entries.count + $0.line.leftCount + $0.lowLine.leftCount }
    }

    /// The exact place of the waiter holding `ticket` (the number of waiters ahead of it), derived now in O(log n):
    /// what a status poll reads, between the passes that tell it. nil when it does not wait (granted, gone, or not in
    /// a line yet).
    package func place(of ticket: Int) -> Int? {
        state.withLock { state in
            guard case .waiting(let waiter) = state.entries[ticket] else { return nil }
            if waiter.priority == .normal { return state.line.place(of: waiter.order) }
            return state.waitingNormal + state.lowLine.place(of: waiter.order)
        }
    }

    /// Tells waiters their new places (see the type's comment); what the scheduled pass runs. The normal line first,
    /// then the low one, each place counting every waiter ahead in both.
    func tellPlaces() {
        state.withLock { state in
            state.passScheduled = false
            guard state.moved else { return }
            state.moved = false
            var place = 0
            var line = state.line
            state.line = QueueLine()
            Self.tell(&line, priority: .normal, from: &place, state: state)
            state.line = line
            line = state.lowLine
            state.lowLine = QueueLine()
            Self.tell(&line, priority: .low, from: &place, state: state)
            state.lowLine = line
        }
    }

    private static func tell(
        _ line: inout QueueLine,
        priority: PlatformHeaders.Priority,
        from place: inout Int,
        state: State
    ) {
        for index in line.spots.indices {
            let spot = line.spots[index]
            guard case .waiting(let waiter) = state.entries[spot.id], waiter.priority == priority,
                waiter.order == spot.order
            else { continue }
            defer { place += 1 }
            guard place != spot.told else { continue }
            // Told when near the front, when its place dropped by a quarter, or rose by a third (normal waiters that
            // went ahead of a low one): a poll is never off by more than that.
            guard
                place < exactAhead || spot.told < 0 || place <= spot.told - spot.told / 4
                    || place >= spot.told + max(1, spot.told / 3)
            else { continue }
            waiter.observer(place)
            line.setTold(place, at: index)
        }
    }

    private func schedulePassIfNeeded() {
        let lineLength = state.withLock { state -> Int? in
            guard state.moved, !state.passScheduled else { return nil }
            state.passScheduled = true
            return state.line.count + state.lowLine.count
        }
        guard let lineLength else { return }
        scheduler(interval * max(1, lineLength / spotsPerInterval)) { [weak self] in self?.tellPlaces() }
    }
}
