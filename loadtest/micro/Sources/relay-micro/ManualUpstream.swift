import RelayJobs
import Synchronization

/// An upstream that only records what it was asked to start: the benchmark completes each job by hand.
final class ManualUpstream: Upstream, Sendable {
    /// A started job; cancelling it is a no-op.
    struct Task: UpstreamTask {
        let job: Job
        func cancel() {}
    }

    private let started = Mutex<[Job]>([])

    func start(_ job: Job) -> any UpstreamTask {
        started.withLock { $0.append(job) }
        return Task(job: job)
    }

    /// The jobs started so far, in order.
    var jobs: [Job] { started.withLock { $0 } }
}
