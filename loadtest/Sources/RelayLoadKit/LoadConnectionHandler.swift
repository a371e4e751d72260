import NIOCore
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One closed-loop connection: send a request, wait for the whole response, record it, send the next.
///
/// Reads raw bytes (after TLS) and frames them with `ResponseParser`; with one connection per request it closes
/// after each response and the worker opens the next, so the latency then covers connect and handshake too.
final class LoadConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let worker: LoadWorker
    private var parser: ResponseParser
    /// When the channel was made, before the TCP connect: the start of a one-connection-per-request request.
    private let createdAt = NIODeadline.now().uptimeNanoseconds
    private(set) var requestStartedAt: UInt64 = 0
    private(set) var inFlight = false
    private var failed = false
    private var context: ChannelHandlerContext?

    init(worker: LoadWorker, parserOptions: ResponseParser.Options) {
        self.worker = worker
        self.parser = ResponseParser(options: parserOptions)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        worker.connectionActive(self)
        let start = worker.newConnectionPerRequest ? createdAt : NIODeadline.now().uptimeNanoseconds
        send(context: context, startedAt: start)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        do {
            while let event = try parser.next(&buffer) {
                guard case .end(let response) = event else { continue }
                guard complete(context: context, response) else { return }
            }
        } catch {
            fail(context: context, kind: "parse")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if inFlight {
            // A read-until-close body ends here; anything else in flight was cut off.
            if let response = try? parser.finish() {
                inFlight = false
                worker.record(response, latencyNanoseconds: NIODeadline.now().uptimeNanoseconds &- requestStartedAt)
            } else {
                inFlight = false
                failed = true
                worker.recordFailure(kind: "closed")
            }
        }
        worker.connectionInactive(self, afterError: failed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, kind: Self.kind(of: error))
    }

    /// The worker's sweep found this request older than the timeout.
    func timeOut() {
        guard let context, inFlight else { return }
        fail(context: context, kind: "timeout")
    }

    func close() {
        context?.close(promise: nil)
    }

    // MARK: - Pieces

    /// Records a complete response and sends the next request; false when the connection is closing.
    private func complete(context: ChannelHandlerContext, _ response: ResponseSummary) -> Bool {
        guard inFlight else {
            fail(context: context, kind: "parse")  // a response nobody asked for
            return false
        }
        inFlight = false
        let now = NIODeadline.now().uptimeNanoseconds
        worker.record(response, latencyNanoseconds: now &- requestStartedAt)
        if !response.keepAlive || worker.newConnectionPerRequest {
            context.close(promise: nil)
            return false
        }
        return send(context: context, startedAt: now)
    }

    @discardableResult
    private func send(context: ChannelHandlerContext, startedAt: UInt64) -> Bool {
        guard worker.isRunning else {
            context.close(promise: nil)
            return false
        }
        requestStartedAt = startedAt
        inFlight = true
        context.writeAndFlush(
            Self.wrapOutboundOut(worker.nextRequest(allocator: context.channel.allocator)),
            promise: nil
        )
        return true
    }

    /// Counts a failure once (only while a request is outstanding: a close between requests costs nothing).
    private func fail(context: ChannelHandlerContext, kind: String) {
        if inFlight {
            inFlight = false
            failed = true
            worker.recordFailure(kind: kind)
        }
        context.close(promise: nil)
    }

    static func kind(of error: any Error) -> String {
        switch error {
        case let error as IOError:
            switch error.errnoCode {
            case ECONNRESET: return "reset"
            case EPIPE: return "pipe"
            case ECONNREFUSED: return "refused"
            default: return "io"
            }
        case is NIOSSLError, is NIOSSLExtraError, is BoringSSLError:
            return "tls"
        case is ChannelError:
            return "channel"
        default:
            return "io"
        }
    }
}

@available(*, unavailable)
extension LoadConnectionHandler: Sendable {}
