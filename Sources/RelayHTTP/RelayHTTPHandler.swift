import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import RelayCore
import RelayJobs
import RelayStore

/// Serves one HTTP/1.1 connection: the fal queue and run APIs, SSE streams, media files and health checks.
///
/// Loop-confined (STYLE.md rule 2). Requests arrive one at a time (HTTPServerPipelineHandler holds pipelined
/// ones back until the previous response ends). Work that cannot finish on the spot — a media read, a synchronous
/// run, an SSE stream — is an `Exchange`; its callbacks come back through `NIOLoopBound` and are ignored once the
/// exchange is over, so a late event can never write into the next request's response.
final class RelayHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    enum State {
        case idle
        case receiving(HTTPRequestHead, ByteBuffer)
        /// An upload's body, streamed to disk (UploadExchange.swift).
        case uploading(UploadExchange)
        /// The body broke a limit; the error is answered and the rest of the body is dropped, then we close.
        case rejecting
        case exchanging(Exchange)
    }

    /// A response that completes later.
    struct Exchange {
        enum Kind {
            /// An answer known later (a media file being read, a submission being made durable, a purge).
            case waiting
            case run(RelayRequest)
            case statusStream(StatusStream)
            case partialStream(RelayRequest)
            /// A peer node follows a job of this node (`JobFollow.Kind.peerEvents`).
            case peerEvents(RelayRequest, detachOnLeave: Bool)
            /// `/relay/stats/stream`: a statistics snapshot every second (the dashboard).
            case statsStream
        }

        let number: Int
        let kind: Kind
        let keepAlive: Bool
        var subscriptionToken = 0
        var keepAliveTask: RepeatedTask?
        /// Which events of the followed job go out, wait in its log, or are over (streams).
        var stream = JobStreamStateMachine(after: 0)
    }

    let services: RelayServices
    let scheme: String
    var state = State.idle
    var exchangeCount = 0
    /// A request is being dispatched on this stack (see `channelRead`).
    private var dispatching = false

    /// Set when the connection was accepted beyond a connection cap: every request is answered with it, then close.
    let refusal: FalError?

    /// Told the route and the caller's key id, for the access line.
    let accessLog: AccessLogHandler?
    /// The route of the request being received, when `beginUpload` already computed it (dispatch reuses it).
    var routedRoute: Route?

    /// The connection is HTTP/1.1 (not an HTTP/2 stream): an SSE status stream takes it over (`StatusStreamHandler`),
    /// and an answer given before a body was read lingers before closing (`LingeringCloseHandler`). HTTP/2 streams
    /// share their connection, so they stream here and close only themselves.
    let servesHTTP1: Bool
    /// Told when a status stream takes the connection over (it counts as an SSE connection from then on).
    let connectionKind: ConnectionKindTracker?

    init(
        services: RelayServices,
        scheme: String,
        refusal: FalError? = nil,
        accessLog: AccessLogHandler? = nil,
        servesHTTP1: Bool = false,
        connectionKind: ConnectionKindTracker? = nil
    ) {
        self.services = services
        self.scheme = scheme
        self.refusal = refusal
        self.accessLog = accessLog
        self.servesHTTP1 = servesHTTP1
        self.connectionKind = connectionKind
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), state) {
        case (.head(let head), .idle):
            routedRoute = nil  // never a previous request's
            if beginUpload(context: context, head: head) { return }
            if let length = head.headers.first(name: "content-length").flatMap(Int.init),
                length > services.limits.maxJSONBodyBytes
            {
                reject(context: context, head: head, error: .payloadTooLarge(limit: services.limits.maxJSONBodyBytes))
                return
            }
            if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(
                    Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))),
                    promise: nil
                )
            }
            state = .receiving(head, context.channel.allocator.buffer(capacity: 0))
        case (.body(var chunk), .receiving(let head, var body)):
            guard body.readableBytes + chunk.readableBytes <= services.limits.maxJSONBodyBytes else {
                reject(context: context, head: head, error: .payloadTooLarge(limit: services.limits.maxJSONBodyBytes))
                return
            }
            state = .idle  // drop the reference so the append does not copy
            body.writeBuffer(&chunk)
            state = .receiving(head, body)
        case (.end, .receiving(let head, let body)):
            state = .idle
            guard !dispatching else {
                // A pipelined request that NIO hands on while the previous answer is being written, from inside that
                // write: answered from a fresh stack. Answers that complete at once (a known media record, an error)
                // would otherwise nest one request inside the other, and a few hundred pipelined requests overflow
                // the stack (a crash any client could cause).
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.dispatch(context: context, head: head, body: body)
                }
                return
            }
            dispatching = true
            dispatch(context: context, head: head, body: body)
            dispatching = false
        case (.body(var chunk), .uploading):
            uploadReceived(context: context, chunk: &chunk)
        case (.end, .uploading):
            uploadEnded(context: context)
        case (.end, .rejecting):
            state = .idle
        case (.body, .rejecting):
            break
        default:
            // A request part out of order: HTTPServerPipelineHandler should make this impossible.
            context.close(promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .exchanging(var exchange) = state,
            let after = exchange.stream.writabilityChanged(writable: context.channel.isWritable)
        {
            state = .exchanging(exchange)
            let request: RelayRequest
            var everyEvent = false
            switch exchange.kind {
            case .statusStream(let stream): request = stream.request
            case .partialStream(let r): request = r
            case .peerEvents(let r, _): (request, everyEvent) = (r, true)
            default: return context.fireChannelWritabilityChanged()
            }
            for event in request.job.catchUp(after: after, everyEvent: everyEvent) {
                receive(event, context: context, number: exchange.number)
                guard case .exchanging(let current) = state, current.number == exchange.number,
                    !current.stream.isBehind
                else { break }
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Shutdown: an SSE status stream ends cleanly at once with a hint to reconnect (to another instance, with
        // Last-Event-ID), instead of being cut at the drain deadline. Runs and partial streams get the deadline.
        if event is RelayShutdownEvent, case .exchanging(let exchange) = state, case .statusStream = exchange.kind {
            writeSSE(
                context: context,
                text: ServerSentEvents.shutdownHint
            )
            endStream(exchange, context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        uploadAbandoned()
        if case .exchanging(let exchange) = state {
            finish(exchange, context: context, clientGone: true)
        }
        state = .idle
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A declined WebSocket upgrade is reported as an error, and then the request itself arrives here: answer
        // it (401, 404, 426) instead of dropping the connection.
        if let upgradeError = error as? NIOWebSocketUpgradeError, upgradeError == .unsupportedWebSocketTarget {
            return
        }
        services.logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: - Routing

    private func dispatch(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        services.jobs.statistics.recordHTTPRequest()
        if let refusal {
            respondError(
                context: context,
                keepAlive: false,
                error: refusal,
                requestID: nil,
                extraHeaders: [("retry-after", "1")]
            )
            return
        }
        let route =
            routedRoute
            ?? services.router.route(method: head.method, host: head.headers.first(name: "host"), uri: head.uri)
        routedRoute = nil
        accessLog?.annotate(route: route.label, keyID: nil)
        let keepAlive = head.isKeepAlive
        // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host field is a 400 (the URLs the relay builds for
        // the client come from it).
        if head.version == .http1_1, head.headers["host"].count != 1 {
            return respondError(
                context: context,
                head: head,
                error: .badRequest("An HTTP/1.1 request needs exactly one Host header field", type: "bad_request")
            )
        }
        let facts = facts(head, context: context)
        var request: RouteRequest
        switch services.admit(facts, route: route) {
        case .refused(let error, let headers):
            return respondError(context: context, head: head, error: error, extraHeaders: headers)
        case .admitted(let principal, let headers):
            request = RouteRequest(
                facts: facts,
                route: route,
                principal: principal,
                rateLimitHeaders: headers,
                eventLoop: context.eventLoop
            )
        }
        if let keyID = request.principal.keyID {
            accessLog?.annotate(keyID: keyID)
        }
        request.body = body
        carryOut(services.respond(request), facts: facts, context: context, keepAlive: keepAlive)
    }

    /// Does what a responder decided, on this connection (or this HTTP/2 stream).
    private func carryOut(_ answer: RouteAnswer, facts: RequestFacts, context: ChannelHandlerContext, keepAlive: Bool) {
        switch answer {
        case .response(let response):
            write(context: context, keepAlive: keepAlive, response)
        case .pending(let future):
            let answer = future.hop(to: context.eventLoop).map(RouteAnswer.response)
            carryOut(.later(answer), facts: facts, context: context, keepAlive: keepAlive)
        case .afterRecorded(let request, let then):
            guard request.recorded.isDone else {
                let number = begin(.waiting, context: context, keepAlive: keepAlive)
                let bound = NIOLoopBound((self, context, then, facts), eventLoop: context.eventLoop)
                let eventLoop = context.eventLoop
                request.recorded.whenDone {
                    eventLoop.execute {
                        let (handler, context, then, facts) = bound.value
                        guard case .exchanging(let exchange) = handler.state, exchange.number == number else {
                            return handler.abandon(then, on: eventLoop)
                        }
                        handler.state = .idle
                        handler.carryOut(then, facts: facts, context: context, keepAlive: keepAlive)
                    }
                }
                return
            }
            carryOut(then, facts: facts, context: context, keepAlive: keepAlive)
        case .follow(let follow):
            switch follow.kind {
            case .statusStream(let stream):
                if servesHTTP1 {
                    return takeOver(stream, context: context)
                }
                begin(.statusStream(stream), after: stream.after, context: context, keepAlive: keepAlive)
            case .partialStream:
                begin(.partialStream(follow.request), context: context, keepAlive: keepAlive)
            case .run:
                begin(.run(follow.request), context: context, keepAlive: keepAlive)
            case .peerEvents(let after, let detachOnLeave):
                begin(
                    .peerEvents(follow.request, detachOnLeave: detachOnLeave),
                    after: after,
                    context: context,
                    keepAlive: keepAlive
                )
            }
        case .file(let file):
            sendFile(file, facts: facts, context: context, keepAlive: keepAlive)
        case .statisticsStream:
            begin(.statsStream, context: context, keepAlive: keepAlive)
        case .later(let future):
            // Made on this connection's loop (`RouteRequest.eventLoop`): it completes here, no hop needed.
            assert(future.eventLoop === context.eventLoop, "a later answer completes on its connection's loop")
            let number = begin(.waiting, context: context, keepAlive: keepAlive)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            future.whenComplete { result in
                let (handler, context) = bound.value
                guard case .exchanging(let exchange) = handler.state, exchange.number == number else {
                    if case .success(let answer) = result { handler.abandon(answer, on: context.eventLoop) }
                    return
                }
                handler.state = .idle
                switch result {
                case .success(let answer):
                    handler.carryOut(answer, facts: facts, context: context, keepAlive: keepAlive)
                case .failure(let error):
                    handler.services.logger.error("an answer failed", metadata: ["error": "\(error)"])
                    handler.respondError(
                        context: context,
                        keepAlive: keepAlive,
                        error: .internalError(),
                        requestID: nil,
                        isHead: facts.isHead
                    )
                }
            }
        }
    }

    /// The request as a responder sees it.
    func facts(_ head: HTTPRequestHead, context: ChannelHandlerContext) -> RequestFacts {
        RequestFacts(
            method: head.method,
            uri: head.uri,
            host: head.headers.first(name: "host"),
            authorization: head.headers.first(name: "authorization"),
            scheme: scheme,
            channel: context.channel,
            headers: head.headers
        )
    }

}

@available(*, unavailable)
extension RelayHTTPHandler: Sendable {}
