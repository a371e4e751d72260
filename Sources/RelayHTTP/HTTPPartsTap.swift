import NIOCore
import NIOHTTP1
import RelayCore

/// The connection state's probe after NIO's HTTP codec: tells `ConnectionStateHandler` where decoded requests begin and end
/// and where NIO's responses begin and end, and answers decoder errors in the fal error shape (400, or 431 for a head
/// too large) in place of NIO's `HTTPServerProtocolErrorHandler`, whose bare 400 has no body. It holds no state of
/// its own: the connection's one state machine (`ConnectionStateMachine`, in `ConnectionStateHandler`) decides.
final class HTTPPartsTap: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let timer: ConnectionStateHandler
    private let maxURLBytes: Int

    init(timer: ConnectionStateHandler, maxURLBytes: Int) {
        self.timer = timer
        self.maxURLBytes = maxURLBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A head was refused (431/414), or another verdict is out: the rest of the request goes nowhere.
        guard !timer.isClosing else { return }
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            guard timer.headReceived(head) else { return }
            guard head.uri.utf8.count <= maxURLBytes else {
                timer.reject(.uriTooLong(limit: maxURLBytes))
                return
            }
        case .body:
            break
        case .end:
            timer.requestEnded()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch Self.unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            timer.responseStarted()
        case .end:
            context.write(data, promise: promise)
            timer.responseEnded(forwarded: true)
            return
        default:
            break
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        // Any parser error is fatal; answer only if no response has begun (else the bytes would interleave).
        if !timer.isResponding {
            switch parserError {
            case .headerOverflow:
                // llhttp's own cap is above any head the configuration allows: the configured limit is the one
                // a client must stay under.
                timer.reject(.headersTooLarge(limit: timer.maxHeaderBytes))
            case .invalidURL:
                timer.reject(.badRequest("The request target is not a valid URL", type: "bad_request"))
            default:
                timer.reject(.badRequest("Malformed HTTP request: \(parserError)", type: "bad_request"))
            }
        }
        context.fireErrorCaught(error)
    }
}

@available(*, unavailable)
extension HTTPPartsTap: Sendable {}
