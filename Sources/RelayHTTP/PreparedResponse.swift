import NIOCore
import NIOHTTP1
import RelayCore

/// A complete response as values: status, header fields (without `content-length` and `connection`, which framing
/// adds) and body. `RelayHTTPHandler` writes it as HTTP parts; the fast lane encodes it straight to bytes.
struct PreparedResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)]
    var body: ByteBuffer
    /// `HEAD`: `content-length` tells the body's length, and the body is not sent.
    var isHead = false

    /// Any response: `headers` as they are (with `x-fal-request-id`, which every answer carries), and `body`.
    init(status: HTTPResponseStatus, headers: [(String, String)], body: ByteBuffer = ByteBuffer(), isHead: Bool) {
        self.status = status
        self.headers = headers
        if !headers.contains(where: { $0.0 == "x-fal-request-id" }) {
            self.headers.append(("x-fal-request-id", RequestID.make()))
        }
        self.body = body
        self.isHead = isHead
    }

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
        extra.append(contentsOf: error.responseHeaders)
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
