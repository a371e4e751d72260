import NIOCore
import NIOHTTP1
import RelayCore
import RelayJobs

/// What the answers below need to know of a request: the same whether NIO's parser read it (`RelayHTTPHandler`) or
/// the fast lane did (`FastLane`), so both paths run one piece of logic per route.
struct RequestFacts {
    var method: HTTPMethod
    var uri: String
    var host: String?
    var authorization: String?
    /// `http` or `https`: the scheme of URLs built for the client.
    var scheme: String
    /// The connection, whose peer address anonymous rate limits count (formatted only when a limit needs it).
    var channel: (any Channel)?

    var clientIP: String { channel?.remoteAddress?.ipAddress ?? "unknown" }
    var isHead: Bool { method == .HEAD }
}

/// A complete response as values: status, header fields (without `content-length` and `connection`, which framing
/// adds) and body. `RelayHTTPHandler` writes it as HTTP parts; the fast lane encodes it straight to bytes.
struct PreparedResponse {
    var status: HTTPResponseStatus
    var headers: [(String, String)]
    var body: ByteBuffer
    /// `HEAD`: `content-length` tells the body's length, and the body is not sent.
    var isHead = false

    /// `application/json` with the request id (a fresh one when nil), then `extraHeaders`.
    init(
        status: HTTPResponseStatus,
        json: ByteBuffer,
        requestID: String?,
        extraHeaders: [(String, String)] = [],
        isHead: Bool
    ) {
        self.status = status
        headers = [("content-type", "application/json"), ("x-fal-request-id", requestID ?? RequestID.make())]
        headers.append(contentsOf: extraHeaders)
        body = json
        self.isHead = isHead
    }

    init(
        status: HTTPResponseStatus,
        json: JSONValue,
        requestID: String?,
        extraHeaders: [(String, String)] = [],
        isHead: Bool
    ) {
        self.init(
            status: status,
            json: ByteBuffer(bytes: json.serialized()),
            requestID: requestID,
            extraHeaders: extraHeaders,
            isHead: isHead
        )
    }

    /// A fal-shaped error: its JSON body, `x-fal-error-type`, then `extraHeaders`.
    init(error: FalError, requestID: String?, extraHeaders: [(String, String)] = [], isHead: Bool) {
        var extra: [(String, String)] = []
        if let type = error.errorType {
            extra.append(("x-fal-error-type", type))
        }
        extra.append(contentsOf: extraHeaders)
        self.init(
            status: HTTPResponseStatus(statusCode: error.status),
            json: error.body,
            requestID: requestID,
            extraHeaders: extra,
            isHead: isHead
        )
    }

    /// The value of a header field (first occurrence), for the access line.
    func field(_ name: String) -> String? {
        headers.first { $0.0 == name }?.1
    }

    /// Status line, fields, `content-length`, blank line and (unless `HEAD`) the body: a keep-alive HTTP/1.1
    /// response, byte for byte what NIO's encoder makes of the same head and body.
    func encode(into buffer: inout ByteBuffer) {
        Self.encodeHead(status: status, headers: headers, contentLength: body.readableBytes, into: &buffer)
        if !isHead {
            buffer.writeImmutableBuffer(body)
        }
    }

    /// A response head with `content-length` last.
    static func encodeHead(
        status: HTTPResponseStatus,
        headers: [(String, String)],
        contentLength: Int,
        into buffer: inout ByteBuffer
    ) {
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        for (name, value) in headers {
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("content-length: ")
        buffer.writeString(String(contentLength))
        buffer.writeStaticString("\r\n\r\n")
    }
}

extension RelayServices {
    /// `GET /healthz`.
    func answerHealth(_ facts: RequestFacts) -> PreparedResponse {
        PreparedResponse(status: .ok, json: Self.healthBody, requestID: nil, isHead: facts.method == .HEAD)
    }

    private static let healthBody = ByteBuffer(string: #"{"status":"ok"}"#)

    /// A status poll (`…/requests/{id}/status`) or a result fetch (`…/requests/{id}`), answered from the request
    /// table: the hottest reads there are.
    /// `principal` is the caller `admit` let through.
    func answerRead(_ facts: RequestFacts, route: Route, principal: Principal) -> ReadAnswer {
        let isHead = facts.method == .HEAD
        let app: EndpointID
        let id: String
        switch route {
        case .status(let a, let i), .result(let a, let i): (app, id) = (a, i)
        default:
            return ReadAnswer(
                response: PreparedResponse(error: .internalError("not a read"), requestID: nil, isHead: isHead),
                principal: principal
            )
        }
        guard let request = jobs.request(id, keyID: principal.keyID), request.endpoint.app == app.app else {
            return ReadAnswer(
                response: PreparedResponse(error: .notFound("Request \(id) not found"), requestID: id, isHead: isHead),
                principal: principal
            )
        }
        let phase = request.phase
        let cacheHeaders = RelayHTTPHandler.cacheHeaders(request)
        // A finished request answers the same from now on: only a sweep past retention can change that.
        let settled = phase.isCompleted
        if case .status = route {
            let query = QueryParameters(uri: facts.uri)
            let logs = query.flag("logs") ? request.job.status.logs[...] : nil
            let json = FalWire.status(
                id: id,
                phase: phase,
                logs: logs,
                base: FalWire.QueueBase(scheme: facts.scheme, host: facts.host, app: app.app)
            )
            let status = HTTPResponseStatus(statusCode: FalWire.httpStatus(for: phase))
            return ReadAnswer(
                response: PreparedResponse(
                    status: status,
                    json: json,
                    requestID: id,
                    extraHeaders: cacheHeaders,
                    isHead: isHead
                ),
                principal: principal,
                settled: settled
            )
        }
        if case .completed(.success) = phase, let bytes = request.job.resultBytes {
            return ReadAnswer(
                response: PreparedResponse(
                    status: .ok,
                    json: bytes,
                    requestID: id,
                    extraHeaders: cacheHeaders,
                    isHead: isHead
                ),
                principal: principal,
                settled: settled
            )
        }
        switch FalWire.result(for: phase, id: id) {
        case .success(let result):
            return ReadAnswer(
                response: PreparedResponse(
                    status: .ok,
                    json: result,
                    requestID: id,
                    extraHeaders: cacheHeaders,
                    isHead: isHead
                ),
                principal: principal,
                settled: settled
            )
        case .failure(let error):
            return ReadAnswer(
                response: PreparedResponse(error: error, requestID: id, isHead: isHead),
                principal: principal,
                settled: settled
            )
        }
    }
}

/// What `answerRead` decided.
struct ReadAnswer {
    var response: PreparedResponse
    /// Who asked.
    var principal: Principal
    /// The request has finished, so the same request (method, target, Host, Authorization) gets the same response
    /// while the request table has removed nothing and the key table is unchanged. Admission (rate limits) still
    /// applies to every request.
    var settled = false

    var keyID: String? { principal.keyID }
}

extension FalWire.QueueBase {
    /// `scheme://host` as the client reached the relay (a missing or malformed Host falls back to 127.0.0.1).
    init(scheme: String, host: String?, app: String) {
        let host = host.flatMap { HostPattern.split($0[...]) != nil ? $0 : nil } ?? "127.0.0.1"
        self.init(origin: "\(scheme)://\(host)", app: app)
    }
}
