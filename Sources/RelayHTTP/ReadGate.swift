import NIOCore

/// Back-pressure for a handler that answers requests itself: while the socket cannot take more, no more requests are
/// read, since their answers would only pile up in memory. The HTTP/1.1 fast lane and the HTTP/2 connection use it.
struct ReadGate {
    private var held = false

    /// The pipeline's `read`: passed on while the channel is writable, held otherwise.
    mutating func read(context: ChannelHandlerContext) {
        guard context.channel.isWritable else {
            held = true
            return
        }
        context.read()
    }

    /// The channel's writability changed: a held read goes out once it can take more.
    mutating func writabilityChanged(context: ChannelHandlerContext) {
        guard held, context.channel.isWritable else { return }
        held = false
        context.read()
    }
}
