import NIOCore
import NIOHTTP1
import RelayCore
import RelayJobs

extension RelayHTTPHandler {
    // MARK: - Writing responses

    func reject(context: ChannelHandlerContext, head: HTTPRequestHead, error: FalError) {
        state = .rejecting
        respondError(context: context, keepAlive: false, error: error, requestID: RequestID.make())
    }

    func respond(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        status: HTTPResponseStatus,
        json: JSONValue,
        requestID: String? = nil,
        extraHeaders: [(String, String)] = []
    ) {
        respond(
            context: context,
            keepAlive: head.isKeepAlive,
            status: status,
            json: json,
            requestID: requestID,
            extraHeaders: extraHeaders,
            isHead: head.method == .HEAD
        )
    }

    func respond(
        context: ChannelHandlerContext,
        keepAlive: Bool,
        status: HTTPResponseStatus,
        json: JSONValue,
        requestID: String?,
        extraHeaders: [(String, String)] = [],
        isHead: Bool = false
    ) {
        let response = PreparedResponse(
            status: status,
            json: json,
            requestID: requestID,
            extraHeaders: extraHeaders,
            isHead: isHead
        )
        write(context: context, keepAlive: keepAlive, response)
    }

    /// Writes a prepared response as HTTP parts (`content-length` from its body, for `HEAD` too).
    func write(context: ChannelHandlerContext, keepAlive: Bool, _ response: PreparedResponse) {
        var headers = HTTPHeaders(response.headers)
        if response.isHead {
            headers.add(name: "content-length", value: String(response.body.readableBytes))
        }
        write(
            context: context,
            keepAlive: keepAlive,
            status: response.status,
            headers: headers,
            body: response.isHead ? nil : response.body
        )
    }

    func respondError(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        error: FalError,
        requestID: String? = nil,
        extraHeaders: [(String, String)] = []
    ) {
        respondError(
            context: context,
            keepAlive: head.isKeepAlive,
            error: error,
            requestID: requestID,
            extraHeaders: extraHeaders,
            isHead: head.method == .HEAD
        )
    }

    func respondError(
        context: ChannelHandlerContext,
        keepAlive: Bool,
        error: FalError,
        requestID: String?,
        extraHeaders: [(String, String)] = [],
        isHead: Bool = false
    ) {
        write(
            context: context,
            keepAlive: keepAlive,
            PreparedResponse(error: error, requestID: requestID, extraHeaders: extraHeaders, isHead: isHead)
        )
    }

    func write(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        status: HTTPResponseStatus,
        headers: HTTPHeaders,
        body: ByteBuffer?
    ) {
        var headers = headers
        if headers.first(name: "x-fal-request-id") == nil {
            headers.add(name: "x-fal-request-id", value: RequestID.make())
        }
        write(context: context, keepAlive: head.isKeepAlive, status: status, headers: headers, body: body)
    }

    func write(
        context: ChannelHandlerContext,
        keepAlive: Bool,
        status: HTTPResponseStatus,
        headers: HTTPHeaders,
        body: ByteBuffer?
    ) {
        var headers = headers
        if headers.first(name: "content-length") == nil {
            headers.add(name: "content-length", value: String(body?.readableBytes ?? 0))
        }
        if !keepAlive {
            headers.replaceOrAdd(name: "connection", value: "close")
        }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
            promise: nil
        )
        if let body, body.readableBytes > 0 {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let channel = context.channel
        let ended = context.writeAndFlush(Self.wrapOutboundOut(.end(nil)))
        if case .rejecting = state, servesHTTP1 {
            // HTTP/1.1, answered before the body was read: the client may still be sending it.
            return LingeringCloseHandler.close(channel, after: ended)
        }
        ended.whenComplete { _ in
            if !keepAlive {
                channel.close(promise: nil)
            }
        }
    }
}
