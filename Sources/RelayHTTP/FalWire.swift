public import RelayCore
public import RelayJobs

/// The fal queue protocol's JSON documents (PROTOCOL.md §3): submit responses, status objects, cancel bodies.
public enum FalWire {
    /// `scheme://host` of the queue API as the client reached it, plus the app path: what URLs are built on.
    public struct QueueBase: Sendable {
        public let origin: String
        public let app: String

        public init(origin: String, app: String) {
            self.origin = origin
            self.app = app
        }

        public func responseURL(_ id: String) -> String { "\(origin)/\(app)/requests/\(id)" }
        public func statusURL(_ id: String) -> String { responseURL(id) + "/status" }
        public func cancelURL(_ id: String) -> String { responseURL(id) + "/cancel" }
    }

    public static func submitResponse(_ request: RelayRequest, base: QueueBase) -> JSONValue {
        var object = urls(request.id, base: base)
        object["status"] = "IN_QUEUE"
        object["queue_position"] = .number(Double(queuePosition(request.phase)))
        return .object(object)
    }

    /// The status object for a phase; `logs` is the cumulative list, or nil to send `null`.
    public static func status(
        id: String,
        phase: JobPhase,
        logs: ArraySlice<LogEntry>?,
        base: QueueBase?
    ) -> JSONValue {
        var object = base.map { urls(id, base: $0) } ?? ["request_id": .string(id)]
        let logsValue: JSONValue = logs.map { .array($0.map(logEntry)) } ?? .null
        switch phase {
        case .queued(let position):
            object["status"] = "IN_QUEUE"
            object["queue_position"] = .number(Double(position))
            object["logs"] = logsValue
        case .running:
            object["status"] = "IN_PROGRESS"
            object["logs"] = logsValue
        case .completed(let outcome):
            object["status"] = "COMPLETED"
            object["logs"] = logsValue
            switch outcome {
            case .success(_, let seconds):
                object["metrics"] = .object(seconds.map { ["inference_time": .number($0)] } ?? [:])
            case .failure(let error):
                object["metrics"] = .object([:])
                object["error"] = .string(error.message)
                object["error_type"] = .string(error.errorType ?? "upstream_error")
            case .cancelled:
                let error = FalError.cancelled()
                object["metrics"] = .object([:])
                object["error"] = .string(error.message)
                object["error_type"] = .string(error.errorType ?? "request_cancelled")
            }
        }
        return .object(object)
    }

    /// The status update a streamed job event stands for — the phase it leads to and the new log lines (an empty
    /// list, or nil to send `null` when logs were not asked for) — or nil for events a status stream does not show
    /// (partial outputs). Shared by the SSE status stream and the `/ws` protocol.
    public static func statusUpdate(
        for event: JobEvent,
        withLogs: Bool
    ) -> (phase: JobPhase, logs: ArraySlice<LogEntry>?)? {
        switch event.kind {
        case .queuePosition(let position): (.queued(position: position), withLogs ? [] : nil)
        case .started: (.running, withLogs ? [] : nil)
        case .log(let entry): (.running, withLogs ? [entry] : nil)
        case .partial: nil
        case .completed(let outcome): (.completed(outcome), withLogs ? [] : nil)
        }
    }

    /// HTTP status of a status poll: 202 while waiting, 200 once completed ([docs]).
    public static func httpStatus(for phase: JobPhase) -> Int {
        if case .completed = phase { return 200 }
        return 202
    }

    /// The result endpoint's answer: the model output, or the error the request ended with.
    public static func result(for phase: JobPhase, id: String) -> Result<JSONValue, FalError> {
        switch phase {
        case .queued, .running:
            return .failure(.requestNotCompleted(id))
        case .completed(.success(let result, _)):
            return .success(result)
        case .completed(.failure(let error)):
            return .failure(error)
        case .completed(.cancelled):
            return .failure(.cancelled())
        }
    }

    public static func cancelBody(_ outcome: CancelOutcome) -> (status: Int, body: JSONValue) {
        switch outcome {
        case .cancellationRequested:
            (202, ["status": "CANCELLATION_REQUESTED"])
        case .alreadyCompleted:
            (400, ["status": "ALREADY_COMPLETED"])
        case .notFound:
            (404, ["status": "NOT_FOUND"])
        }
    }

    /// One `logs` entry. The level goes twice: flat, as the Python client and fal's docs read it, and in `labels`,
    /// which fal-swift decodes (`logs[i].labels.level`) and without which it fails on every status with logs.
    public static func logEntry(_ entry: LogEntry) -> JSONValue {
        let level = JSONValue.string(entry.level.rawValue)
        return .object([
            "message": .string(entry.message),
            "level": level,
            "labels": .object(["level": level]),
            "source": "USER",
            "timestamp": .string(entry.timestamp.iso8601),
        ])
    }

    private static func urls(_ id: String, base: QueueBase) -> JSONObject {
        [
            "request_id": .string(id),
            "response_url": .string(base.responseURL(id)),
            "status_url": .string(base.statusURL(id)),
            "cancel_url": .string(base.cancelURL(id)),
        ]
    }

    private static func queuePosition(_ phase: JobPhase) -> Int {
        if case .queued(let position) = phase { return position }
        return 0
    }
}
