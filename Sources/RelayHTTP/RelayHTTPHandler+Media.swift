import NIOCore
import NIOHTTP1
import RelayStore

extension RelayHTTPHandler {
    /// A media file through NIO's pipeline: the record from the pool (or the loop's memory) → `mediaAnswer` → the
    /// body as sendfile (plain HTTP), a buffer, or 256 KiB chunks read only as fast as the client takes them (TLS).
    func sendFile(_ file: MediaFileRequest, facts: RequestFacts, context: ChannelHandlerContext, keepAlive: Bool) {
        let number = begin(.waiting, context: context, keepAlive: keepAlive)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        // A peer's copy request is answered from this node's store only: copies never chain through the fleet.
        let fromPeer = facts.headers.contains(name: "x-relay-cluster-token")
        services.mediaRecord(file, fromPeer: fromPeer, eventLoop: context.eventLoop).whenComplete {
            result in
            let (handler, context) = bound.value
            guard case .exchanging(let exchange) = handler.state, exchange.number == number else { return }
            let record: BlobRecord?
            switch result {
            case .success(let found):
                record = found
            case .failure(let error):
                handler.state = .idle
                handler.services.logger.error("media stat failed", metadata: ["error": "\(error)"])
                return handler.respondError(
                    context: context,
                    keepAlive: keepAlive,
                    error: .internalError("Could not read the file"),
                    requestID: nil,
                    isHead: facts.isHead
                )
            }
            handler.services.countMediaServed(record)
            switch handler.services.mediaAnswer(record: record, facts: facts) {
            case .complete(let response):
                handler.state = .idle
                handler.write(context: context, keepAlive: keepAlive, response)
            case .send(let status, let headers, let contentLength, let record, let range):
                if let refusal = handler.services.chargeMediaBytes(range, facts: facts) {
                    handler.state = .idle
                    handler.write(context: context, keepAlive: keepAlive, refusal)
                    return
                }
                handler.sendBody(
                    of: record,
                    range: range,
                    head: (status, headers, contentLength),
                    number: number,
                    context: context,
                    keepAlive: keepAlive
                )
            }
        }
    }

    private func sendBody(
        of record: BlobRecord,
        range: Range<Int>?,
        head: (status: HTTPResponseStatus, headers: [(String, String)], contentLength: Int),
        number: Int,
        context: ChannelHandlerContext,
        keepAlive: Bool
    ) {
        let headers = HTTPHeaders(head.headers + [("content-length", String(head.contentLength))])
        guard let range else {
            // HEAD (keeps Content-Length and Content-Range), 304, or an empty blob.
            state = .idle
            return write(context: context, keepAlive: keepAlive, status: head.status, headers: headers, body: nil)
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        services.media.body(
            of: record,
            range: range,
            zeroCopy: scheme == "http",
            allocator: context.channel.allocator,
            eventLoop: context.eventLoop
        ).whenComplete { result in
            let (handler, context) = bound.value
            guard case .exchanging(let exchange) = handler.state, exchange.number == number else {
                if case .success(let body?) = result { body.discard() }  // the client left meanwhile: close the file
                return
            }
            handler.state = .idle  // HTTPServerPipelineHandler holds the next request back until .end
            switch result {
            case .success(let body?):
                handler.stream(body, status: head.status, headers: headers, context: context, keepAlive: keepAlive)
            case .success(nil):
                handler.respondError(
                    context: context,
                    keepAlive: keepAlive,
                    error: .notFound("No such file"),
                    requestID: nil
                )
            case .failure(let error):
                handler.services.logger.error("media read failed", metadata: ["error": "\(error)"])
                handler.respondError(
                    context: context,
                    keepAlive: keepAlive,
                    error: .internalError("Could not read the file"),
                    requestID: nil
                )
            }
        }
    }

    private func stream(
        _ body: MediaBody,
        status: HTTPResponseStatus,
        headers: HTTPHeaders,
        context: ChannelHandlerContext,
        keepAlive: Bool
    ) {
        var headers = headers
        if !keepAlive {
            headers.replaceOrAdd(name: "connection", value: "close")
        }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
            promise: nil
        )
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let channel = context.channel
        body.write(on: context.eventLoop) { part in
            bound.value.writeAndFlush(Self.wrapOutboundOut(.body(part)))
        }.whenComplete { result in
            switch result {
            case .success:
                bound.value.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
                    if !keepAlive { channel.close(promise: nil) }
                }
            case .failure:
                channel.close(promise: nil)  // the body was cut short: never end it as if complete
            }
        }
    }
}
