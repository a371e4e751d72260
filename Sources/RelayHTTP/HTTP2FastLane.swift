import NIOCore
import NIOHTTP1
import RelayCore

/// The HTTP/2 fast lane: `HTTP2Connection` asks it first for every complete bodiless GET or HEAD, and it answers the
/// hottest reads (`RelayServices.fastRead`: health, a held request's status or result) with a header block and a body
/// that the connection writes as one HEADERS and one DATA frame. No stream channel is made for them, and no handler
/// runs: a stream channel with its codec, access log and relay handler cost about two thirds of a cached read's time
/// over HTTP/2. Everything else (bodies, streams, media, uploads, any other route) goes on to NIO's multiplexer and
/// the responders.
final class HTTP2FastLane {
    typealias Answer = (block: ByteBuffer, body: ByteBuffer)

    private let services: RelayServices
    private let scheme: String
    private var accessLog: LaneAccessLog
    /// The last answer on this connection that can no longer change (a finished request's status or result), sent
    /// again to the same request while the key table and the request table are unchanged, as the HTTP/1.1 lane does:
    /// no routing, lookup or header encoding, only the caller's rate budget charged.
    private var settled: SettledRead<Answer>?

    init(services: RelayServices, scheme: String) {
        self.services = services
        self.scheme = scheme
        self.accessLog = LaneAccessLog(
            sink: AccessLogSink(logger: services.accessLogger, metrics: services.httpMetrics, proto: "h2")
        )
    }

    /// The answer to a bodiless request when it is a fast read; nil leaves it to the multiplexer.
    func answer(_ request: HTTP2RequestCheck.Request, channel: any Channel) -> Answer? {
        guard let method = Self.method(request.method), let path = request.path,
            path.utf8.first == UInt8(ascii: "/")
        else { return nil }
        let host = request.authority ?? request.host
        let authorization = request.authorization
        let started = NIODeadline.now()
        let facts = RequestFacts(
            method: method,
            uri: path,
            host: host,
            authorization: authorization,
            scheme: scheme,
            channel: channel
        )
        if let settled, settled.answers(method: method, uri: path, host: host, authorization: authorization) {
            if let answer = replay(settled, facts: facts, started: started) { return answer }
            self.settled = nil
        }
        let route = services.router.route(method: method, host: host, uri: path)
        guard let read = services.fastRead(facts, route: route) else { return nil }
        services.jobs.statistics.recordHTTPRequest()
        let response = read.response
        let answer = (block: Self.block(response), body: method == .HEAD ? ByteBuffer() : response.body)
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
        if let settledAnswer = SettledRead(read, facts: facts, route: route, payload: answer) {
            settled = settledAnswer
        }
        return answer
    }

    /// The settled answer again (or the 429 when the caller's budget is spent); nil when something it depends on
    /// changed, and the request is answered anew.
    private func replay(_ answer: SettledRead<Answer>, facts: RequestFacts, started: NIODeadline) -> Answer? {
        guard answer.stands(in: services) else { return nil }
        services.jobs.statistics.recordHTTPRequest()
        let charged = services.charge(facts, route: answer.route, principal: answer.principal)
        if let refusal = charged.refusal(isHead: facts.isHead) {
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
            return (block: Self.block(refusal), body: facts.isHead ? ByteBuffer() : refusal.body)
        }
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
        return answer.payload
    }

    /// A response's header block as HTTP/2 sends it: `:status` first, the rest as prepared (lower case already),
    /// without the connection-specific ones HTTP/2 forbids, and with `content-length` (also for HEAD).
    static func block(_ response: PreparedResponse) -> ByteBuffer {
        var block = ByteBuffer()
        block.reserveCapacity(64 + response.headers.count * 32)
        HPACKResponseEncoder.writeStatus(response.status.code, into: &block)
        var hasLength = false
        for (name, value) in response.headers where !connectionSpecific(name) {
            hasLength = hasLength || name == "content-length"
            HPACKResponseEncoder.writeField(name: name, value: value, into: &block)
        }
        if !hasLength {
            HPACKResponseEncoder.writeField(
                name: "content-length",
                value: String(response.body.readableBytes),
                into: &block
            )
        }
        return block
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
