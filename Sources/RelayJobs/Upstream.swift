public import RelayCore

/// Something that performs generations: the synthetic generator or a fal-compatible origin.
///
/// `start` must return quickly; the work reports through `job.receive(_:)` from any thread, ending with exactly
/// one `.succeeded` or `.failed`.
public protocol Upstream: Sendable {
    func start(_ job: Job) -> any UpstreamTask
}

/// A running generation that can be asked to stop.
public protocol UpstreamTask: Sendable {
    /// Best effort: the upstream stops working on it; no further updates matter (the job is already cancelled).
    func cancel()
}
