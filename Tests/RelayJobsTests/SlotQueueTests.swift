import Synchronization
import Testing

@testable import RelayJobs

@Suite struct SlotQueueTests {
    /// Work the queue scheduled, run only when the test says the interval has passed: no test here sleeps.
    final class ManualTime: Sendable {
        private let pending = Mutex<[@Sendable () -> Void]>([])
        private let delays = Mutex<[Duration]>([])

        var scheduler: SlotQueue.Scheduler {
            { delay, work in
                self.delays.withLock { $0.append(delay) }
                self.pending.withLock { $0.append(work) }
            }
        }

        var scheduledCount: Int { pending.withLock { $0.count } }
        /// The delay of every pass scheduled so far.
        var scheduledDelays: [Duration] { delays.withLock { $0 } }

        /// The interval passes: what was scheduled runs.
        func advance() {
            let due = pending.withLock { pending in
                defer { pending = [] }
                return pending
            }
            for work in due { work() }
        }
    }

    /// Starts `count` waiters on a queue whose only slot is taken, in a known order (each is in line before the
    /// next starts); `observe(index, place)` hears what each is told.
    func line(
        of count: Int,
        on queue: SlotQueue,
        observe: @escaping @Sendable (Int, Int) -> Void
    ) async throws -> [Task<Void, any Error>] {
        var waiters: [Task<Void, any Error>] = []
        for index in 0..<count {
            waiters.append(Task { try await queue.acquire { place in observe(index, place) } })
            while queue.waitingCount < index + 1 { await Task.yield() }
        }
        return waiters
    }

    @Test func waitersLearnTheirPlaceOncePerIntervalAndMoveUp() async throws {
        let time = ManualTime()
        let queue = SlotQueue(slots: 1, scheduler: time.scheduler)
        try await queue.acquire { _ in }
        let seen = Recorder<[Int: [Int]]>([:])
        let waiters = try await line(of: 3, on: queue) { index, place in
            seen.update { $0[index, default: []].append(place) }
        }
        #expect(seen.value == [0: [0], 1: [1], 2: [2]])
        queue.release()
        // The release itself tells nobody; the pass at the end of the interval does.
        #expect(seen.value == [0: [0], 1: [1], 2: [2]])
        #expect(time.scheduledCount == 1)
        time.advance()
        #expect(seen.value == [0: [0], 1: [1, 0], 2: [2, 1]])
        queue.release()
        time.advance()
        #expect(seen.value == [0: [0], 1: [1, 0], 2: [2, 1, 0]])
        // The last release grants the last waiter: nothing is left to tell.
        queue.release()
        #expect(time.scheduledCount == 1)
        time.advance()
        #expect(seen.value == [0: [0], 1: [1, 0], 2: [2, 1, 0]])
        for waiter in waiters { try await waiter.value }
        #expect(queue.waitingCount == 0 && queue.trackedWaiters == 0)
    }

    @Test func cancelledWaiterLeavesTheLineAndOthersMoveUp() async throws {
        let time = ManualTime()
        let queue = SlotQueue(slots: 1, scheduler: time.scheduler)
        try await queue.acquire { _ in }
        let lastPlaces = Recorder<[Int]>([])
        let waiters = try await line(of: 2, on: queue) { index, place in
            if index == 1 { lastPlaces.update { $0.append(place) } }
        }
        waiters[0].cancel()
        await #expect(throws: CancellationError.self) { try await waiters[0].value }
        #expect(queue.waitingCount == 1)
        time.advance()
        #expect(lastPlaces.value == [1, 0])
        queue.release()
        try await waiters[1].value
        #expect(queue.waitingCount == 0 && queue.trackedWaiters == 0)
    }

