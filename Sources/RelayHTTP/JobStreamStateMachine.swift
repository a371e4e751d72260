/// How one watcher follows one job, whatever carries it: an SSE status stream on HTTP/1.1 (`StatusStreamHandler`) or
/// on an HTTP/2 stream, the run host's `/stream` and a synchronous run (`RelayHTTPHandler`), and each watch on a
/// `/ws` socket (`WatchSession`). It decides which job events go out, which wait in the job's log while the socket
/// cannot take more, when to catch up from the log, when a keep-alive may go out, and when the stream is over; the
/// transports perform what it decides.
///
/// A slow reader never makes the relay buffer: an event that finds the socket unwritable is not written, the stream
/// is marked behind, and once the socket drains everything after the last event sent is replayed from the job's log
/// (a replay that overlaps live events is dropped by sequence number, so nothing is sent twice).
struct JobStreamStateMachine: Sendable {
    enum State: Equatable, Sendable {
        case streaming(lastSent: Int, behind: Bool)
        case ended
    }

    /// What to do with one event.
    enum Delivery: Equatable, Sendable {
        /// Write it (the machine counts it as sent).
        case write
        /// Already sent (a replay overlapping live events), or the stream is over.
        case drop
        /// The socket is full: the event stays in the job's log until `writabilityChanged` asks for a replay.
        case wait
        /// The job's end, which the client saw already (it resumed after it, on a node whose log reached it only
        /// now): the stream ends without another frame.
        case end
    }

    private(set) var state: State

    /// `after`: the last event the client saw (Last-Event-ID), 0 for a first connect.
    init(after: Int) {
        state = .streaming(lastSent: max(0, after), behind: false)
    }

    var isStreaming: Bool { state != .ended }

    /// The last event sent (or the resume point), while streaming.
    var lastSent: Int? {
        guard case .streaming(let lastSent, _) = state else { return nil }
        return lastSent
    }

    /// Whether events are held back in the job's log, waiting for the socket to drain.
    var isBehind: Bool {
        if case .streaming(_, true) = state { return true }
        return false
    }

    mutating func deliver(sequence: Int, terminal: Bool = false, writable: Bool) -> Delivery {
        guard case .streaming(let lastSent, let behind) = state else { return .drop }
        guard sequence > lastSent else { return terminal ? .end : .drop }
        guard writable, !behind else {
            state = .streaming(lastSent: lastSent, behind: true)
            return .wait
        }
        state = .streaming(lastSent: sequence, behind: false)
        return .write
    }

    /// The socket's writability changed: returns the sequence to replay after when the stream fell behind and the
    /// socket takes data again.
    mutating func writabilityChanged(writable: Bool) -> Int? {
        guard writable, case .streaming(let lastSent, true) = state else { return nil }
        state = .streaming(lastSent: lastSent, behind: false)
        return lastSent
    }

    /// Whether a keep-alive comment should go out now: never into a full socket or behind held-back events.
    func shouldPing(writable: Bool) -> Bool {
        guard writable, case .streaming(_, false) = state else { return false }
        return true
    }

    /// Ends the stream (its last frame written, shutdown, or the client left). True only the first time, when the
    /// caller releases what the stream held.
    mutating func end() -> Bool {
        guard isStreaming else { return false }
        state = .ended
        return true
    }
}
