public import RelayCore

/// The job lifecycle `queued(position) → running → completed(success | failure | cancelled)` as a pure value.
///
/// Every accepted transition appends one `JobEvent` with the next sequence number; updates that change nothing
/// (the same queue position again) or that arrive after the end are ignored, so a confused upstream cannot
/// reopen a finished job or send a client backwards.
public struct JobStateMachine: Sendable {
    public private(set) var phase: JobPhase = .queued(position: 0)
    public private(set) var events: [JobEvent] = []
    public private(set) var logs: [LogEntry] = []

    public init() {}

    public var lastSequence: Int { events.last?.sequence ?? 0 }

    public var isTerminal: Bool {
        if case .completed = phase { return true }
        return false
    }

    /// Applies an upstream update; returns the event it appended, or nil when it was a no-op.
    public mutating func apply(_ update: JobUpdate, at time: Timestamp) -> JobEvent? {
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
            let entry = LogEntry(message: message, level: level, timestamp: time)
            logs.append(entry)
            return append(.log(entry))
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
    public mutating func cancel() -> JobEvent? {
        guard !isTerminal else { return nil }
        return finish(.cancelled)
    }

    /// What a subscriber joining after `sequence` needs: every stream item (logs, partials, the end) but only the
    /// latest snapshot (a queue position that a later position or the start superseded is left out).
    public func replay(after sequence: Int) -> [JobEvent] {
        let slice = events(after: sequence)
        guard let lastSnapshot = slice.lastIndex(where: { $0.isSnapshot }) else { return Array(slice) }
        return slice.enumerated().compactMap { offset, event in
            event.isSnapshot && slice.startIndex + offset < lastSnapshot ? nil : event
        }
    }

    /// Events after `sequence` (all of them for 0).
    public func events(after sequence: Int) -> ArraySlice<JobEvent> {
        let start = max(0, min(sequence, events.count))
        // Sequence numbers are 1-based and gapless, so event n sits at index n-1.
        return events[start...]
    }

    private mutating func finish(_ outcome: JobOutcome) -> JobEvent {
        phase = .completed(outcome)
        return append(.completed(outcome))
    }

    private mutating func append(_ kind: JobEvent.Kind) -> JobEvent {
        let event = JobEvent(sequence: lastSequence + 1, kind: kind)
        events.append(event)
        return event
    }
}
