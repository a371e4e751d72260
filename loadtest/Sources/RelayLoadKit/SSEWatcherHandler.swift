import Foundation
import NIOCore

/// What one watcher saw.
struct WatcherResult: Sendable {
    var error: String?
    var events = 0
    var firstEventMicroseconds: UInt64?
    var endUnixMicroseconds: Int64 = 0

    init(error: String) { self.error = error }

    init(events: Int, firstEventMicroseconds: UInt64?, endUnixMicroseconds: Int64) {
        self.events = events
        self.firstEventMicroseconds = firstEventMicroseconds
        self.endUnixMicroseconds = endUnixMicroseconds
    }
}

/// Reads one SSE stream: counts events (blank-line separated) until the response ends.
final class SSEWatcherHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: ByteBuffer
    private let promise: EventLoopPromise<WatcherResult>
    private let createdAt = NIODeadline.now().uptimeNanoseconds
    private var parser = ResponseParser(options: .init(emitHead: true, emitBody: true))
    private var status = 0
    private var events = 0
    private var firstEventMicroseconds: UInt64?
    /// The stream's previous byte was a newline (a blank line may straddle two reads).
    private var afterNewline = false
    private var done = false

    private let deadline: NIODeadline
    private var timeout: Scheduled<Void>?

    init(request: ByteBuffer, deadline: NIODeadline, promise: EventLoopPromise<WatcherResult>) {
        self.request = request
        self.deadline = deadline
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeout = context.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.0.finish(context: bound.value.1, error: "timeout")
        }
    }

    /// A failed connect ends here without ever becoming active.
    func handlerRemoved(context: ChannelHandlerContext) {
        finish(context: context, error: "connect")
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(Self.wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        do {
            while !done, let event = try parser.next(&buffer) {
                switch event {
                case .head(let head):
                    status = head.status
                case .body(let chunk):
                    countEvents(chunk)
                case .end:
                    finish(context: context, error: (200..<300).contains(status) ? nil : "http_\(status)")
                }
            }
        } catch {
            finish(context: context, error: "parse")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done, (try? parser.finish()) != nil, (200..<300).contains(status) {
            finish(context: context, error: nil)  // a read-until-close stream
        }
        finish(context: context, error: status == 0 ? "closed" : "closed_mid_stream")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(context: context, error: LoadConnectionHandler.kind(of: error))
    }

    private func countEvents(_ chunk: ByteBuffer) {
        chunk.withUnsafeReadableBytes { raw in
            for byte in raw where byte != UInt8(ascii: "\r") {
                if byte == UInt8(ascii: "\n") {
                    if afterNewline {
                        events += 1
                        if firstEventMicroseconds == nil {
                            firstEventMicroseconds = (NIODeadline.now().uptimeNanoseconds &- createdAt) / 1000
                        }
                    }
                    afterNewline = true
                } else {
                    afterNewline = false
                }
            }
        }
    }

    private func finish(context: ChannelHandlerContext, error: String?) {
        guard !done else { return }
        done = true
        timeout?.cancel()
        if let error {
            promise.succeed(WatcherResult(error: error))
        } else {
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            let unixMicroseconds = Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
            promise.succeed(
                WatcherResult(
                    events: events,
                    firstEventMicroseconds: firstEventMicroseconds,
                    endUnixMicroseconds: unixMicroseconds
                )
            )
        }
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension SSEWatcherHandler: Sendable {}
