import NIOCore
import NIOSSL

/// Closes an HTTP/1.1 connection after a final answer without cutting off a client that is still sending: the
/// answer is followed by a FIN (where the transport can half-close), then whatever the client still sends is read
/// and dropped until it stops (EOF, or `idle` without a byte), or `limit` passes, or `maxBytes` arrive. Only then
/// does the connection close.
///
/// Why: a 413, 401 or 429 decided before a request's body is read leaves the client writing. Closing at once with
/// unread bytes in the socket makes the kernel answer them with a reset, and a client that writes its whole body
/// before it reads (Python's urllib, many HTTP/1.1 clients) then sees "connection reset" instead of the status. nginx
/// does the same (`lingering_close`, `lingering_time`, `lingering_timeout`).
final class LingeringCloseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    struct Limits {
        /// How long the client may go on sending in all.
        var limit: TimeAmount = .seconds(10)
        /// How long a pause ends the wait.
        var idle: TimeAmount = .seconds(2)
        /// How much is read and dropped at most.
        var maxBytes = 64 << 20
    }

    private let limits: Limits
    private var discarded = 0
    private var idleTimer: Scheduled<Void>?
    private var limitTimer: Scheduled<Void>?

    init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Lingers on `channel`, an HTTP/1.1 connection, once `answered` (the final answer's write) completes. (HTTP/2
    /// streams need none of this: the connection's framing already separates them.)
    static func close(_ channel: any Channel, after answered: EventLoopFuture<Void>, limits: Limits = Limits()) {
        answered.whenComplete { _ in
            guard channel.isActive else {
                channel.close(promise: nil)
                return
            }
            let handler = LingeringCloseHandler(limits: limits)
            let operations = channel.pipeline.syncOperations
            do {
                // Behind TLS, which must still decrypt what arrives; in front of every HTTP handler.
                if let tls = try? operations.context(handlerType: NIOSSLServerHandler.self) {
                    try operations.addHandler(handler, position: .after(tls.handler))
                } else {
                    try operations.addHandler(handler, position: .first)
                }
            } catch {
                channel.close(promise: nil)
                return
            }
            channel.close(mode: .output, promise: nil)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        limitTimer = context.eventLoop.scheduleTask(in: limits.limit) { channel.close(promise: nil) }
        armIdle(context: context)
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        context.read()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        limitTimer?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        discarded += Self.unwrapInboundIn(data).readableBytes
        if discarded > limits.maxBytes {
            context.close(promise: nil)
            return
        }
        armIdle(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Ask for more from here: handlers further in may hold reads back (the fast lane does while its answers wait).
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        limitTimer?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func armIdle(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        let channel = context.channel
        idleTimer = context.eventLoop.scheduleTask(in: limits.idle) { channel.close(promise: nil) }
    }
}

@available(*, unavailable)
extension LingeringCloseHandler: Sendable {}
