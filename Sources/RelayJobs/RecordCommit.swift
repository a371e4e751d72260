import Synchronization

/// Durable writes something waits for: a submission's answer waits for its request record, a job's end for its
/// result manifest and log record. Each write `arrive`s once; when none is left the waiters run.
///
/// A failed write counts as arrived: a broken disk must not hang clients (the failure is counted where it happened).
public final class RecordCommit: Sendable {
    private struct State {
        var pending: Int
        var waiters: [@Sendable () -> Void] = []
    }

    private let state: Mutex<State>

    /// Waits for `pending` arrivals (0: done from the start).
    public init(pending: Int) {
        state = Mutex(State(pending: max(0, pending)))
    }

    /// Whether every write has arrived (a caller on an event loop then answers at once, without a hop).
    public var isDone: Bool {
        state.withLock { $0.pending == 0 }
    }

    /// Runs `body` once every write has arrived: at once on the caller's stack when that is already so, otherwise on
    /// the thread of the last arrival.
    public func whenDone(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            guard state.pending > 0 else { return true }
            state.waiters.append(body)
            return false
        }
        if now { body() }
    }

    /// One write is durable (or failed).
    func arrive() {
        let waiters = state.withLock { state -> [@Sendable () -> Void] in
            guard state.pending > 0 else { return [] }
            state.pending -= 1
            guard state.pending == 0 else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter() }
    }
}
