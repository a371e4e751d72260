import NIOCore
import RelayJobs
import Synchronization

/// The waiters of one event loop behind a single job subscription (the `batchedPerLoop` sketch).
final class LoopFanOut: Sendable {
    private let loop: any EventLoop
    private let arrivals: ArrivalTimes
    /// Waiter ids, and whether the one subscription exists. In a handler this would be loop-confined state; here the
    /// submitters are plain threads, so a lock stands in.
    private let state = Mutex<(waiters: [Int], subscribed: Bool)>(([], false))

    init(loop: any EventLoop, arrivals: ArrivalTimes) {
        self.loop = loop
        self.arrivals = arrivals
    }

    func add(_ waiter: Int, job: Job) {
        let subscribe = state.withLock { state in
            state.waiters.append(waiter)
            defer { state.subscribed = true }
            return !state.subscribed
        }
        guard subscribe else { return }
        _ = job.subscribe(after: 0) { [self] event in
            loop.execute { self.deliver(event) }
        }
    }

    private func deliver(_ event: JobEvent) {
        guard case .completed = event.kind else { return }
        for waiter in state.withLock({ $0.waiters }) {
            arrivals.record(waiter)
        }
    }
}
