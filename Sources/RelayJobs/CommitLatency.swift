import Synchronization

/// Count, mean and maximum of a duration series.
public struct LatencySummary: Sendable, Hashable {
    public private(set) var count = 0
    public private(set) var total: Duration = .zero
    public private(set) var maximum: Duration = .zero

    public var mean: Duration { count == 0 ? .zero : total / count }

    mutating func add(_ sample: Duration) {
        count += 1
        total += sample
        maximum = max(maximum, sample)
    }
}

/// What `JobTable.commitLatency` reports.
final class CommitLatency: Sendable {
    private let state = Mutex((submissions: LatencySummary(), ends: LatencySummary()))

    var summaries: (submissions: LatencySummary, ends: LatencySummary) { state.withLock { $0 } }

    func record(submission: Duration) { state.withLock { $0.submissions.add(submission) } }

    func record(end: Duration) { state.withLock { $0.ends.add(end) } }
}
