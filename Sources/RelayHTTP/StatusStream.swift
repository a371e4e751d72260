import NIOCore
import RelayCore
import RelayJobs

/// A fal SSE status stream (`…/requests/{id}/status/stream`, PROTOCOL.md §5.2): what it follows and how its frames
/// look, the same on HTTP/1.1 (`StatusStreamHandler`) and on HTTP/2 (`RelayHTTPHandler`).
struct StatusStream {
    let request: RelayRequest
    let base: FalWire.QueueBase
    let withLogs: Bool
    /// The last event the client saw (Last-Event-ID or `?last_event_id=`), 0 for all.
    let after: Int
    /// The caller's watcher place, released when the stream ends.
    var lease: WatcherLease?

    /// The frame of `event` and whether it ends the stream: built once per event per loop and shared by
    /// every watcher of the request there (`FrameMemo`), the request's cancellation looked up once with it. An event
    /// that shows as no status change gives an empty frame.
    func frame(
        for event: JobEvent,
        services: RelayServices,
        allocator: ByteBufferAllocator
    ) -> (frame: ByteBuffer, ends: Bool) {
        let stream = self
        let key = FrameMemo.Key(
            kind: .sse,
            job: ObjectIdentifier(request.job),
            sequence: event.sequence,
            requestID: request.id,
            withLogs: stream.withLogs,
            origin: stream.base.origin,
            app: stream.base.app
        )
        return FrameMemo.current.frame(for: key) {
            guard var (phase, logs) = FalWire.statusUpdate(for: event, withLogs: stream.withLogs) else {
                return (allocator.buffer(capacity: 0), false)
            }
            // A request cancelled on its own ends even while its shared job runs on.
            if let early = services.jobs.request(request.id, keyID: request.ownerKeyID)?.earlyOutcome {
                phase = .completed(early)
                logs = stream.withLogs ? [] : nil
            }
            let data = FalWire.status(id: request.id, phase: phase, logs: logs, base: stream.base)
            let ends: Bool
            if case .completed = phase { ends = true } else { ends = false }
            return (ServerSentEvents.frame(data: data, id: event.sequence, allocator: allocator), ends)
        }
    }
}
