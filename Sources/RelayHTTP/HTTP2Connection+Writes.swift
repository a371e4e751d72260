import NIOCore
import NIOHPACK
import NIOHTTP2

/// The write side: frames the stream channels send, answers of the fast lane, flow control's queues, resets, GOAWAY.
extension HTTP2Connection {
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        let stream = Int32(frame.streamID)
        guard phase != .closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch frame.payload {
        case .headers(let headers):
            guard mayWrite(stream) else {
                promise?.fail(NIOHTTP2Errors.noSuchStream(streamID: frame.streamID))
                return
            }
            var block = context.channel.allocator.buffer(capacity: 256)
            HPACKResponseEncoder.block(headers.headers, into: &block)
            send(
                stream,
                PendingWrite(bytes: block, isHeaders: true, endStream: headers.endStream, promise: promise),
                context: context
            )
        case .data(let data):
            guard mayWrite(stream) else {
                promise?.fail(NIOHTTP2Errors.noSuchStream(streamID: frame.streamID))
                return
            }
            guard case .byteBuffer(let bytes) = data.data else {
                // Over TLS there is no file region to send; the relay's streams send bytes.
                promise?.fail(ChannelError.operationUnsupported)
                return
            }
            send(
                stream,
                PendingWrite(bytes: bytes, isHeaders: false, endStream: data.endStream, promise: promise),
                context: context
            )
        case .windowUpdate(let increment):
            if stream == 0 {
                table.grantConnection(increment)
            } else {
                guard table[stream]?.remoteOpen == true else {
                    promise?.succeed()
                    return
                }
                table.grant(stream, increment)
            }
            HTTP2Wire.writeWindowUpdate(&outbound, stream: stream, increment: increment)
            if let promise { outboundPromises.append(promise) }
        case .rstStream(let code):
            guard table[stream] != nil else {
                promise?.succeed()
                return
            }
            reset(stream, code: code, context: context)
            if let promise { outboundPromises.append(promise) }
        case .goAway(_, let code, _):
            goAway(code: code, context: context)
            promise?.succeed()
        case .ping, .settings, .priority, .pushPromise, .alternativeService, .origin:
            // Nothing above this handler sends these on a server connection.
            promise?.succeed()
        }
    }

    /// The stream is open for sending, and no END_STREAM of its own waits in its queue.
    private func mayWrite(_ stream: Int32) -> Bool {
        table[stream]?.localOpen == true && pending[stream]?.last?.endStream != true
    }

    func flush(context: ChannelHandlerContext) {
        flushOutbound(context: context)
    }

    /// Writes what this connection has buffered, then flushes once.
    func flushOutbound(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 || !spilled.isEmpty || !outboundPromises.isEmpty else { return }
        let promise: EventLoopPromise<Void>?
        switch outboundPromises.count {
        case 0: promise = nil
        case 1: promise = outboundPromises[0]
        default:
            let waiting = outboundPromises
            let all = context.eventLoop.makePromise(of: Void.self)
            all.futureResult.whenComplete { result in
                for one in waiting { one.completeWith(result) }
            }
            promise = all
        }
        outboundPromises.removeAll(keepingCapacity: true)
        // Taken out before writing: a write completed during the flush may write and flush again (a stream handler
        // that ends its response when its body is out), and that nested flush must find only what came after.
        var sending = outbound
        outbound = spare ?? context.channel.allocator.buffer(capacity: 4096)
        spare = nil
        if !spilled.isEmpty {
            var pieces: [ByteBuffer] = []
            swap(&pieces, &spilled)  // no copy of the array, and none at all in a flush with nothing spilled
            for piece in pieces {
                context.write(wrapOutboundOut(piece), promise: nil)
            }
        }
        context.write(wrapOutboundOut(sending), promise: promise)
        context.flush()
        // The TLS handler has encrypted it by now: clearing reuses the storage, unless it was grown for a burst.
        sending.clear()
        if spare == nil, sending.capacity <= 64 * 1024 { spare = sending }
    }

    /// The fast lane's (or a refusal's) answer on a stream the client has finished sending on.
    func respond(_ stream: Int32, block: ByteBuffer, body: ByteBuffer, context: ChannelHandlerContext) {
        let bodiless = body.readableBytes == 0
        send(stream, PendingWrite(bytes: block, isHeaders: true, endStream: bodiless, promise: nil), context: context)
        if !bodiless {
            send(stream, PendingWrite(bytes: body, isHeaders: false, endStream: true, promise: nil), context: context)
        }
    }

    /// Output for a stream: written now as far as the windows allow, the rest queued behind what already waits.
    func send(_ stream: Int32, _ write: PendingWrite, context: ChannelHandlerContext) {
        if pending[stream] == nil {
            var write = write
            if emit(stream, &write, context: context) { return }
            pending[stream] = [write]
        } else {
            pending[stream]!.append(write)
        }
    }

    /// Writes as much of one queued write as flow control lets through; true when all of it went.
    private func emit(_ stream: Int32, _ write: inout PendingWrite, context: ChannelHandlerContext) -> Bool {
        if write.isHeaders {
            if encoder.owesSizeUpdate {
                var prefixed = context.channel.allocator.buffer(capacity: write.bytes.readableBytes + 4)
                encoder.takeOwedPrefix(into: &prefixed)
                prefixed.writeImmutableBuffer(write.bytes)
                write.bytes = prefixed
            }
            HTTP2Wire.writeHeaders(
                &outbound,
                stream: stream,
                block: write.bytes,
                endStream: write.endStream,
                maxFrameSize: peerMaxFrameSize
            )
        } else {
            // An empty DATA frame (an END_STREAM alone) needs no window.
            repeat {
                let length =
                    write.bytes.readableBytes == 0
                    ? 0 : table.take(stream, wanted: write.bytes.readableBytes, maxFrame: peerMaxFrameSize)
                guard length > 0 || write.bytes.readableBytes == 0 else { return false }
                let last = length == write.bytes.readableBytes
                HTTP2Wire.writeFrameHeader(
                    &outbound,
                    length: length,
                    type: .data,
                    flags: write.endStream && last ? HTTP2Wire.Flag.endStream : 0,
                    stream: stream
                )
                var payload = write.bytes.readSlice(length: length)!
                if length < 4096 {
                    outbound.writeBuffer(&payload)
                } else {
                    // Not copied: the frames so far, then the payload as its own buffer.
                    spilled.append(outbound)
                    spilled.append(payload)
                    outbound = context.channel.allocator.buffer(capacity: 1024)
                }
            } while write.bytes.readableBytes > 0
        }
        if let promise = write.promise { outboundPromises.append(promise) }
        if write.endStream {
            let hasChannel = table[stream]?.hasChannel == true
            if table.endLocal(stream) {
                streamClosed(stream, hadChannel: hasChannel, context: context)
            } else if !hasChannel, table[stream] != nil {
                // Answered before the request's body ended (a 431): the rest is not wanted (RFC 9113 §8.1).
                reset(stream, code: .noError, context: context)
            }
        }
        return true
    }

    /// Sends what waited on one stream's window.
    func sendPending(_ stream: Int32, context: ChannelHandlerContext) {
        while var write = pending[stream]?.popFirst() {
            guard emit(stream, &write, context: context) else {
                pending[stream]?.prepend(write)
                return
            }
            if pending[stream]?.isEmpty == true { pending[stream] = nil }
        }
    }

    /// Sends what waited on the connection's window (or on every stream's, after a SETTINGS change), in turn: the
    /// first stream served is the one after the stream served first last time, so a long download on one stream
    /// cannot keep a small connection window from the others.
    func sendPending(context: ChannelHandlerContext) {
        guard table.connectionSendWindow > 0 else { return }  // nobody's turn is used up while nothing can go
        let waiting = pending.keys.sorted()
        let start = waiting.firstIndex { $0 > servedFirst } ?? 0
        for stream in waiting[start...] + waiting[..<start] where table.connectionSendWindow > 0 {
            sendPending(stream, context: context)
        }
        if !waiting.isEmpty { servedFirst = waiting[start] }
    }

    /// Fails what was queued for a stream that ended.
    func dropPending(_ stream: Int32, code: HTTP2ErrorCode) {
        guard let writes = pending.removeValue(forKey: stream) else { return }
        let error = NIOHTTP2Errors.streamClosed(streamID: HTTP2StreamID(stream), errorCode: code)
        for write in writes { write.promise?.fail(error) }
    }

    /// Resets a stream from this side (a stream error, or its channel's RST_STREAM).
    func reset(_ stream: Int32, code: HTTP2ErrorCode, context: ChannelHandlerContext) {
        HTTP2Wire.writeReset(&outbound, stream: stream, code: code)
        let state = table.remove(stream, resetHere: true)
        dropPending(stream, code: code)
        if state?.hasChannel == true {
            context.fireUserInboundEventTriggered(StreamClosedEvent(streamID: HTTP2StreamID(stream), reason: code))
        }
        closeIfDone(context: context)
    }

    /// A stream closed both ways: its channel, if it had one, hears of it, and a connection going away may now close.
    /// The fast lane's streams have none: their close costs no trip to the multiplexer.
    func streamClosed(_ stream: Int32, hadChannel: Bool, context: ChannelHandlerContext) {
        dropPending(stream, code: .noError)
        if hadChannel {
            context.fireUserInboundEventTriggered(StreamClosedEvent(streamID: HTTP2StreamID(stream), reason: nil))
        }
        closeIfDone(context: context)
    }

    /// GOAWAY: no stream above the last one the client opened will be served; the connection closes once those
    /// have ended.
    func goAway(code: HTTP2ErrorCode, context: ChannelHandlerContext) {
        guard !goingAway || code != .noError else { return }
        goingAway = true
        HTTP2Wire.writeGoAway(&outbound, lastStream: table.lastClientStream, code: code)
        flushOutbound(context: context)
        closeIfDone(context: context)
    }

    func closeIfDone(context: ChannelHandlerContext) {
        guard goingAway, table.streams.isEmpty, phase != .closed else { return }
        phase = .closed
        flushOutbound(context: context)
        context.close(promise: nil)
    }

    /// A connection error: GOAWAY with its code, then close (RFC 9113 §5.4.1).
    func fail(_ fault: HTTP2Fault, context: ChannelHandlerContext) {
        guard phase != .closed, case .connection(let code, let reason) = fault else { return }
        HTTP2Wire.writeGoAway(&outbound, lastStream: table.lastClientStream, code: code, debug: reason)
        phase = .closed
        flushOutbound(context: context)
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, phase != .closed {
            goAway(code: .noError, context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        for stream in Array(pending.keys) { dropPending(stream, code: .cancel) }
        let error = ChannelError.ioOnClosedChannel
        for promise in outboundPromises { promise.fail(error) }
        outboundPromises.removeAll()
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        readGate.read(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        readGate.writabilityChanged(context: context)
        context.fireChannelWritabilityChanged()
    }
}