    /// The old queue told every waiter behind on every release: n(n-1)/2 events for a line of n.
    @Test func releasesWithinAnIntervalCostLinearPositionEvents() async throws {
        let count = 1_000
        let time = ManualTime()
        let queue = SlotQueue(slots: 1, scheduler: time.scheduler)
        try await queue.acquire { _ in }
        let events = Atomic<Int>(0)
        let waiters = try await line(of: count, on: queue) { _, _ in events.add(1, ordering: .relaxed) }
        #expect(events.load(ordering: .relaxed) == count)
        // A quarter of the line leaves within one interval, then the pass runs: each waiter left hears one place.
        for _ in 0..<count / 4 { queue.release() }
        time.advance()
        #expect(events.load(ordering: .relaxed) == count + (count - count / 4))
        for _ in count / 4..<count { queue.release() }
        time.advance()
        for waiter in waiters { try await waiter.value }
        #expect(events.load(ordering: .relaxed) == count + (count - count / 4))
    }

    /// However often passes run, a waiter hears O(log n) places (front ones exactly), and each told place is at
    /// most a third above the real one: a status poll shows roughly the right number.
    @Test func aPassAfterEveryReleaseTellsEachWaiterLogarithmicallyManyPlaces() async throws {
        let count = 1_000
        let time = ManualTime()
        let queue = SlotQueue(slots: 1, scheduler: time.scheduler)
        try await queue.acquire { _ in }
        let told = Recorder<[Int: [Int]]>([:])
        let waiters = try await line(of: count, on: queue) { index, place in
            told.update { $0[index, default: []].append(place) }
        }
        for released in 0..<count {
            queue.release()
            time.advance()
            // Waiter `index` now has `index - released - 1` ahead of it.
            let lastTold = told.value
            for index in stride(from: released + 1, to: count, by: 7) {
                let real = index - released - 1
                let shown = lastTold[index]?.last ?? -1
                #expect(shown >= real && shown <= real + real / 3 + 1)
            }
        }
        for waiter in waiters { try await waiter.value }
        let total = told.value.values.reduce(0) { $0 + $1.count }
        // Per waiter: its first place, the exact ones near the front, and a quarter-step descent from up to 1,000.
        let perWaiter = 1 + SlotQueue.exactAhead + 25
        #expect(total <= count * perWaiter)
        #expect(told.value.values.allSatisfy { $0 == $0.sorted(by: >) })
    }

    /// A pass walks the whole line: a line of 2.5 × `spotsPerInterval` is walked every 2 intervals, not every one.
    @Test func aLongLineIsWalkedLessOften() async throws {
        let time = ManualTime()
        let queue = SlotQueue(slots: 1, interval: .milliseconds(250), spotsPerInterval: 10, scheduler: time.scheduler)
        try await queue.acquire { _ in }
        let waiters = try await line(of: 26, on: queue) { _, _ in }
        queue.release()
        time.advance()
        for _ in 0..<20 {
            queue.release()
            time.advance()
        }
        for _ in 0..<5 { queue.release() }
        for waiter in waiters { try await waiter.value }
        // 25 left after the first release: 2 intervals; 5 after the next 20 releases: one.
        #expect(time.scheduledDelays.first == .milliseconds(500))
        #expect(time.scheduledDelays.last == .milliseconds(250))
    }

    /// A task cancelled after it was granted a slot (before it resumed) leaves nothing in the queue's books.
    @Test func cancelAfterTheGrantLeavesNothingBehind() async throws {
        let time = ManualTime()
        let queue = SlotQueue(slots: 1, scheduler: time.scheduler)
        try await queue.acquire { _ in }
        for _ in 0..<200 {
            let waiter = Task { try await queue.acquire { _ in } }
            while queue.waitingCount < 1 { await Task.yield() }
            queue.release()
            waiter.cancel()
            // Granted before the cancel: it holds the slot and gives it back.
            try await waiter.value
            #expect(queue.trackedWaiters == 0)
        }
        let cancelledFirst = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await queue.acquire { _ in }
        }
        await #expect(throws: CancellationError.self) { try await cancelledFirst.value }
        #expect(queue.trackedWaiters == 0 && queue.waitingCount == 0)
    }
}

/// A thread-safe box for what concurrent callbacks record.
final class Recorder<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>
    init(_ value: Value) { storage = Mutex(value) }
    func update(_ body: (inout Value) -> Void) { storage.withLock { body(&$0) } }
    var value: Value { storage.withLock { $0 } }
}
