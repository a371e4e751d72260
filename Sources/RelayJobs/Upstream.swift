public import RelayCore
public import RelayStore

/// Where an upstream that keeps jobs by its own id can be asked about one again (a fal origin's submit answer).
public typealias UpstreamHandle = RequestLogRecord.UpstreamHandle

/// Something that performs generations: the synthetic generator or a fal-compatible origin.
///
/// `start` must return quickly; the work reports through `job.receive(_:)` from any thread, ending with exactly
/// one `.succeeded` or `.failed`. An upstream that keeps jobs by its own id says so once it has one
/// (`job.attached(to:)`), so that after a restart the job is followed again (`resume`) instead of lost.
public protocol Upstream: Sendable {
    func start(_ job: Job) -> any UpstreamTask

    /// Follows a job this upstream accepted before the relay restarted, by its handle: progress, result and media
    /// as `start` would report them, without submitting it again. nil when this upstream cannot follow that handle
    /// (another origin, or an upstream that keeps no jobs by id); the job is then ended by the caller.
    func resume(_ job: Job, from handle: UpstreamHandle, attachedAt: Timestamp) -> (any UpstreamTask)?

    /// Jobs this upstream holds waiting for a place of its own (a job waiting for its caller's in-progress cap is
    /// told its place plus these: they are ahead of it once it starts).
    var queueDepth: Int { get }
}

extension Upstream {
    /// Jobs that live only in this process cannot be followed after a restart.
    public func resume(_ job: Job, from handle: UpstreamHandle, attachedAt: Timestamp) -> (any UpstreamTask)? {
        nil
    }

    /// An upstream whose queue is elsewhere (a fal origin reports its own positions).
    public var queueDepth: Int { 0 }
}

/// A running generation that can be asked to stop.
public protocol UpstreamTask: Sendable {
    /// Best effort: the upstream stops working on it; no further updates matter (the job is already cancelled).
    func cancel()
}
