public import RelayCore
import RelayStore

/// A job's events as one node of a fleet streams them to another that follows the job (`/_cluster/v1/follow`):
/// one JSON object per event, with its sequence number, so that the follower's log numbers its events exactly as
/// the owner's does and a client resumes by `Last-Event-ID` on any node.
extension JobEvent {
    public var peerJSON: JSONValue {
        var object: JSONObject = ["seq": .number(Double(sequence))]
        switch kind {
        case .queuePosition(let position):
            object["kind"] = "queued"
            object["position"] = .number(Double(position))
        case .started:
            object["kind"] = "started"
        case .log(let entry):
            object["kind"] = "log"
            object["message"] = .string(entry.message)
            object["level"] = .string(entry.level.rawValue)
        case .partial(let value):
            object["kind"] = "partial"
            object["data"] = value
        case .completed(.success(let result, let seconds)):
            object["kind"] = "succeeded"
            object["result"] = result
            if let seconds { object["inference_seconds"] = .number(seconds) }
        case .completed(.failure(let error)):
            object["kind"] = "failed"
            object["status"] = .number(Double(error.status))
            object["type"] = error.errorType.map(JSONValue.string) ?? .null
            object["message"] = .string(error.message)
            object["body"] = error.body
        case .completed(.cancelled):
            object["kind"] = "failed"
            let error = FalError.cancelled()
            object["status"] = .number(Double(error.status))
            object["type"] = error.errorType.map(JSONValue.string) ?? .null
            object["message"] = .string(error.message)
            object["body"] = error.body
        }
        return .object(object)
    }
}

extension JobUpdate {
    /// The update that makes a follower's job log the event `json` describes, with the event's sequence number;
    /// nil for JSON that is not a peer event.
    public static func fromPeer(_ json: JSONValue) -> (sequence: Int, update: JobUpdate)? {
        guard let sequence = json["seq"]?.intValue, let kind = json["kind"]?.stringValue else { return nil }
        let update: JobUpdate
        switch kind {
        case "queued":
            guard let position = json["position"]?.intValue else { return nil }
            update = .queued(position: position)
        case "started":
            update = .started
        case "log":
            guard let message = json["message"]?.stringValue else { return nil }
            update = .log(message, level: json["level"]?.stringValue.flatMap(LogEntry.Level.init(rawValue:)) ?? .info)
        case "partial":
            update = .partial(json["data"] ?? .null)
        case "succeeded":
            guard let result = json["result"] else { return nil }
            update = .succeeded(result: result, inferenceSeconds: json["inference_seconds"]?.doubleValue)
        case "failed":
            guard let status = json["status"]?.intValue else { return nil }
            update = .failed(
                RequestLogRecord.error(
                    status: status,
                    type: json["type"]?.stringValue,
                    message: json["message"]?.stringValue ?? "failed on a peer",
                    body: json["body"] ?? .null
                )
            )
        default:
            return nil
        }
        return (sequence, update)
    }
}
