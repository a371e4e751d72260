import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import RelayCore
import Synchronization
import Testing

/// Serves one connection of the fake origin; loop-confined.
final class FakeFalOriginHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let origin: FakeFalOrigin
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()

    init(origin: FakeFalOrigin) {
        self.origin = origin
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            let reply = origin.reply(
                method: head.method,
                uri: head.uri,
                headers: head.headers,
                body: String(buffer: body)
            )
            respond(reply, context: context)
        }
    }

    private func respond(_ reply: FakeFalOrigin.Reply, context: ChannelHandlerContext) {
        switch reply {
        case .json(let status, let value, let extra):
            var headers = HTTPHeaders(extra)
            headers.add(name: "x-fal-request-id", value: "fake")
            write(
                status: status,
                contentType: "application/json",
                bytes: value.serialized(),
                headers: headers,
                context: context
            )
        case .bytes(let status, let contentType, let bytes):
            write(status: status, contentType: contentType, bytes: bytes, headers: HTTPHeaders(), context: context)
        case .stream(let events, let ending):
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
            context.write(
                Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
                promise: nil
            )
            writeText(": ping\n\n", context: context)
            send(events[...], ending: ending, context: context)
        case .silence:
            break
        }
    }

    /// One event every 10 ms, then the ending.
    private func send(
        _ events: ArraySlice<JSONValue>,
        ending: FakeFalOrigin.StreamEnding,
        context: ChannelHandlerContext
    ) {
        guard let event = events.first else {
            switch ending {
            case .end:
                context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
            case .drop:
                context.close(promise: nil)
            case .hold:
                break
            }
            return
        }
        writeText("event: status\ndata: " + event.serializedString + "\n\n", context: context)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .milliseconds(10)) {
            let (handler, context) = bound.value
            handler.send(events.dropFirst(), ending: ending, context: context)
        }
    }

    private func writeText(_ text: String, context: ChannelHandlerContext) {
        context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
    }

    private func write(
        status: Int,
        contentType: String,
        bytes: [UInt8],
        headers: HTTPHeaders,
        context: ChannelHandlerContext
    ) {
        var headers = headers
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: "\(bytes.count)")
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}

@available(*, unavailable)
extension FakeFalOriginHandler: Sendable {}
