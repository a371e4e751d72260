public import RelayCore

/// The job lifecycle `queued(position) → running → completed(success | failure | cancelled)` as a pure value.
///
/// Every accepted transition appends one `JobEvent` with the next sequence number; updates that change nothing
/// (the same queue position again) or that arrive after the end are ignored, so a confused upstream cannot
/// reopen a finished job or send a client backwards.
///
/// The event log is bounded: past `maxEvents` the oldest events are dropped (in batches, so appends stay amortised
/// O(1)), except the latest snapshot, which is kept aside so a late joiner still learns the phase. A subscriber that
/// falls further behind than the bound misses the oldest stream items; the status's `logs` keep the newest
/// `maxEvents` lines likewise.
public struct JobStateMachine: Sendable {
    /// The bound for machines made without one; a relay passes `--event-log-max-events` through `JobTable`.
    public static let defaultMaxEvents = 10_000

    public private(set) var phase: JobPhase = .queued(position: 0)
    /// The retained events, in rising sequence order: consecutive, except where `numberFrom` skipped ahead.
    public private(set) var events: [JobEvent] = []
    public private(set) var logs: [LogEntry] = []
    /// When work began (the first start, log line or partial): nil while queued, and for a job whose end came without
    /// a start before it.
    public private(set) var startedAt: Timestamp?
    /// When the job ended.
    public private(set) var endedAt: Timestamp?
    public let maxEvents: Int
    /// The latest snapshot, when it was dropped from `events` by the bound.
    private var droppedSnapshot: JobEvent?
    private var nextSequence = 1
    /// Events dropped by the bound so far.
    public private(set) var droppedEvents = 0

    public init(maxEvents: Int = JobStateMachine.defaultMaxEvents) {
        self.maxEvents = max(16, maxEvents)
    }

    public var lastSequence: Int { nextSequence - 1 }

    /// Numbers the next event `sequence` at least: a job a fleet's node follows takes the numbers of the node that
    /// runs it, and a node that takes over a job skips past every number the node before it may have given out.
    /// Numbers never go back: a smaller `sequence` changes nothing.
    public mutating func numberFrom(_ sequence: Int) {
        nextSequence = max(nextSequence, sequence)
    }

    public var isTerminal: Bool {
        if case .completed = phase { return true }
        return false
    }

    /// Applies an upstream update; returns the event it appended, or nil when it was a no-op.
    public mutating func apply(_ update: JobUpdate, at time: Timestamp) -> JobEvent? {
        guard let event = transition(update, at: time) else { return nil }
        if case .running = phase, startedAt == nil { startedAt = time }
        if isTerminal { endedAt = time }
        return event
    }

    private mutating func transition(_ update: JobUpdate, at time: Timestamp) -> JobEvent? {
        switch (phase, update) {
        case (.completed, _):
            return nil
        case (.queued(let current), .queued(let position)):
            guard position != current || events.isEmpty else { return nil }
            phase = .queued(position: max(0, position))
            return append(.queuePosition(max(0, position)))
        case (.running, .queued):
            return nil
        case (.queued, .started):
            phase = .running
            return append(.started)
        case (.running, .started):
            return nil
        case (_, .log(let message, let level)):
            if case .queued = phase {
                // A log line means work has begun.
                phase = .running
                _ = append(.started)
            }
            return append(.log(LogEntry(message: message, level: level, timestamp: time)))
        case (_, .partial(let value)):
            if case .queued = phase {
                phase = .running
                _ = append(.started)
            }
            return append(.partial(value))
        case (_, .succeeded(let result, let seconds)):
            return finish(.success(result: result, inferenceSeconds: seconds))
        case (_, .failed(let error)):
            return finish(.failure(error))
        }
    }

    /// Ends the job as cancelled (when its last request detached); nil if it had already ended.
    public mutating func cancel(at time: Timestamp = .now()) -> JobEvent? {
        guard !isTerminal else { return nil }
        endedAt = time
        return finish(.cancelled)
    }

    /// What a subscriber joining after `sequence` needs: every stream item (logs, partials, the end) but only the
    /// latest snapshot (a queue position that a later position or the start superseded is left out).
    public func replay(after sequence: Int) -> [JobEvent] {
        let slice = events(after: sequence)
        var out: [JobEvent] = []
        if let dropped = droppedSnapshot, dropped.sequence > sequence, !slice.contains(where: { $0.isSnapshot }) {
            out.append(dropped)
        }
        guard let lastSnapshot = slice.lastIndex(where: { $0.isSnapshot }) else { return out + slice }
        out += slice.enumerated().compactMap { offset, event in
            event.isSnapshot && slice.startIndex + offset < lastSnapshot ? nil : event
        }
        return out
    }

    /// Every retained event after `sequence`, superseded snapshots included, led by the latest snapshot the bound
    /// dropped when it is newer than `sequence`: what a node that follows this job logs. Without that snapshot a
    /// follower still queued would start itself on the first log line it got, under that line's number, and number
    /// every later event one too high.
    public func peerEvents(after sequence: Int) -> [JobEvent] {
        let slice = events(after: sequence)
        guard let dropped = droppedSnapshot, dropped.sequence > sequence else { return Array(slice) }
        return [dropped] + slice
    }

    /// Retained events after `sequence` (all of them for 0): found by bisection, as numbers may skip ahead.
    public func events(after sequence: Int) -> ArraySlice<JobEvent> {
        var (low, high) = (0, events.count)
        while low < high {
            let middle = (low + high) / 2
            if events[middle].sequence <= sequence { low = middle + 1 } else { high = middle }
        }
        return events[low...]
    }

    private mutating func finish(_ outcome: JobOutcome) -> JobEvent {
        phase = .completed(outcome)
        return append(.completed(outcome))
    }

    private mutating func append(_ kind: JobEvent.Kind) -> JobEvent {
        let event = JobEvent(sequence: nextSequence, kind: kind)
        nextSequence += 1
        events.append(event)
        if case .log(let entry) = kind {
            logs.append(entry)
            if logs.count > maxEvents + maxEvents / 4 { logs.removeFirst(logs.count - maxEvents) }
        }
        if events.count > maxEvents + maxEvents / 4 {
            let cut = events.count - maxEvents
            if let snapshot = events[..<cut].last(where: { $0.isSnapshot }) {
                droppedSnapshot = snapshot
            }
            events.removeFirst(cut)
            droppedEvents += cut
        }
        return event
    }
}
