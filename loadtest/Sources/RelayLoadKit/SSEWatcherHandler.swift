import NIOCore

/// Reads one SSE stream: each blank-line-terminated block with a `data:` line is an event (comment pings are not),
/// handed whole to the shared `WatcherState`, until the response ends.
final class SSEWatcherHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: ByteBuffer
    private let state: WatcherState
    private var parser = ResponseParser(options: .init(emitHead: true, emitBody: true))
    private var status = 0
    /// The current block so far, without carriage returns (a block may straddle reads).
    private var block: [UInt8] = []
    private var blockHasData = false
    private var afterNewline = true

    init(request: ByteBuffer, state: WatcherState) {
        self.request = request
        self.state = state
        block.reserveCapacity(512)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        state.start(channel: context.channel)
    }

    /// A failed connect ends here without ever becoming active.
    func handlerRemoved(context: ChannelHandlerContext) {
        state.finish(channel: context.channel, error: "connect")
    }

    func channelActive(context: ChannelHandlerContext) {
        state.subscribed()
        context.writeAndFlush(Self.wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        do {
            while !state.done, let event = try parser.next(&buffer) {
                switch event {
                case .head(let head):
                    status = head.status
                    if !(200..<300).contains(status) { state.finish(channel: context.channel, error: "http_\(status)") }
                case .body(let chunk):
                    if readEvents(chunk) {
                        // The terminal event: the relay closes the stream next; its arrival is what is measured.
                        state.finish(channel: context.channel, error: nil)
                    }
                case .end:
                    state.finish(channel: context.channel, error: nil)
                }
            }
        } catch {
            state.finish(channel: context.channel, error: "parse")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if (try? parser.finish()) != nil, (200..<300).contains(status) {
            state.finish(channel: context.channel, error: nil)  // a read-until-close stream
        }
        state.finish(channel: context.channel, error: status == 0 ? "closed" : "closed_mid_stream")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.finish(channel: context.channel, error: LoadConnectionHandler.kind(of: error))
    }

    /// Splits the chunk into blocks; true once the terminal event was seen.
    private func readEvents(_ chunk: ByteBuffer) -> Bool {
        chunk.withUnsafeReadableBytes { raw in
            for byte in raw where byte != UInt8(ascii: "\r") {
                if byte == UInt8(ascii: "\n") {
                    if afterNewline {
                        if blockHasData, block.withUnsafeBytes({ state.record(event: $0) }) { return true }
                        block.removeAll(keepingCapacity: true)
                        blockHasData = false
                        continue
                    }
                    afterNewline = true
                } else {
                    if afterNewline && byte == UInt8(ascii: "d") { blockHasData = true }  // a `data:` line
                    afterNewline = false
                }
                block.append(byte)
            }
            return false
        }
    }
}

@available(*, unavailable)
extension SSEWatcherHandler: Sendable {}
