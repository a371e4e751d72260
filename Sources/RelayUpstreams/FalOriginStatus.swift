import RelayCore
import RelayJobs

/// One fal queue status object (PROTOCOL.md §3.2), as a status poll or one status-stream event carries it.
struct FalOriginStatus: Sendable, Hashable {
    /// The three fal states; anything else is kept by name and skipped.
    enum Phase: Sendable, Hashable {
        case inQueue(position: Int)
        case inProgress
        case completed
        case other(String)
    }

    /// One `logs` entry. `timestamp` is kept as text: it only tells lines apart.
    struct Log: Sendable, Hashable {
        let message: String
        let level: LogEntry.Level
        let timestamp: String?

        init(message: String, level: LogEntry.Level = .info, timestamp: String? = nil) {
            self.message = message
            self.level = level
            self.timestamp = timestamp
        }
    }

    let phase: Phase
    let logs: [Log]
    /// COMPLETED with an error: the message (`error`) and `error_type`.
    let error: String?
    let errorType: String?
    /// `metrics.inference_time`, seconds.
    let inferenceSeconds: Double?

    init(
        phase: Phase,
        logs: [Log] = [],
        error: String? = nil,
        errorType: String? = nil,
        inferenceSeconds: Double? = nil
    ) {
        self.phase = phase
        self.logs = logs
        self.error = error
        self.errorType = errorType
        self.inferenceSeconds = inferenceSeconds
    }

    /// Reads a status object; nil when it is not one (no `status` string).
    init?(json value: JSONValue) {
        guard let object = value.objectValue, let status = object["status"]?.stringValue else { return nil }
        switch status {
        case "IN_QUEUE":
            phase = .inQueue(position: max(0, object["queue_position"]?.intValue ?? 0))
        case "IN_PROGRESS":
            phase = .inProgress
        case "COMPLETED":
            phase = .completed
        default:
            phase = .other(status)
        }
        logs = (object["logs"]?.arrayValue ?? []).compactMap { entry in
            guard let message = entry["message"]?.stringValue else { return nil }
            let level = entry["level"]?.stringValue.flatMap { LogEntry.Level(rawValue: $0.uppercased()) } ?? .info
            return Log(message: message, level: level, timestamp: entry["timestamp"]?.stringValue)
        }
        switch object["error"] {
        case .string(let text)?:
            error = text
        case nil, .null?:
            error = nil
        case let other?:
            error = other.serializedString
        }
        errorType = object["error_type"]?.stringValue
        inferenceSeconds = object["metrics"]?["inference_time"]?.doubleValue
    }

    var isCompleted: Bool { phase == .completed }
}
