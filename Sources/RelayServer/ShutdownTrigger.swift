import Synchronization

/// Lets the admin API stop the service group, which exists only after the services are built.
///
/// A shutdown may be asked for before the action that performs it is known (an admin drain between binding and
/// the service group's start), so the request and the action live under one lock: whichever of `fire` and `set`
/// comes second runs the action, exactly once.
final class ShutdownTrigger: Sendable {
    private enum State {
        /// Not fired yet; the action, once it is known.
        case armed((@Sendable () -> Void)?)
        /// Fired before any action was set: the next `set` runs its action.
        case firedEarly
        /// The action ran (or is running); nothing runs again.
        case done
    }

    private let state = Mutex(State.armed(nil))

    /// Sets the action that performs the shutdown; runs it now when the trigger already fired.
    func set(_ body: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state in
            switch state {
            case .armed:
                state = .armed(body)
                return false
            case .firedEarly:
                state = .done
                return true
            case .done:
                return false
            }
        }
        if runNow { body() }
    }

    /// Asks for a shutdown: runs the action if it is set, or leaves it for `set`. Later calls do nothing.
    func fire() {
        let action: (@Sendable () -> Void)? = state.withLock { state in
            switch state {
            case .armed(let action?):
                state = .done
                return action
            case .armed(nil):
                state = .firedEarly
                return nil
            case .firedEarly, .done:
                return nil
            }
        }
        action?()
    }
}
