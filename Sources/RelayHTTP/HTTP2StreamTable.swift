import NIOHTTP2

/// A fault a frame revealed: the whole connection's (GOAWAY, then close) or one stream's (RST_STREAM).
enum HTTP2Fault: Error, Equatable {
    case connection(HTTP2ErrorCode, String)
    case stream(Int32, HTTP2ErrorCode)
}

/// The streams of one server connection and its flow-control windows (RFC 9113 §5.1, §5.1.2, §6.9): what the
/// connection handler asks before it passes a frame on or writes one out. Pure state: no I/O, no clock.
struct HTTP2StreamTable {
    struct Stream {
        /// The client may still send (no END_STREAM from it yet).
        var remoteOpen: Bool
        /// The relay may still send.
        var localOpen = true
        var sendWindow: Int
        var receiveWindow: Int
        /// A stream channel of NIO's multiplexer answers it; otherwise the fast lane did.
        var hasChannel: Bool
        /// DATA the request's `content-length` still owes.
        var expectedBytes: Int?
    }

    enum DataVerdict: Equatable {
        /// Pass the DATA on; `closed` when the stream ended with it.
        case deliver(closed: Bool)
        /// A frame on a stream this side reset: dropped (§5.1), its window given back by the caller.
        case ignore
    }

    private(set) var streams: [Int32: Stream] = [:]
    /// The highest stream the client opened (or that was refused); lower ones not in `streams` are closed.
    private(set) var lastClientStream: Int32 = 0
    private(set) var connectionSendWindow = HTTP2Wire.defaultWindow
    private(set) var connectionReceiveWindow = HTTP2Wire.defaultWindow
    private(set) var peerInitialWindow = HTTP2Wire.defaultWindow
    let localInitialWindow = HTTP2Wire.defaultWindow
    let maxConcurrentStreams: Int
    /// Streams this side reset lately: frames the client had already sent on them are dropped, not faulted.
    private var recentlyReset: [Int32] = []

    init(maxConcurrentStreams: Int) {
        self.maxConcurrentStreams = maxConcurrentStreams
    }

    subscript(stream: Int32) -> Stream? { streams[stream] }

    // MARK: New streams

    enum Opening: Equatable {
        case open
        /// Over SETTINGS_MAX_CONCURRENT_STREAMS: reset with REFUSED_STREAM (§5.1.2).
        case refuse
        /// The stream was reset by this side and the client's header block was already on its way: dropped.
        case ignore
    }

    /// A header block arrived on a stream not in the table. Throws a connection fault for a block no client may send.
    mutating func admit(_ stream: Int32) throws(HTTP2Fault) -> Opening {
        guard stream > lastClientStream else {
            if recentlyReset.contains(stream) { return .ignore }
            // A stream that ended, or one skipped and so closed by a higher one (§5.1.1): PROTOCOL_ERROR covers both.
            throw .connection(.protocolError, "HEADERS on closed stream \(stream)")
        }
        guard stream & 1 == 1 else { throw .connection(.protocolError, "client stream \(stream) is even") }
        lastClientStream = stream
        return streams.count < maxConcurrentStreams ? .open : .refuse
    }

    mutating func open(_ stream: Int32, endStream: Bool, hasChannel: Bool, expectedBytes: Int?) {
        streams[stream] = Stream(
            remoteOpen: !endStream,
            sendWindow: peerInitialWindow,
            receiveWindow: localInitialWindow,
            hasChannel: hasChannel,
            expectedBytes: expectedBytes
        )
    }

    /// Trailers (a second header block) on an open stream; true when the stream closed with them.
    mutating func receiveTrailers(_ stream: Int32, endStream: Bool) throws(HTTP2Fault) -> Bool {
        guard var state = streams[stream], state.remoteOpen else { throw .stream(stream, .streamClosed) }
        guard endStream, state.expectedBytes ?? 0 == 0 else { throw .stream(stream, .protocolError) }
        state.remoteOpen = false
        return settle(stream, state)
    }

    // MARK: Inbound DATA

