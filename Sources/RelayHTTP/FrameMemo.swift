import NIOCore
import NIOPosix
import RelayCore

/// The last stream frame built on this thread, so that the watchers of one request on one event loop — all called in
/// one batch (`Job.subscribe(after:on:)`) — share one serialised frame instead of each rebuilding and re-serialising
/// the same status JSON. The bytes go out as the same `ByteBuffer` (copy-on-write storage, never copied by a write).
///
/// One entry per kind per thread: a batch delivers one event to many watchers of the same request, which is exactly
/// what it serves; anything else simply rebuilds.
/// `@unchecked Sendable`: each instance lives in one thread's slot and is only ever touched by that thread.
final class FrameMemo: @unchecked Sendable {
    struct Key: Hashable {
        enum Kind: UInt8 { case sse, webSocket }
        let kind: Kind
        let job: ObjectIdentifier
        let sequence: Int
        let requestID: String
        /// What else shapes the bytes (SSE: the logs flag and the queue base of the URLs).
        var withLogs = true
        var origin = ""
        var app = ""
    }

    /// One entry per kind: a batch interleaves SSE and WebSocket watchers of the same request.
    private var entries: [(key: Key, frame: ByteBuffer, ends: Bool)?] = [nil, nil]

    private static let perThread = ThreadSpecificVariable<FrameMemo>()

    /// This thread's memo (an event loop's).
    static var current: FrameMemo {
        if let memo = perThread.currentValue { return memo }
        let memo = FrameMemo()
        perThread.currentValue = memo
        return memo
    }

    /// The frame for `key`, built by `make` unless it is the one built last.
    func frame(for key: Key, make: () -> ByteBuffer) -> ByteBuffer {
        frame(for: key) { (make(), false) }.frame
    }

    /// Like `frame(for:make:)`, with a decision made together with the bytes and shared like them (an SSE status
    /// frame: whether it ends the stream, which depends on the request's cancellation, looked up once per batch).
    func frame(for key: Key, make: () -> (ByteBuffer, Bool)) -> (frame: ByteBuffer, ends: Bool) {
        let slot = Int(key.kind.rawValue)
        if let entry = entries[slot], entry.key == key { return (entry.frame, entry.ends) }
        let (made, ends) = make()
        entries[slot] = (key, made, ends)
        return (made, ends)
    }
}
