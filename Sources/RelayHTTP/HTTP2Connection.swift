import NIOCore
import NIOHPACK
import NIOHTTP2
import RelayCore

/// The relay's HTTP/2 connection (RFC 9113, server side): it reads frames straight from the TLS handler's bytes, keeps
/// the streams and both directions' flow control (`HTTP2StreamTable`), decodes request header blocks with NIO's HPACK
/// decoder and encodes responses with `HPACKResponseEncoder`. A complete bodiless GET or HEAD goes to the fast lane
/// first, which answers the hottest reads with no stream channel at all. Every other stream goes on, as `HTTP2Frame`s
/// with NIO's stream events, to NIO's multiplexer above, which gives it a stream channel and the relay's handler;
/// their frames come back down here to be encoded. Everything written while a read is handled leaves in one buffer
/// at the read's end.
///
/// It replaces NIO's `NIOHTTP2Handler`, whose frame objects, stream state machines and per-frame pipeline trips were
/// about two thirds of a cached read's cost over HTTP/2 (see the README's benchmarks).
final class HTTP2Connection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = ByteBuffer

    struct Settings {
        var maxConcurrentStreams = 100
        /// The request head limit: a larger header list is answered 431, as over HTTP/1.1.
        var maxHeaderBytes = 32 * 1024
        /// A header list the decoder refuses outright (a connection error: its table is then out of step).
        var hardHeaderListSize: Int { max(4 * maxHeaderBytes, 64 * 1024) }
    }

    enum Phase {
        case preface
        case settings
        case open
        case closed
    }

    struct PendingWrite {
        var bytes: ByteBuffer
        /// A header block (trailers behind DATA) rather than DATA.
        var isHeaders: Bool
        var endStream: Bool
        var promise: EventLoopPromise<Void>?
    }

    let settings: Settings
    let lane: HTTP2FastLane?
    var phase = Phase.preface
    var table: HTTP2StreamTable
    var decoder: HPACKDecoder
    var encoder = HPACKResponseEncoder()
    var peerMaxFrameSize = HTTP2Wire.defaultMaxFrameSize
    /// Bytes of a frame not yet whole.
    private var held: ByteBuffer?
    /// A header block waiting for its CONTINUATION frames.
    private var headerBlock: (stream: Int32, endStream: Bool, selfDependent: Bool, block: ByteBuffer)?
    /// Frames not yet written. Bytes are copied in, except large DATA payloads, which go out as their own buffers
    /// (`spilled`) between the frames around them.
    var outbound = ByteBuffer()
    var spilled: [ByteBuffer] = []
    /// The buffer the last flush wrote: cleared and used again once the TLS handler let go of it, so a connection
    /// writes with two buffers and no allocation in its steady state.
    var spare: ByteBuffer?
    var outboundPromises: [EventLoopPromise<Void>] = []
    /// Per stream, output its flow-control window cannot take yet, in order.
    var pending: [Int32: CircularBuffer<PendingWrite>] = [:]
    /// The stream `sendPending` served first last time (round robin over streams waiting on the connection window).
    var servedFirst: Int32 = 0
    /// Set once GOAWAY went out: the connection closes when its last stream does.
    var goingAway = false
    var readGate = ReadGate()
    let now: () -> NIODeadline
    /// Streams the client reset, and frames that carry nothing or earn a stream error (`HTTP2FloodGuard`).
    var resets = HTTP2FloodGuard(limit: 200)
    var glitches = HTTP2FloodGuard(limit: 1_000)

    init(settings: Settings, lane: HTTP2FastLane?, now: @escaping () -> NIODeadline = NIODeadline.now) {
        self.settings = settings
        self.lane = lane
        self.now = now
        self.table = HTTP2StreamTable(maxConcurrentStreams: settings.maxConcurrentStreams)
        self.decoder = HPACKDecoder(
            allocator: ByteBufferAllocator(),
            maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize,
            maxHeaderListSize: settings.hardHeaderListSize
        )
    }

    func handlerAdded(context: ChannelHandlerContext) {
        outbound = context.channel.allocator.buffer(capacity: 4096)
        spare = context.channel.allocator.buffer(capacity: 4096)
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    /// The server's connection preface: its SETTINGS (RFC 9113 §3.4).
    private func start(context: ChannelHandlerContext) {
        guard phase == .preface, outbound.readableBytes == 0 else { return }
        HTTP2Wire.writeSettings(
            &outbound,
            [
                (.maxConcurrentStreams, UInt32(settings.maxConcurrentStreams)),
                (.maxHeaderListSize, UInt32(settings.hardHeaderListSize)),
            ]
        )
        flushOutbound(context: context)
    }

    // MARK: Reading frames

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard phase != .closed else { return }
        if var earlier = held {
            held = nil
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        do {
            try read(&bytes, context: context)
            if bytes.readableBytes > 0, phase != .closed {
                bytes.discardReadBytes()
                held = bytes
            }
        } catch {
            fail(error, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        flushOutbound(context: context)
    }

    private func read(_ bytes: inout ByteBuffer, context: ChannelHandlerContext) throws(HTTP2Fault) {
        if phase == .preface {
            let seen = min(bytes.readableBytes, HTTP2Wire.prefaceLength)
            let matches = HTTP2Wire.preface.withUTF8Buffer { preface in
                bytes.withUnsafeReadableBytes { $0.prefix(seen).elementsEqual(preface.prefix(seen)) }
            }
            guard matches else { throw .connection(.protocolError, "not an HTTP/2 client preface") }
            guard seen == HTTP2Wire.prefaceLength else { return }
            bytes.moveReaderIndex(forwardBy: seen)
            phase = .settings
        }
        while phase != .closed, let header = HTTP2Wire.peekFrameHeader(bytes) {
            guard header.length <= HTTP2Wire.defaultMaxFrameSize else {
                throw .connection(.frameSizeError, "frame of \(header.length) bytes")
            }
            guard bytes.readableBytes >= HTTP2Wire.frameHeaderLength + header.length else { return }
            bytes.moveReaderIndex(forwardBy: HTTP2Wire.frameHeaderLength)
            var payload = bytes.readSlice(length: header.length)!
            do {
                try frame(header, payload: &payload, context: context)
            } catch .stream(let stream, let code) {
                reset(stream, code: code, context: context)
                // A refusal is the relay's own limit speaking (or its GOAWAY), not the client misbehaving.
                if code != .refusedStream { try glitch() }
            }
        }
    }

    private func frame(
        _ header: HTTP2Wire.FrameHeader,
        payload: inout ByteBuffer,
        context: ChannelHandlerContext
    ) throws(HTTP2Fault) {
        if phase == .settings {
            guard header.known == .settings, !header.has(HTTP2Wire.Flag.ack) else {
                throw .connection(.protocolError, "the client preface's first frame must be SETTINGS")
            }
            phase = .open
        }
        if let pendingBlock = headerBlock {
            guard header.known == .continuation, header.stream == pendingBlock.stream else {
                throw .connection(.protocolError, "header block interrupted")
            }
        }
        guard let type = header.known else { return }  // unknown types are ignored (§4.1)
        switch type {
        case .data: try data(header, payload: &payload, context: context)
        case .headers: try headers(header, payload: &payload, context: context)
        case .continuation: try continuation(header, payload: &payload, context: context)
        case .priority:
            guard header.stream != 0 else { throw .connection(.protocolError, "PRIORITY on stream 0") }
            guard header.length == 5 else { throw .stream(header.stream, .frameSizeError) }
            let dependency = Int32(bitPattern: payload.readInteger(as: UInt32.self)! & 0x7FFF_FFFF)
            guard dependency != header.stream else { throw .stream(header.stream, .protocolError) }
        case .rstStream: try clientReset(header, payload: &payload, context: context)
        case .settings: try peerSettings(header, payload: &payload, context: context)
        case .pushPromise: throw .connection(.protocolError, "PUSH_PROMISE from a client")
        case .ping:
            guard header.length == 8 else { throw .connection(.frameSizeError, "PING of \(header.length) bytes") }
            guard header.stream == 0 else { throw .connection(.protocolError, "PING on a stream") }
            if !header.has(HTTP2Wire.Flag.ack) { HTTP2Wire.writePingAck(&outbound, opaque: payload.readInteger()!) }
        case .goAway:
            guard header.stream == 0 else { throw .connection(.protocolError, "GOAWAY on a stream") }
            guard header.length >= 8 else { throw .connection(.frameSizeError, "GOAWAY of \(header.length) bytes") }
            goingAway = true
            closeIfDone(context: context)
        case .windowUpdate:
            guard header.length == 4 else { throw .connection(.frameSizeError, "WINDOW_UPDATE of \(header.length)") }
            let increment = Int(payload.readInteger(as: UInt32.self)! & 0x7FFF_FFFF)
            if try table.windowUpdate(header.stream, increment: increment) {
                if header.stream == 0 {
                    sendPending(context: context)
                } else {
                    sendPending(header.stream, context: context)
                }
            }
        }
    }

    /// A frame that carried nothing or earned a stream error; too many of them end the connection.
    private func glitch() throws(HTTP2Fault) {
        guard glitches.allow(at: now()) else {
            throw .connection(.enhanceYourCalm, "too many empty frames or stream errors")
        }
    }

    private func data(
        _ header: HTTP2Wire.FrameHeader,
        payload: inout ByteBuffer,
        context: ChannelHandlerContext
    ) throws(HTTP2Fault) {
        guard header.stream != 0 else { throw .connection(.protocolError, "DATA on stream 0") }
        try stripPadding(header, payload: &payload)
        let endStream = header.has(HTTP2Wire.Flag.endStream)
        if payload.readableBytes == 0, !endStream { try glitch() }
        let hasChannel = table[header.stream]?.hasChannel == true
        let verdict: HTTP2StreamTable.DataVerdict
        do {
            verdict = try table.receiveData(
                header.stream,
                flowLength: header.length,
                dataLength: payload.readableBytes,
                endStream: endStream
            )
        } catch .stream(let stream, let code) {
            giveBackConnectionWindow(header.length)
            throw .stream(stream, code)
        }
        switch verdict {
        case .ignore:
            giveBackConnectionWindow(header.length)
        case .deliver(let closed) where !hasChannel:
            // The body of a request answered already (431): read and dropped.
            giveBackConnectionWindow(header.length)
            if closed { streamClosed(header.stream, hadChannel: false, context: context) }
        case .deliver(let closed):
            let stream = HTTP2StreamID(header.stream)
            let frame = HTTP2Frame(
                streamID: stream,
                payload: .data(.init(data: .byteBuffer(payload), endStream: endStream))
            )
            context.fireChannelRead(wrapInboundOut(frame))
            context.fireUserInboundEventTriggered(
                NIOHTTP2WindowUpdatedEvent(
                    streamID: stream,
                    inboundWindowSize: table[header.stream]?.receiveWindow,
                    outboundWindowSize: table[header.stream]?.sendWindow
                )
            )
            context.fireUserInboundEventTriggered(
                NIOHTTP2WindowUpdatedEvent(
                    streamID: .rootStream,
                    inboundWindowSize: table.connectionReceiveWindow,
                    outboundWindowSize: table.connectionSendWindow
                )
            )
            if closed { streamClosed(header.stream, hadChannel: true, context: context) }
        }
    }

    /// DATA no stream channel reads: its bytes go straight back to the client's connection window.
    private func giveBackConnectionWindow(_ length: Int) {
        guard length > 0 else { return }
        HTTP2Wire.writeWindowUpdate(&outbound, stream: 0, increment: length)
        table.grantConnection(length)
    }

    private func stripPadding(_ header: HTTP2Wire.FrameHeader, payload: inout ByteBuffer) throws(HTTP2Fault) {
        guard header.has(HTTP2Wire.Flag.padded) else { return }
        guard let padding = payload.readInteger(as: UInt8.self), Int(padding) <= payload.readableBytes else {
            throw .connection(.protocolError, "padding longer than the frame")
        }
        payload.moveWriterIndex(to: payload.writerIndex - Int(padding))
    }

    private func headers(
        _ header: HTTP2Wire.FrameHeader,
        payload: inout ByteBuffer,
        context: ChannelHandlerContext
    ) throws(HTTP2Fault) {
        guard header.stream != 0 else { throw .connection(.protocolError, "HEADERS on stream 0") }
        try stripPadding(header, payload: &payload)
        var selfDependent = false
        if header.has(HTTP2Wire.Flag.priority) {
            guard let dependency = payload.readInteger(as: UInt32.self), payload.readInteger(as: UInt8.self) != nil
            else { throw .connection(.frameSizeError, "HEADERS too short for its priority") }
            selfDependent = Int32(bitPattern: dependency & 0x7FFF_FFFF) == header.stream
        }
        let endStream = header.has(HTTP2Wire.Flag.endStream)
        guard header.has(HTTP2Wire.Flag.endHeaders) else {
            var block = context.channel.allocator.buffer(capacity: payload.readableBytes * 2)
            block.writeBuffer(&payload)
            headerBlock = (header.stream, endStream, selfDependent, block)
            return
        }
        try headerBlock(
            header.stream,
            endStream: endStream,
            selfDependent: selfDependent,
            block: &payload,
            context: context
        )
    }

    private func continuation(
        _ header: HTTP2Wire.FrameHeader,
        payload: inout ByteBuffer,
        context: ChannelHandlerContext
    ) throws(HTTP2Fault) {
        guard var pendingBlock = headerBlock else {
            throw .connection(.protocolError, "CONTINUATION without HEADERS")
        }
        headerBlock = nil
        if payload.readableBytes == 0, !header.has(HTTP2Wire.Flag.endHeaders) { try glitch() }
        pendingBlock.block.writeBuffer(&payload)
        guard pendingBlock.block.readableBytes <= settings.hardHeaderListSize else {
            throw .connection(.enhanceYourCalm, "header block over \(settings.hardHeaderListSize) bytes")
        }
        guard header.has(HTTP2Wire.Flag.endHeaders) else {
            headerBlock = pendingBlock
            return
        }
        try headerBlock(
            pendingBlock.stream,
            endStream: pendingBlock.endStream,
            selfDependent: pendingBlock.selfDependent,
            block: &pendingBlock.block,
            context: context
        )
    }

    /// A whole header block: a new request, or a request's trailers.
    private func headerBlock(
        _ stream: Int32,
        endStream: Bool,
        selfDependent: Bool,
        block: inout ByteBuffer,
        context: ChannelHandlerContext
    ) throws(HTTP2Fault) {
        // Decoded whatever happens to the stream: the decoder's table must follow every block (RFC 7541 §2.3.2).
        let fields: HPACKHeaders
        do {
            fields = try decoder.decodeHeaders(from: &block)
        } catch {
            throw .connection(.compressionError, "header block: \(error)")
        }
        if selfDependent {
            // A stream depending on itself (RFC 9113 §5.3.1): its stream is reset, once the block has been decoded.
            if table[stream] == nil, try table.admit(stream) == .ignore { return }
            throw .stream(stream, .protocolError)
        }
        if let state = table[stream] {
            guard HTTP2RequestCheck.trailers(fields) else { throw .stream(stream, .protocolError) }
            let closed = try table.receiveTrailers(stream, endStream: endStream)
            guard state.hasChannel else {
                // Trailers of a request answered already (431): read and dropped.
                if closed { streamClosed(stream, hadChannel: false, context: context) }
                return
            }
            let frame = HTTP2Frame(
                streamID: HTTP2StreamID(stream),
                payload: .headers(.init(headers: fields, endStream: true))
            )
            context.fireChannelRead(wrapInboundOut(frame))
            if closed { streamClosed(stream, hadChannel: true, context: context) }
            return
        }
        switch try table.admit(stream) {
        case .ignore: return
        case .refuse: throw .stream(stream, .refusedStream)
        case .open: break
        }
        guard !goingAway else { throw .stream(stream, .refusedStream) }
        // Malformed, or a content-length its DATA cannot match: no DATA follows END_STREAM (§8.1.1).
        guard let request = HTTP2RequestCheck.request(fields), !endStream || request.contentLength ?? 0 == 0 else {
            throw .stream(stream, .protocolError)
        }
        if request.size > settings.maxHeaderBytes {
            table.open(stream, endStream: endStream, hasChannel: false, expectedBytes: nil)
            let refusal = PreparedResponse(
                error: .headersTooLarge(limit: settings.maxHeaderBytes),
                requestID: nil,
                isHead: request.method == "HEAD"
            )
            respond(stream, block: HTTP2FastLane.block(refusal), body: refusal.body, context: context)
            return
        }
        if endStream, let lane, let answer = lane.answer(request, channel: context.channel) {
            table.open(stream, endStream: true, hasChannel: false, expectedBytes: nil)
            respond(stream, block: answer.block, body: answer.body, context: context)
            return
        }
        table.open(stream, endStream: endStream, hasChannel: true, expectedBytes: request.contentLength)
        let id = HTTP2StreamID(stream)
        let frame = HTTP2Frame(streamID: id, payload: .headers(.init(headers: fields, endStream: endStream)))
        context.fireChannelRead(wrapInboundOut(frame))
        context.fireUserInboundEventTriggered(
            NIOHTTP2StreamCreatedEvent(
                streamID: id,
                // NIO's names: "local" is the window this side sends into, "remote" the one it grants.
                localInitialWindowSize: UInt32(max(table.peerInitialWindow, 0)),
                remoteInitialWindowSize: UInt32(table.localInitialWindow)
            )
        )
    }

    private func clientReset(
        _ header: HTTP2Wire.FrameHeader,
        payload: inout ByteBuffer,
        context: ChannelHandlerContext
    ) throws(HTTP2Fault) {
        guard header.length == 4 else { throw .connection(.frameSizeError, "RST_STREAM of \(header.length) bytes") }
        guard header.stream != 0 else { throw .connection(.protocolError, "RST_STREAM on stream 0") }
        let code = HTTP2ErrorCode(networkCode: Int(payload.readInteger(as: UInt32.self)!))
        guard let state = try table.clientReset(header.stream) else { return }
        dropPending(header.stream, code: code)
        if state.hasChannel {
            context.fireUserInboundEventTriggered(
                StreamClosedEvent(streamID: HTTP2StreamID(header.stream), reason: code)
            )
        }
        guard resets.allow(at: now()) else {
            throw .connection(.enhanceYourCalm, "too many streams reset")
        }
        closeIfDone(context: context)
    }

    private func peerSettings(
        _ header: HTTP2Wire.FrameHeader,
        payload: inout ByteBuffer,
        context: ChannelHandlerContext
    ) throws(HTTP2Fault) {
        guard header.stream == 0 else { throw .connection(.protocolError, "SETTINGS on a stream") }
        if header.has(HTTP2Wire.Flag.ack) {
            guard header.length == 0 else { throw .connection(.frameSizeError, "SETTINGS ack with a payload") }
            return
        }
        guard header.length % 6 == 0 else { throw .connection(.frameSizeError, "SETTINGS of \(header.length) bytes") }
        var windowChanged = false
        while let identifier = payload.readInteger(as: UInt16.self), let value = payload.readInteger(as: UInt32.self) {
            switch HTTP2Wire.Setting(rawValue: identifier) {
            case .headerTableSize: encoder.peerTableSizeChanged(Int(value))
            case .enablePush:
                guard value <= 1 else { throw .connection(.protocolError, "SETTINGS_ENABLE_PUSH of \(value)") }
            case .initialWindowSize:
                try table.peerInitialWindowChanged(Int(value))
                windowChanged = true
            case .maxFrameSize:
                guard (HTTP2Wire.defaultMaxFrameSize...0xFF_FFFF).contains(Int(value)) else {
                    throw .connection(.protocolError, "SETTINGS_MAX_FRAME_SIZE of \(value)")
                }
                peerMaxFrameSize = Int(value)
            case .maxConcurrentStreams, .maxHeaderListSize, nil:
                break  // limits on what the relay may open or send; it opens none and sends small heads
            }
        }
        HTTP2Wire.writeSettingsAck(&outbound)
        if windowChanged { sendPending(context: context) }
    }
}