    /// DATA of `flowLength` bytes (padding included) carrying `dataLength` bytes of content.
    mutating func receiveData(
        _ stream: Int32,
        flowLength: Int,
        dataLength: Int,
        endStream: Bool
    ) throws(HTTP2Fault) -> DataVerdict {
        connectionReceiveWindow -= flowLength
        guard connectionReceiveWindow >= 0 else { throw .connection(.flowControlError, "connection window exceeded") }
        guard var state = streams[stream] else {
            guard stream <= lastClientStream else { throw .connection(.protocolError, "DATA on idle stream \(stream)") }
            if recentlyReset.contains(stream) { return .ignore }
            throw .stream(stream, .streamClosed)
        }
        guard state.remoteOpen else { throw .stream(stream, .streamClosed) }
        state.receiveWindow -= flowLength
        guard state.receiveWindow >= 0 else { throw .stream(stream, .flowControlError) }
        if let expected = state.expectedBytes {
            let left = expected - dataLength
            guard left >= 0, !endStream || left == 0 else { throw .stream(stream, .protocolError) }
            state.expectedBytes = left
        }
        if endStream { state.remoteOpen = false }
        return .deliver(closed: settle(stream, state))
    }

    /// The caller gave back `increment` bytes of the connection's receive window (a WINDOW_UPDATE it wrote).
    mutating func grantConnection(_ increment: Int) { connectionReceiveWindow += increment }

    mutating func grant(_ stream: Int32, _ increment: Int) {
        streams[stream]?.receiveWindow += increment
    }

    // MARK: Outbound flow control

    /// The client's WINDOW_UPDATE; true when the stream (or, for stream 0, the connection) may send more now.
    mutating func windowUpdate(_ stream: Int32, increment: Int) throws(HTTP2Fault) -> Bool {
        if stream == 0 {
            guard increment > 0 else { throw .connection(.protocolError, "WINDOW_UPDATE of 0") }
            connectionSendWindow += increment
            guard connectionSendWindow <= HTTP2Wire.maxWindow else {
                throw .connection(.flowControlError, "connection window over 2^31-1")
            }
            return true
        }
        guard stream <= lastClientStream else { throw .connection(.protocolError, "WINDOW_UPDATE on idle stream") }
        guard increment > 0 else { throw .stream(stream, .protocolError) }
        guard var state = streams[stream] else { return false }
        state.sendWindow += increment
        guard state.sendWindow <= HTTP2Wire.maxWindow else { throw .stream(stream, .flowControlError) }
        streams[stream] = state
        return true
    }

    /// The client's SETTINGS_INITIAL_WINDOW_SIZE: every stream's send window moves by the difference (§6.9.2).
    mutating func peerInitialWindowChanged(_ size: Int) throws(HTTP2Fault) {
        guard size <= HTTP2Wire.maxWindow else { throw .connection(.flowControlError, "initial window over 2^31-1") }
        let delta = size - peerInitialWindow
        peerInitialWindow = size
        guard delta != 0 else { return }
        for id in Array(streams.keys) {
            streams[id]!.sendWindow += delta
            guard streams[id]!.sendWindow <= HTTP2Wire.maxWindow else {
                throw .connection(.flowControlError, "stream window over 2^31-1")
            }
        }
    }

    /// Takes up to `wanted` bytes (at most `maxFrame`) of both windows for one DATA frame; 0 when blocked.
    mutating func take(_ stream: Int32, wanted: Int, maxFrame: Int) -> Int {
        guard let state = streams[stream] else { return 0 }
        let length = min(wanted, maxFrame, connectionSendWindow, state.sendWindow)
        guard length > 0 else { return 0 }
        connectionSendWindow -= length
        streams[stream]!.sendWindow -= length
        return length
    }

    // MARK: Ends

    /// The relay sent END_STREAM; true when the stream is now closed.
    mutating func endLocal(_ stream: Int32) -> Bool {
        guard var state = streams[stream] else { return false }
        state.localOpen = false
        return settle(stream, state)
    }

    /// The stream ends now (a reset either way); returns what it was.
    @discardableResult
    mutating func remove(_ stream: Int32, resetHere: Bool) -> Stream? {
        if resetHere {
            if recentlyReset.count == 256 { recentlyReset.removeFirst() }
            recentlyReset.append(stream)
        }
        return streams.removeValue(forKey: stream)
    }

    /// The client reset a stream. Throws for a reset of a stream it never opened (§6.4); returns the stream, if open.
    mutating func clientReset(_ stream: Int32) throws(HTTP2Fault) -> Stream? {
        guard stream <= lastClientStream else { throw .connection(.protocolError, "RST_STREAM on idle stream") }
        return streams.removeValue(forKey: stream)
    }

    private mutating func settle(_ stream: Int32, _ state: Stream) -> Bool {
        if state.remoteOpen || state.localOpen {
            streams[stream] = state
            return false
        }
        streams.removeValue(forKey: stream)
        return true
    }
}
