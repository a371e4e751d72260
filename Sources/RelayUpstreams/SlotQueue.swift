import Synchronization

/// A FIFO of jobs waiting for a fixed number of slots ("GPUs"), telling each waiter its place in line.
///
/// `positionChanged` is called with 0-based positions (the number of waiters ahead) whenever a waiter's place
/// changes, under the queue's lock so that a waiter's positions arrive in order.
final class SlotQueue: Sendable {
    typealias PositionObserver = @Sendable (Int) -> Void

    private struct Waiter {
        let id: Int
        let observer: PositionObserver
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var free: Int
        var waiting: [Waiter] = []
        var nextID = 1
        /// Ids cancelled before their continuation was registered.
        var cancelledEarly: Set<Int> = []
    }

    private let state: Mutex<State>

    init(slots: Int) {
        state = Mutex(State(free: max(1, slots)))
    }

    /// Waits for a slot; throws CancellationError when the task is cancelled while waiting.
    func acquire(observer: @escaping PositionObserver) async throws {
        let id = state.withLock { state -> Int in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                state.withLock { state in
                    if state.cancelledEarly.remove(id) != nil {
                        continuation.resume(throwing: CancellationError())
                    } else if state.free > 0 && state.waiting.isEmpty {
                        state.free -= 1
                        observer(0)
                        continuation.resume()
                    } else {
                        observer(state.waiting.count)
                        state.waiting.append(Waiter(id: id, observer: observer, continuation: continuation))
                    }
                }
            }
        } onCancel: {
            state.withLock { state in
                if let index = state.waiting.firstIndex(where: { $0.id == id }) {
                    let waiter = state.waiting.remove(at: index)
                    waiter.continuation.resume(throwing: CancellationError())
                    Self.announce(state.waiting, from: index)
                } else {
                    state.cancelledEarly.insert(id)
                }
            }
        }
        // Granted: nothing to clean up for `cancelledEarly` since the id was never inserted.
    }

    /// Gives a slot back; the longest waiter gets it.
    func release() {
        state.withLock { state in
            if state.waiting.isEmpty {
                state.free += 1
            } else {
                let next = state.waiting.removeFirst()
                next.continuation.resume()
                Self.announce(state.waiting, from: 0)
            }
        }
    }

    var waitingCount: Int {
        state.withLock { $0.waiting.count }
    }

    private static func announce(_ waiting: [Waiter], from index: Int) {
        for position in index..<waiting.count {
            waiting[position].observer(position)
        }
    }
}
