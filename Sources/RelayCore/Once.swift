import Synchronization

/// A claim that succeeds for the first caller only: for work that two paths may race to do once (a timeout and the
/// event it waits for, a job's end seen by its subscriber and by a check right after subscribing).
public final class Once: Sendable {
    private let taken = Atomic<Bool>(false)

    public init() {}

    /// True for the first caller only.
    public func claim() -> Bool { !taken.exchange(true, ordering: .acquiringAndReleasing) }
}
