import NIOCore
import NIOHTTP1
import NIOWebSocket

/// Before the upgrade: sends `GET /ws` (NIOHTTPClientUpgradeHandler adds the WebSocket headers) and reports a refused
/// upgrade or a failed connection. NIOWebSocketClientUpgrader then installs the frame codec and this is removed.
final class WebSocketUpgradeRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    static let name = "relay-load-ws-upgrade-request"

    private let head: HTTPRequestHead
    private let state: WatcherState
    private var upgraded = false

    init(head: HTTPRequestHead, state: WatcherState) {
        self.head = head
        self.state = state
    }

    func handlerAdded(context: ChannelHandlerContext) {
        state.start(channel: context.channel)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !upgraded { state.finish(channel: context.channel, error: "connect") }
    }

    func upgradeSucceeded() { upgraded = true }

    func channelActive(context: ChannelHandlerContext) {
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    /// Only a response that did not upgrade reaches here.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let response) = Self.unwrapInboundIn(data) {
            state.finish(channel: context.channel, error: "http_\(response.status.code)")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.finish(channel: context.channel, error: "closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.finish(channel: context.channel, error: error is NIOHTTPClientUpgradeError ? "ws_upgrade" : LoadConnectionHandler.kind(of: error))
    }
}

/// After the upgrade: sends `{"type":"watch","request_id":…}`, hands each text message to the shared
/// `WatcherState`, answers pings, and closes (1000) after the terminal event.
final class WebSocketWatcherHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let watchMessage: String
    private let state: WatcherState
    /// A fragmented text message so far.
    private var message: ByteBuffer?

    init(requestID: String, state: WatcherState) {
        self.watchMessage = #"{"type":"watch","request_id":"\#(requestID)"}"#
        self.state = state
    }

    func handlerAdded(context: ChannelHandlerContext) {
        state.subscribed()
        let payload = context.channel.allocator.buffer(string: watchMessage)
        context.writeAndFlush(Self.wrapOutboundOut(Self.frame(.text, payload)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            if frame.fin {
                handle(message: frame.unmaskedData, context: context)
            } else {
                message = frame.unmaskedData
            }
        case .continuation:
            guard var partial = message else { return }
            var data = frame.unmaskedData
            partial.writeBuffer(&data)
            message = frame.fin ? nil : partial
            if frame.fin { handle(message: partial, context: context) }
        case .ping:
            context.writeAndFlush(Self.wrapOutboundOut(Self.frame(.pong, frame.unmaskedData)), promise: nil)
        case .connectionClose:
            state.finish(channel: context.channel, error: "ws_closed")
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.finish(channel: context.channel, error: "closed_mid_stream")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.finish(channel: context.channel, error: LoadConnectionHandler.kind(of: error))
    }

    private func handle(message: ByteBuffer, context: ChannelHandlerContext) {
        let (terminal, isError) = message.withUnsafeReadableBytes { bytes in
            if WatcherState.find(Self.errorType, in: bytes) != nil { return (false, true) }
            if WatcherState.find(Self.partialType, in: bytes) != nil { return (false, false) }  // previews: no status
            return (state.record(event: bytes), false)
        }
        if isError {
            state.finish(channel: context.channel, error: "ws_error_message")
        } else if terminal {
            var code = context.channel.allocator.buffer(capacity: 2)
            code.write(webSocketErrorCode: .normalClosure)
            context.writeAndFlush(Self.wrapOutboundOut(Self.frame(.connectionClose, code)), promise: nil)
            state.finish(channel: context.channel, error: nil)
        }
    }

    private static let errorType = Array(#""type":"error""#.utf8)
    private static let partialType = Array(#""type":"partial""#.utf8)

    /// A client frame: masked, as RFC 6455 requires.
    private static func frame(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
    }
}

@available(*, unavailable)
extension WebSocketUpgradeRequestHandler: Sendable {}

@available(*, unavailable)
extension WebSocketWatcherHandler: Sendable {}
