public import RelayCore

/// One line of a job's log, as fal's status `logs` shows it.
public struct LogEntry: Sendable, Hashable {
    public enum Level: String, Sendable, Hashable {
        case info = "INFO"
        case warn = "WARN"
        case error = "ERROR"
        case debug = "DEBUG"
        case stdout = "STDOUT"
        case stderr = "STDERR"
    }

    public let message: String
    public let level: Level
    public let timestamp: Timestamp

    public init(message: String, level: Level = .info, timestamp: Timestamp) {
        self.message = message
        self.level = level
        self.timestamp = timestamp
    }
}

/// How a job ended.
public enum JobOutcome: Sendable, Hashable {
    case success(result: JSONValue, inferenceSeconds: Double?)
    case failure(FalError)
    case cancelled
}

/// What an upstream reports about the work it does for a job.
public enum JobUpdate: Sendable, Hashable {
    case queued(position: Int)
    case started
    case log(String, level: LogEntry.Level)
    /// A partial output (fal `/stream` event data), e.g. a preview image or the text so far.
    case partial(JSONValue)
    case succeeded(result: JSONValue, inferenceSeconds: Double?)
    case failed(FalError)
}

/// One entry of a job's event log; `sequence` numbers start at 1 and have no gaps.
public struct JobEvent: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case queuePosition(Int)
        case started
        case log(LogEntry)
        case partial(JSONValue)
        case completed(JobOutcome)
    }

    public let sequence: Int
    public let kind: Kind

    public init(sequence: Int, kind: Kind) {
        self.sequence = sequence
        self.kind = kind
    }

    public var isTerminal: Bool {
        if case .completed = kind { return true }
        return false
    }

    /// A state snapshot (queue position, start) as opposed to a stream item (log line, partial, the end): a late
    /// joiner needs only the latest snapshot.
    public var isSnapshot: Bool {
        switch kind {
        case .queuePosition, .started: true
        case .log, .partial, .completed: false
        }
    }
}

/// Where a job stands: the three fal states, with what each carries.
public enum JobPhase: Sendable, Hashable {
    case queued(position: Int)
    case running
    case completed(JobOutcome)

    public var isCompleted: Bool {
        if case .completed = self { return true }
        return false
    }
}
