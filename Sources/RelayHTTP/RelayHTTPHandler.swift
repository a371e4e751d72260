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
    private var exchangeCount = 0
    /// A request is being dispatched on this stack (see `channelRead`).
    private var dispatching = false

    /// Set when the connection was accepted beyond a connection cap: every request is answered with it, then close.
    let refusal: FalError?

    /// Told the route and the caller's key id, for the access line.
    let accessLog: AccessLogHandler?
    /// The route of the request being received, when `beginUpload` already computed it (dispatch reuses it).
    var routedRoute: Route?

    /// HTTP/1.1: an SSE status stream takes the connection over (`StatusStreamHandler`) instead of streaming through
    /// the HTTP handlers. HTTP/2 streams share their connection, so they stream here.
    let statusStreamsTakeOver: Bool
    /// Told when a status stream takes the connection over (it counts as an SSE connection from then on).
    let connectionKind: ConnectionKindTracker?

    init(
        services: RelayServices,
        scheme: String,
        refusal: FalError? = nil,
        accessLog: AccessLogHandler? = nil,
        statusStreamsTakeOver: Bool = false,
        connectionKind: ConnectionKindTracker? = nil
    ) {
        self.services = services
        self.scheme = scheme
        self.refusal = refusal
        self.accessLog = accessLog
        self.statusStreamsTakeOver = statusStreamsTakeOver
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
            switch exchange.kind {
            case .statusStream(let stream): request = stream.request
            case .partialStream(let r): request = r
            default: return context.fireChannelWritabilityChanged()
            }
            for event in request.job.replay(after: after) {
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
            let number = begin(.waiting, context: context, keepAlive: keepAlive)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            future.hop(to: context.eventLoop).whenSuccess { response in
                let (handler, context) = bound.value
                guard case .exchanging(let exchange) = handler.state, exchange.number == number else { return }
                handler.state = .idle
                handler.write(context: context, keepAlive: keepAlive, response)
            }
        case .afterRecorded(let request, let then):
            guard request.recorded.isDone else {
                let number = begin(.waiting, context: context, keepAlive: keepAlive)
                let bound = NIOLoopBound((self, context, then, facts), eventLoop: context.eventLoop)
                let eventLoop = context.eventLoop
                request.recorded.whenDone {
                    eventLoop.execute {
                        let (handler, context, then, facts) = bound.value
                        guard case .exchanging(let exchange) = handler.state, exchange.number == number else { return }
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
                if statusStreamsTakeOver {
                    return takeOver(stream, context: context)
                }
                begin(.statusStream(stream), after: stream.after, context: context, keepAlive: keepAlive)
            case .partialStream:
                begin(.partialStream(follow.request), context: context, keepAlive: keepAlive)
            case .run:
                begin(.run(follow.request), context: context, keepAlive: keepAlive)
            }
        case .file(let file):
            sendFile(file, facts: facts, context: context, keepAlive: keepAlive)
        case .statisticsStream:
            begin(.statsStream, context: context, keepAlive: keepAlive)
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

    // MARK: - Exchanges that follow a job

    /// Hands the connection to a bare SSE writer: this handler and the rest of the HTTP/1.1 pipeline leave it, and the
    /// access line of this request is written by the stream when it ends.
    private func takeOver(_ stream: StatusStream, context: ChannelHandlerContext) {
        let request = stream.request
        let access = accessLog?.takeOver(status: 200, requestID: request.id, cache: request.cacheOutcome.rawValue)
        let writer = StatusStreamHandler(
            services: services,
            stream: stream,
            access: access,
            accessSink: accessLog?.sink,
            connectionKind: connectionKind
        )
        do {
            try StatusStreamHandler.takeOver(writer, pipeline: context.pipeline)
        } catch {
            services.logger.error("status stream could not take the connection over", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    @discardableResult
    func begin(
        _ kind: Exchange.Kind,
        after sequence: Int = 0,
        context: ChannelHandlerContext,
        keepAlive: Bool
    ) -> Int {
        exchangeCount += 1
        var exchange = Exchange(number: exchangeCount, kind: kind, keepAlive: keepAlive)
        let request: RelayRequest
        switch kind {
        case .waiting:
            state = .exchanging(exchange)
            return exchange.number
        case .statsStream:
            writeStatsStreamHead(context: context, exchange: &exchange)
            state = .exchanging(exchange)
            return exchange.number
        case .run(let r), .partialStream(let r):
            request = r
        case .statusStream(let stream):
            request = stream.request
        }
        exchange.stream = JobStreamStateMachine(after: sequence)
        if case .run = kind {
        } else {
            writeStreamHead(context: context, request: request, exchange: &exchange)
        }
        if case .statusStream = kind {
            services.jobs.statistics.adjustWatchers(.sse, by: 1)
        }
        state = .exchanging(exchange)
        let number = exchange.number
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let subscription = request.job.subscribe(after: sequence, on: context.eventLoop) { event in
            let (handler, context) = bound.value
            handler.receive(event, context: context, number: number)
        }
        if case .exchanging(var current) = state, current.number == number {
            current.subscriptionToken = subscription.token
            state = .exchanging(current)
        }
        for event in subscription.replay {
            receive(event, context: context, number: number)
        }
        return number
    }

    private func writeStreamHead(context: ChannelHandlerContext, request: RelayRequest, exchange: inout Exchange) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "cache-control", value: "no-cache")
        headers.add(name: "x-fal-request-id", value: request.id)
        for (name, value) in FalWire.cacheHeaders(request) {
            headers.add(name: name, value: value)
        }
        headers.add(name: "x-accel-buffering", value: "no")
        if !exchange.keepAlive {
            headers.add(name: "connection", value: "close")
        }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
            promise: nil
        )
        context.flush()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let number = exchange.number
        let interval = TimeAmount.seconds(services.limits.sseKeepAliveSeconds)
        exchange.keepAliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = bound.value
            handler.sendKeepAlive(context: context, number: number)
        }
    }

    /// The dashboard's feed: one snapshot at once, then one a second; `: ping` is not needed (data flows).
    private func writeStatsStreamHead(context: ChannelHandlerContext, exchange: inout Exchange) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "x-accel-buffering", value: "no")
        headers.add(name: "x-fal-request-id", value: RequestID.make())
        if !exchange.keepAlive {
            headers.add(name: "connection", value: "close")
        }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
            promise: nil
        )
        writeSSE(context: context, data: services.jobs.statistics.snapshot())
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let number = exchange.number
        exchange.keepAliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) {
            _ in
            let (handler, context) = bound.value
            guard case .exchanging(let current) = handler.state, current.number == number else { return }
            handler.writeSSE(context: context, data: handler.services.jobs.statistics.snapshot())
        }
    }

    private func sendKeepAlive(context: ChannelHandlerContext, number: Int) {
        guard case .exchanging(let exchange) = state, exchange.number == number,
            exchange.stream.shouldPing(writable: context.channel.isWritable)
        else { return }
        writeSSE(context: context, text: ServerSentEvents.keepAlive)
    }

    private func receive(_ event: JobEvent, context: ChannelHandlerContext, number: Int) {
        guard case .exchanging(var exchange) = state, exchange.number == number else { return }
        switch exchange.kind {
        case .statusStream, .partialStream:
            // A slow reader never makes us buffer: while the socket cannot take more, events stay in the job's log
            // and are replayed from there when it drains (`channelWritabilityChanged`).
            let delivery = exchange.stream.deliver(sequence: event.sequence, writable: context.channel.isWritable)
            state = .exchanging(exchange)
            guard delivery == .write else { return }
        default:
            break
        }
        switch exchange.kind {
        case .waiting, .statsStream:
            return
        case .run(let request):
            guard case .completed(let outcome) = event.kind else { return }
            finish(exchange, context: context, clientGone: false)
            let extra = FalWire.cacheHeaders(request)
            switch FalWire.result(for: .completed(outcome), id: request.id) {
            case .success(let result):
                respond(
                    context: context,
                    keepAlive: exchange.keepAlive,
                    status: .ok,
                    json: result,
                    requestID: request.id,
                    extraHeaders: extra
                )
            case .failure(let error):
                respondError(context: context, keepAlive: exchange.keepAlive, error: error, requestID: request.id)
            }
        case .partialStream:
            switch event.kind {
            case .partial(let value):
                writeSSE(context: context, data: value)
            case .completed(.success(let result, _)):
                writeSSE(context: context, data: result)
                endStream(exchange, context: context)
            case .completed(.failure(let error)):
                writeSSE(context: context, data: error.body)
                endStream(exchange, context: context)
            case .completed(.cancelled):
                writeSSE(context: context, data: FalError.cancelled().body)
                endStream(exchange, context: context)
            default:
                break
            }
        case .statusStream(let stream):
            // The same frames as the HTTP/1.1 writer's, shared with every watcher of the request on this loop.
            let (frame, ends) = stream.frame(for: event, services: services, allocator: context.channel.allocator)
            guard frame.readableBytes > 0 else { return }
            context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(frame))), promise: nil)
            if ends {
                endStream(exchange, context: context)
            }
        }
    }

    func writeSSE(context: ChannelHandlerContext, data: JSONValue, id: Int? = nil) {
        let frame = ServerSentEvents.frame(data: data, id: id, allocator: context.channel.allocator)
        context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(frame))), promise: nil)
    }

    func writeSSE(context: ChannelHandlerContext, text: String) {
        let buffer = context.channel.allocator.buffer(string: text)
        context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    private func endStream(_ exchange: Exchange, context: ChannelHandlerContext) {
        finish(exchange, context: context, clientGone: false)
        let keepAlive = exchange.keepAlive
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive {
                channel.close(promise: nil)
            }
        }
    }

    /// Ends an exchange's subscriptions and timers. A client that leaves a run or stream detaches its request
    /// (the job goes on only if other requests wait on it).
    private func finish(_ exchange: Exchange, context: ChannelHandlerContext, clientGone: Bool) {
        state = .idle
        exchange.keepAliveTask?.cancel()
        if case .statusStream = exchange.kind {
            services.jobs.statistics.adjustWatchers(.sse, by: -1)
        }
        switch exchange.kind {
        case .waiting, .statsStream:
            break
        case .run(let request), .partialStream(let request):
            if exchange.subscriptionToken != 0 {
                request.job.unsubscribe(exchange.subscriptionToken)
            }
            // A client that leaves a run or a `/stream` takes its request with it (the job goes on for others).
            if clientGone {
                _ = services.jobs.cancel(request.id, keyID: request.ownerKeyID, app: request.endpoint.app)
            }
        case .statusStream(let stream):
            stream.lease?.release()
            if exchange.subscriptionToken != 0 {
                stream.request.job.unsubscribe(exchange.subscriptionToken)
            }
        }
    }

    // MARK: - Writing responses

    private func reject(context: ChannelHandlerContext, head: HTTPRequestHead, error: FalError) {
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
        if case .rejecting = state, statusStreamsTakeOver {
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

@available(*, unavailable)
extension RelayHTTPHandler: Sendable {}
