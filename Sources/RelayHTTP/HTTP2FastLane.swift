import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import RelayCore

/// The HTTP/2 fast lane: between NIO's HTTP/2 connection handler and its stream multiplexer, it answers the hottest
/// reads (`RelayServices.fastRead`: health, a held request's status or result) straight from the HEADERS frame that
/// asks for them, with one HEADERS and one DATA frame on the connection. No stream channel is made for them, and no
/// handler added: a stream channel with its codec, access log and relay handler cost about two thirds of a cached
/// read's time over HTTP/2. Everything else (bodies, streams, media, uploads, any other route) goes on to the
/// multiplexer and the responders as before. Flow control, HPACK and stream state stay NIO's: it holds back DATA the
/// peer's window cannot take.
final class HTTP2FastLane: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let services: RelayServices
    private let scheme: String
    private var accessLog: LaneAccessLog
    /// Streams this lane answered that NIO has not closed yet: their later frames (window updates, a reset) are
    /// dropped here, since no stream channel exists to take them.
    private var answered: Set<HTTP2StreamID> = []
    private var wroteSinceFlush = false
    /// The last answer on this connection that can no longer change (a finished request's status or result), sent
    /// again to the same request while the key table and the request table are unchanged, as the HTTP/1.1 lane does:
    /// no routing, lookup or header building, only the caller's rate budget charged.
    private var settled: SettledRead<(fields: HPACKHeaders, body: ByteBuffer)>?

    init(services: RelayServices, scheme: String) {
        self.services = services
        self.scheme = scheme
        self.accessLog = LaneAccessLog(
            sink: AccessLogSink(logger: services.accessLogger, metrics: services.httpMetrics, proto: "h2")
        )
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if !answered.isEmpty, answered.contains(frame.streamID) { return }
        guard case .headers(let headers) = frame.payload, headers.endStream, frame.streamID != .rootStream,
            answer(headers.headers, on: frame.streamID, context: context)
        else {
            context.fireChannelRead(data)
            return
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if wroteSinceFlush {
            wroteSinceFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent, answered.remove(closed.streamID) != nil { return }
        context.fireUserInboundEventTriggered(event)
    }

    /// Answers a bodiless request when it is a fast read; false leaves it to the multiplexer.
    private func answer(_ headers: HPACKHeaders, on stream: HTTP2StreamID, context: ChannelHandlerContext) -> Bool {
        guard let methodName = headers.first(name: ":method"), let method = Self.method(methodName),
            method == .GET || method == .HEAD, let path = headers.first(name: ":path"),
            path.utf8.first == UInt8(ascii: "/")
        else { return false }
        let host = headers.first(name: ":authority") ?? headers.first(name: "host")
        let authorization = headers.first(name: "authorization")
        let started = NIODeadline.now()
        let facts = RequestFacts(
            method: method,
            uri: path,
            host: host,
            authorization: authorization,
            scheme: scheme,
            channel: context.channel
        )
        if let settled, settled.answers(method: method, uri: path, host: host, authorization: authorization) {
            if replay(settled, facts: facts, on: stream, started: started, context: context) { return true }
            self.settled = nil
        }
        let route = services.router.route(method: method, host: host, uri: path)
        guard let read = services.fastRead(facts, route: route) else { return false }
        services.jobs.statistics.recordHTTPRequest()
        let response = read.response
        let fields = Self.fields(response)
        let body = method == .HEAD ? ByteBuffer() : response.body
        send(fields, body: body, on: stream, context: context)
        accessLog.record(
            method: method,
            uri: path,
            status: response.status.code,
            bytes: response.body.readableBytes,
            started: started,
            route: route.label,
            keyID: read.keyID,
            requestID: response.field("x-fal-request-id"),
            cache: response.field("x-relay-cache")
        )
        if let answer = SettledRead(read, facts: facts, route: route, payload: (fields: fields, body: body)) {
            settled = answer
        }
        return true
    }

    /// The settled answer again (or the 429 when the caller's budget is spent); false when something it depends on
    /// changed, and the request is answered anew.
    private func replay(
        _ answer: SettledRead<(fields: HPACKHeaders, body: ByteBuffer)>,
        facts: RequestFacts,
        on stream: HTTP2StreamID,
        started: NIODeadline,
        context: ChannelHandlerContext
    ) -> Bool {
        guard answer.stands(in: services) else { return false }
        services.jobs.statistics.recordHTTPRequest()
        let charged = services.charge(facts, route: answer.route, principal: answer.principal)
        if let refusal = charged.refusal(isHead: facts.isHead) {
            send(Self.fields(refusal), body: facts.isHead ? ByteBuffer() : refusal.body, on: stream, context: context)
            accessLog.record(
                method: answer.method,
                uri: answer.uri,
                status: refusal.status.code,
                bytes: 0,
                started: started,
                route: answer.route.label,
                keyID: answer.principal.keyID,
                requestID: refusal.field("x-fal-request-id"),
                cache: nil
            )
            return true
        }
        send(answer.payload.fields, body: answer.payload.body, on: stream, context: context)
        accessLog.record(
            method: answer.method,
            uri: answer.uri,
            status: answer.status,
            bytes: answer.bodyLength,
            started: started,
            route: answer.route.label,
            keyID: answer.principal.keyID,
            requestID: answer.requestID,
            cache: answer.cache
        )
        return true
    }

    private func send(
        _ fields: HPACKHeaders,
        body: ByteBuffer,
        on stream: HTTP2StreamID,
        context: ChannelHandlerContext
    ) {
        let bodiless = body.readableBytes == 0
        answered.insert(stream)
        context.write(
            wrapOutboundOut(
                HTTP2Frame(streamID: stream, payload: .headers(.init(headers: fields, endStream: bodiless)))
            ),
            promise: nil
        )
        if !bodiless {
            let data = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(body), endStream: true))
            context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: data)), promise: nil)
        }
        wroteSinceFlush = true
    }

    /// A response's fields as HTTP/2 sends them: `:status` first, the rest as prepared (lower case already), without
    /// the connection-specific ones HTTP/2 forbids, and with `content-length` (also for HEAD).
    private static func fields(_ response: PreparedResponse) -> HPACKHeaders {
        var fields = HPACKHeaders()
        fields.reserveCapacity(response.headers.count + 2)
        fields.add(name: ":status", value: String(response.status.code))
        var hasLength = false
        for (name, value) in response.headers where !connectionSpecific(name) {
            hasLength = hasLength || name == "content-length"
            fields.add(name: name, value: value)
        }
        if !hasLength { fields.add(name: "content-length", value: String(response.body.readableBytes)) }
        return fields
    }

    private static func method(_ name: String) -> HTTPMethod? {
        switch name {
        case "GET": .GET
        case "HEAD": .HEAD
        default: nil
        }
    }

    /// Fields HTTP/2 forbids (RFC 9113 §8.2.2); prepared names are lower case.
    private static func connectionSpecific(_ name: String) -> Bool {
        switch name {
        case "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection": true
        default: false
        }
    }
}
