import Dispatch
import Synchronization

/// When each waiter saw COMPLETED.
///
/// `@unchecked Sendable` because it is a plain buffer shared across threads: each slot is written once, by its own
/// waiter, before the arrival count is raised (release); slots are read only after the count is complete (acquire).
final class ArrivalTimes: @unchecked Sendable {
    private let slots: UnsafeMutableBufferPointer<ContinuousClock.Instant>
    private let count = Atomic<Int>(0)
    private let allArrived = DispatchSemaphore(value: 0)

    init(count: Int) {
        slots = .allocate(capacity: count)
        slots.initialize(repeating: ContinuousClock.now)
    }

    deinit {
        slots.deallocate()
    }

    func record(_ waiter: Int) {
        slots[waiter] = ContinuousClock.now
        if count.add(1, ordering: .releasing).newValue == slots.count {
            allArrived.signal()
        }
    }

    var arrived: Int { count.load(ordering: .acquiring) }

    func waitForAll(timeout: Duration) -> Bool {
        let nanoseconds = Int(timeout.nanoseconds)
        return allArrived.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .success
    }

    func latencies(since start: ContinuousClock.Instant) -> [Duration] {
        precondition(arrived == slots.count, "read before every waiter arrived")
        return slots.map { start.duration(to: $0) }
    }
}
