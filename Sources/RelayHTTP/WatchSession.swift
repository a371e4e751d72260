public import RelayCore
public import RelayJobs

/// The `/ws` protocol for one socket as a pure value: which requests it watches, how far each has been sent, and
/// which fell behind while the socket was not writable (STYLE.md rule 1; the handler performs the actions).
///
/// Client messages (JSON text):
/// `{"type":"watch","request_id":"…","after":<seq, optional>}`, `{"type":"unwatch","request_id":"…"}`,
/// `{"type":"submit","model":"…","input":{…}}`.
/// Server messages: `{"type":"event","request_id":"…","seq":n,"status":{…}}` (status changes and log lines),
/// `{"type":"partial","request_id":"…","seq":n,"data":<partial output>}` (a preview image, the text so far),
/// `{"type":"submitted","request_id":"…"}`, `{"type":"error","request_id":"…","detail":"…"}`. Events and partials
/// share one sequence, the job's log, so `after` resumes both and a replay carries every partial.
public struct WatchSession: Sendable {
    public enum Command: Sendable, Hashable {
        case watch(requestID: String, after: Int)
        case unwatch(requestID: String)
        case submit(model: String, input: JSONObject)
        case invalid(detail: String, requestID: String?)
    }

    /// What to do with an event for a watched request.
    public enum Delivery: Sendable, Hashable {
        case send
        /// Already sent (a replay overlapping live events): drop it.
        case duplicate
        /// The socket cannot take more now: the event stays in the job's log and is replayed on resync.
        case deferred
        /// Not watched (any more).
        case ignore
    }

    public let maxWatches: Int
    private var watches: [String: JobStreamStateMachine] = [:]

    public init(maxWatches: Int = 256) {
        self.maxWatches = maxWatches
    }

    public var watchedIDs: [String] { Array(watches.keys) }

    public static func parse(_ bytes: [UInt8]) -> Command {
        guard let value = try? JSONValue(parsing: bytes), let object = value.objectValue else {
            return .invalid(detail: "messages must be JSON objects", requestID: nil)
        }
        let requestID = object["request_id"]?.stringValue
        switch object["type"]?.stringValue {
        case "watch":
            guard let requestID, RequestID.isPlausible(requestID) else {
                return .invalid(detail: "watch needs a request_id", requestID: requestID)
            }
            let after = object["after"]?.intValue ?? 0
            guard after >= 0 else {
                return .invalid(detail: "after must be a non-negative sequence number", requestID: requestID)
            }
            return .watch(requestID: requestID, after: after)
        case "unwatch":
            guard let requestID else { return .invalid(detail: "unwatch needs a request_id", requestID: nil) }
            return .unwatch(requestID: requestID)
        case "submit":
            guard let model = object["model"]?.stringValue else {
                return .invalid(detail: "submit needs a model", requestID: nil)
            }
            guard let input = object["input"]?.objectValue ?? (object["input"] == nil ? [:] : nil) else {
                return .invalid(detail: "input must be an object", requestID: nil)
            }
            return .submit(model: model, input: input)
        case let other?:
            return .invalid(detail: "unknown message type \"\(other)\"", requestID: requestID)
        case nil:
            return .invalid(detail: "messages need a \"type\"", requestID: requestID)
        }
    }

    /// Starts watching; false when the socket already watches as many requests as it may.
    public mutating func begin(_ requestID: String, after: Int) -> Bool {
        if watches[requestID] == nil && watches.count >= maxWatches { return false }
        watches[requestID] = JobStreamStateMachine(after: after)
        return true
    }

    public mutating func end(_ requestID: String) {
        watches[requestID] = nil
    }

    public func isWatching(_ requestID: String) -> Bool {
        watches[requestID] != nil
    }

    /// The message that carries `event` of a watched request: a status `event` or a `partial`, numbered by the job's
    /// sequence; nil for an event that shows as neither.
    public static func message(for event: JobEvent, requestID: String) -> JSONObject? {
        var message: JSONObject = [
            "type": "event", "request_id": .string(requestID), "seq": .number(Double(event.sequence)),
        ]
        if case .partial(let data) = event.kind {
            message["type"] = "partial"
            message["data"] = data
        } else if let (phase, logs) = FalWire.statusUpdate(for: event, withLogs: true) {
            message["status"] = FalWire.status(id: requestID, phase: phase, logs: logs, base: nil)
        } else {
            return nil
        }
        return message
    }

    /// Decides about one event; `writable` is the channel's writability now.
    public mutating func deliver(_ requestID: String, sequence: Int, writable: Bool) -> Delivery {
        guard var watch = watches[requestID] else { return .ignore }
        defer { watches[requestID] = watch }
        switch watch.deliver(sequence: sequence, writable: writable) {
        case .write: return .send
        case .drop, .end: return .duplicate
        case .wait: return .deferred
        }
    }

    /// Marks an event sent during a resync.
    public mutating func sent(_ requestID: String, sequence: Int) {
        guard var watch = watches[requestID] else { return }
        _ = watch.deliver(sequence: sequence, writable: true)
        watches[requestID] = watch
    }

    /// The watches that fell behind, with the sequence to replay after; clears their flag.
    public mutating func takeBehind() -> [(requestID: String, after: Int)] {
        var out: [(String, Int)] = []
        for (id, var watch) in watches {
            if let after = watch.writabilityChanged(writable: true) {
                out.append((id, after))
                watches[id] = watch
            }
        }
        return out.sorted { $0.0 < $1.0 }
    }
}
