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
            case file
            case run(RelayRequest)
            case statusStream(RelayRequest, base: FalWire.QueueBase, withLogs: Bool)
            case partialStream(RelayRequest)
            /// `/relay/stats/stream`: a statistics snapshot every second (the dashboard).
            case statsStream
        }

        let number: Int
        let kind: Kind
        let keepAlive: Bool
        var subscriptionToken = 0
        var keepAliveTask: RepeatedTask?
        var headSent = false
        /// The last event written (streams): later deliveries at or below it are replay overlaps.
        var lastSent = 0
        /// Events were held back while the channel was not writable; replay from `lastSent` once it is.
        var behind = false
    }

    let services: RelayServices
    let scheme: String
    var state = State.idle
    private var exchangeCount = 0

    /// Set when the connection was accepted beyond a connection cap: every request is answered with it, then close.
    let refusal: FalError?

    /// Told the route and the caller's key id, for the access line.
    let accessLog: AccessLogHandler?
    /// The route of the request being received, when `beginUpload` already computed it (dispatch reuses it).
    var routedHead: Route?

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
            routedHead = nil  // never a previous request's
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
            dispatch(context: context, head: head, body: body)
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
        if context.channel.isWritable, case .exchanging(var exchange) = state, exchange.behind {
            exchange.behind = false
            state = .exchanging(exchange)
            let request: RelayRequest
            switch exchange.kind {
            case .statusStream(let r, _, _), .partialStream(let r): request = r
            default: return context.fireChannelWritabilityChanged()
            }
            for event in request.job.replay(after: exchange.lastSent) {
                receive(event, context: context, number: exchange.number)
                guard case .exchanging(let current) = state, current.number == exchange.number, !current.behind else {
                    break
                }
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
                text: "retry: 1000\n: the relay is shutting down; reconnect with Last-Event-ID\n\n"
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
            routedHead
            ?? services.router.route(method: head.method, host: head.headers.first(name: "host"), uri: head.uri)
        routedHead = nil
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
        let principal: Principal
        let limitHeaders: [(String, String)]
        switch services.admit(facts, route: route) {
        case .refused(let error, let headers):
            return respondError(context: context, head: head, error: error, extraHeaders: headers)
        case .admitted(let admitted, let headers):
            (principal, limitHeaders) = (admitted, headers)
        }
        if let keyID = principal.keyID {
            accessLog?.annotate(keyID: keyID)
        }
        switch route {
        case .health:
            write(context: context, keepAlive: keepAlive, services.answerHealth(facts))
        case .ready:
            if services.readiness.isReady {
                respond(context: context, head: head, status: .ok, json: ["status": "ready"])
            } else {
                respondError(
                    context: context,
                    head: head,
                    error: .unavailable("starting or draining", type: "not_ready")
                )
            }
        case .webSocket, .realtime:
            // Only requests the upgrader declined get here: say why.
            switch WebSocketGate.target(of: route, uri: head.uri, services: services, admitted: principal) {
            case .failure(let error):
                respondError(context: context, head: head, error: error)
            case .success:
                respondError(context: context, head: head, error: .upgradeRequired())
            }
        case .tokens:
            let request =
                (try? body.withUnsafeReadableBytes { bytes throws(JSONError) in try JSONValue(parsing: bytes) }) ?? [:]
            let apps = request["allowed_apps"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let seconds = request["token_expiration"]?.intValue ?? 120
            guard let token = services.authenticator.issueToken(for: principal, apps: apps, seconds: seconds) else {
                respondError(context: context, head: head, error: .unauthorized("Tokens need an API key"))
                return
            }
            respond(context: context, head: head, status: .ok, json: .string(token))
        case .metrics:
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/plain; version=0.0.4; charset=utf-8")
            let text = services.metricsText?() ?? []
            var buffer = context.channel.allocator.buffer(capacity: text.count)
            buffer.writeBytes(text)
            write(context: context, head: head, status: .ok, headers: headers, body: buffer)
        case .notFound:
            respondError(
                context: context,
                head: head,
                error: .notFound("No route for \(head.method.rawValue) \(Self.path(head.uri))")
            )
        case .methodNotAllowed:
            respondError(context: context, head: head, error: .methodNotAllowed(head.method.rawValue))
        case .ui(let name):
            serveAsset(context: context, head: head, name: name)
        case .catalog:
            serveCatalog(context: context, head: head)
        case .stats(stream: false):
            respond(
                context: context,
                head: head,
                status: .ok,
                json: services.jobs.statistics.snapshot(),
                extraHeaders: [("cache-control", "no-store")]
            )
        case .stats(stream: true):
            begin(.statsStream, context: context, keepAlive: keepAlive)
        case .admin(let action):
            serveAdmin(action, context: context, head: head, body: body)
        case .storageToken, .uploadInitiate, .uploadPut, .v3Upload, .uploadAlias:
            guard let uploads = services.uploads else {
                return respondError(
                    context: context,
                    head: head,
                    error: .notFound("Uploads are not enabled on this relay")
                )
            }
            switch route {
            case .storageToken:
                serveStorageToken(context: context, head: head, principal: principal, uploads: uploads)
            case .uploadInitiate:
                serveUploadInitiate(
                    context: context,
                    head: head,
                    body: body,
                    principal: principal,
                    limitHeaders: limitHeaders,
                    uploads: uploads
                )
            case .uploadAlias(let id): serveUploadAlias(context: context, head: head, id: id)
            default:
                // `beginUpload` takes every upload body when uploads are enabled.
                respondError(context: context, head: head, error: .internalError("upload not handled"))
            }
        case .file(let digest, let fileExtension):
            serveFile(context: context, head: head, digest: digest, fileExtension: fileExtension)
        case .submit(let endpoint), .run(let endpoint), .stream(let endpoint):
            let input: ModelInput
            switch services.modelInput(endpoint: endpoint, body: body) {
            case .success(let prepared): input = prepared
            case .failure(let error): return respondError(context: context, head: head, error: error)
            }
            var webhook: String?
            if case .submit = route, let url = QueryParameters(uri: head.uri)["fal_webhook"] {
                if let error = services.webhooks.validate(url: url) {
                    return respondError(context: context, head: head, error: error)
                }
                webhook = url
            }
            let directives = Self.cacheDirectives(head.headers)
            let request = services.jobs.submit(
                input,
                endpoint: endpoint,
                key: services.requestKey(input, principal: principal),
                ownerKeyID: principal.keyID,
                directives: CacheDirectives(
                    noCache: directives.contains("no-cache"),
                    noStore: directives.contains("no-store")
                )
            )
            // The id goes out only once the request's record is durable: a crash must not turn it into a 404.
            func answer() {
                guard context.channel.isActive else { return }
                switch route {
                case .submit:
                    if let webhook { services.webhooks.register(request: request, url: webhook) }
                    let base = queueBase(head: head, app: endpoint.app)
                    respond(
                        context: context,
                        head: head,
                        status: .ok,
                        json: FalWire.submitResponse(request, base: base),
                        requestID: request.id,
                        extraHeaders: Self.cacheHeaders(request) + limitHeaders
                    )
                case .run:
                    begin(.run(request), context: context, keepAlive: keepAlive)
                default:
                    begin(.partialStream(request), context: context, keepAlive: keepAlive)
                }
            }
            guard request.recorded.isDone else {
                let deferred = NIOLoopBound(answer, eventLoop: context.eventLoop)
                let eventLoop = context.eventLoop
                request.recorded.whenDone { eventLoop.execute { deferred.value() } }
                return
            }
            answer()
        case .status, .result:
            write(
                context: context,
                keepAlive: keepAlive,
                services.answerRead(facts, route: route, principal: principal).response
            )
        case .statusStream(let app, let id), .cancel(let app, let id):
            if case .cancel = route {
                let (status, body) = FalWire.cancelBody(services.jobs.cancel(id, keyID: principal.keyID, app: app.app))
                respond(
                    context: context,
                    head: head,
                    status: HTTPResponseStatus(statusCode: status),
                    json: body,
                    requestID: id
                )
                return
            }
            guard let request = services.jobs.request(id, keyID: principal.keyID), request.endpoint.app == app.app
            else {
                respondError(context: context, head: head, error: .notFound("Request \(id) not found"), requestID: id)
                return
            }
            // Resume after the last event the client saw: the header on reconnects, the query parameter for browsers
            // (EventSource cannot set headers on its first connect).
            let query = QueryParameters(uri: head.uri)
            let lastSeen =
                (head.headers.first(name: "last-event-id") ?? query["last_event_id"]).flatMap { Int($0) } ?? 0
            if lastSeen > 0, request.phase.isCompleted, lastSeen >= request.job.status.lastSequence {
                write(context: context, head: head, status: .noContent, headers: HTTPHeaders(), body: nil)
                return
            }
            let base = queueBase(head: head, app: app.app)
            if statusStreamsTakeOver {
                let stream = StatusStreamHandler.Stream(
                    request: request,
                    base: base,
                    withLogs: query.flag("logs"),
                    after: max(0, lastSeen)
                )
                takeOver(stream, context: context)
                return
            }
            begin(
                .statusStream(request, base: base, withLogs: query.flag("logs")),
                after: max(0, lastSeen),
                context: context,
                keepAlive: keepAlive
            )
        }
    }

    /// The request as the shared answers (ReadAnswers.swift) see it.
    func facts(_ head: HTTPRequestHead, context: ChannelHandlerContext) -> RequestFacts {
        let channel = context.channel
        return RequestFacts(
            method: head.method,
            uri: head.uri,
            host: head.headers.first(name: "host"),
            authorization: head.headers.first(name: "authorization"),
            scheme: scheme,
            channel: channel
        )
    }

    private func queueBase(head: HTTPRequestHead, app: String) -> FalWire.QueueBase {
        FalWire.QueueBase(scheme: scheme, host: head.headers.first(name: "host"), app: app)
    }

    // MARK: - Media files

    /// `GET`/`HEAD /files/<digest>.<ext>`: stat on the pool → a pure plan (200/206/304/416) → the body as sendfile
    /// (plain HTTP), a buffer, or 256 KiB chunks read only as fast as the client takes them (TLS).
    func serveFile(context: ChannelHandlerContext, head: HTTPRequestHead, digest: Digest128, fileExtension: String) {
        guard let mediaType = MediaType.forExtension(fileExtension) else {
            return respondError(context: context, head: head, error: .notFound("No such file"))
        }
        let number = begin(.file, context: context, keepAlive: head.isKeepAlive)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        services.media.record(digest, mediaType: mediaType, eventLoop: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            handler.planFile(context: context, head: head, number: number, result: result)
        }
    }

    private func planFile(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        number: Int,
        result: Result<BlobRecord?, any Error>
    ) {
        guard case .exchanging(let exchange) = state, exchange.number == number else { return }
        let record: BlobRecord
        switch result {
        case .success(let found?):
            record = found
            services.jobs.statistics.recordStoreRead(hit: true)
        case .success(nil):
            state = .idle
            services.jobs.statistics.recordStoreRead(hit: false)
            return respondError(context: context, head: head, error: .notFound("No such file"))
        case .failure(let error):
            state = .idle
            services.logger.error("media stat failed", metadata: ["uri": "\(head.uri)", "error": "\(error)"])
            return respondError(context: context, head: head, error: .internalError("Could not read the file"))
        }
        services.mediaServed(record.digest)
        let plan = MediaResponsePlan(method: head.method, requestHeaders: head.headers, record: record)
        if plan.outcome == .unsatisfiable {
            state = .idle
            return respondError(
                context: context,
                head: head,
                error: .rangeNotSatisfiable(length: record.size),
                extraHeaders: plan.headers.map { ($0.name, $0.value) }
            )
        }
        guard let range = plan.body else {
            // HEAD (keeps Content-Length and Content-Range), 304, or an empty blob.
            state = .idle
            return write(context: context, head: head, status: plan.status, headers: plan.headers, body: nil)
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
            handler.sendFile(context: context, head: head, number: number, plan: plan, result: result)
        }
    }

    private func sendFile(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        number: Int,
        plan: MediaResponsePlan,
        result: Result<MediaBody?, any Error>
    ) {
        guard case .exchanging(let exchange) = state, exchange.number == number else {
            if case .success(let body?) = result { body.discard() }  // the client left meanwhile: close the file
            return
        }
        state = .idle  // HTTPServerPipelineHandler holds the next request back until .end
        let body: MediaBody
        switch result {
        case .success(let loaded?):
            body = loaded
        case .success(nil):
            return respondError(context: context, head: head, error: .notFound("No such file"))
        case .failure(let error):
            services.logger.error("media read failed", metadata: ["uri": "\(head.uri)", "error": "\(error)"])
            return respondError(context: context, head: head, error: .internalError("Could not read the file"))
        }
        var headers = plan.headers
        headers.add(name: "x-fal-request-id", value: RequestID.make())
        let keepAlive = head.isKeepAlive
        if !keepAlive {
            headers.replaceOrAdd(name: "connection", value: "close")
        }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: plan.status, headers: headers))),
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

    // MARK: - Exchanges that follow a job

    /// Hands the connection to a bare SSE writer: this handler and the rest of the HTTP/1.1 pipeline leave it, and the
    /// access line of this request is written by the stream when it ends.
    private func takeOver(_ stream: StatusStreamHandler.Stream, context: ChannelHandlerContext) {
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
    private func begin(
        _ kind: Exchange.Kind,
        after sequence: Int = 0,
        context: ChannelHandlerContext,
        keepAlive: Bool
    ) -> Int {
        exchangeCount += 1
        var exchange = Exchange(number: exchangeCount, kind: kind, keepAlive: keepAlive)
        let request: RelayRequest
        switch kind {
        case .file:
            state = .exchanging(exchange)
            return exchange.number
        case .statsStream:
            writeStatsStreamHead(context: context, exchange: &exchange)
            state = .exchanging(exchange)
            return exchange.number
        case .run(let r), .partialStream(let r), .statusStream(let r, _, _):
            request = r
        }
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
        for (name, value) in Self.cacheHeaders(request) {
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
        exchange.headSent = true
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
        exchange.headSent = true
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
        guard case .exchanging(let exchange) = state, exchange.number == number, context.channel.isWritable else {
            return
        }
        writeSSE(context: context, text: ": ping\n\n")
    }

    private func receive(_ event: JobEvent, context: ChannelHandlerContext, number: Int) {
        guard case .exchanging(var exchange) = state, exchange.number == number else { return }
        switch exchange.kind {
        case .statusStream, .partialStream:
            // A slow reader never makes us buffer: while the socket cannot take more, events stay in the job's log
            // and are replayed from there when it drains (`channelWritabilityChanged`).
            guard event.sequence > exchange.lastSent else { return }
            guard context.channel.isWritable, !exchange.behind else {
                if !exchange.behind {
                    exchange.behind = true
                    state = .exchanging(exchange)
                }
                return
            }
            exchange.lastSent = event.sequence
            state = .exchanging(exchange)
        default:
            break
        }
        switch exchange.kind {
        case .file, .statsStream:
            return
        case .run(let request):
            guard case .completed(let outcome) = event.kind else { return }
            finish(exchange, context: context, clientGone: false)
            let extra = Self.cacheHeaders(request)
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
        case .statusStream(let request, let base, let withLogs):
            // A request cancelled on its own ends even while its shared job runs on.
            let cancelled = services.jobs.request(request.id, keyID: request.ownerKeyID)?.cancelled ?? false
            guard var (phase, logs) = FalWire.statusUpdate(for: event, withLogs: withLogs) else { return }
            let frame: ByteBuffer
            if cancelled {
                phase = .completed(.cancelled)
                logs = withLogs ? [] : nil
                frame = Self.sseFrame(
                    data: FalWire.status(id: request.id, phase: phase, logs: logs, base: base),
                    id: event.sequence,
                    allocator: context.channel.allocator
                )
            } else {
                // Every watcher of this request on this loop gets the same bytes: build them once per event.
                let key = FrameMemo.Key(
                    kind: .sse,
                    job: ObjectIdentifier(request.job),
                    sequence: event.sequence,
                    requestID: request.id,
                    withLogs: withLogs,
                    origin: base.origin,
                    app: base.app
                )
                frame = FrameMemo.current.frame(for: key) {
                    // `id:` lets EventSource resume with Last-Event-ID; the run host's /stream never sends ids (PROTOCOL.md §5.3).
                    Self.sseFrame(
                        data: FalWire.status(id: request.id, phase: phase, logs: logs, base: base),
                        id: event.sequence,
                        allocator: context.channel.allocator
                    )
                }
            }
            context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(frame))), promise: nil)
            if case .completed = phase {
                endStream(exchange, context: context)
            }
        }
    }

    func writeSSE(context: ChannelHandlerContext, data: JSONValue, id: Int? = nil) {
        let frame = Self.sseFrame(data: data, id: id, allocator: context.channel.allocator)
        context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(frame))), promise: nil)
    }

    /// `id: n` (optional), `data: <json>`, blank line.
    static func sseFrame(data: JSONValue, id: Int?, allocator: ByteBufferAllocator) -> ByteBuffer {
        var bytes: [UInt8] = id.map { Array("id: \($0)\n".utf8) } ?? []
        bytes.append(contentsOf: "data: ".utf8)
        data.write(into: &bytes)
        bytes.append(contentsOf: [UInt8(ascii: "\n"), UInt8(ascii: "\n")])
        return allocator.buffer(bytes: bytes)
    }

    func writeSSE(context: ChannelHandlerContext, text: String) {
        let buffer = context.channel.allocator.buffer(string: text)
        context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    private func endStream(_ exchange: Exchange, context: ChannelHandlerContext) {
        finish(exchange, context: context, clientGone: false)
        let keepAlive = exchange.keepAlive
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive {
                context.close(promise: nil)
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
        case .file, .statsStream:
            break
        case .run(let request), .partialStream(let request), .statusStream(let request, _, _):
            if exchange.subscriptionToken != 0 {
                request.job.unsubscribe(exchange.subscriptionToken)
            }
            if clientGone {
                switch exchange.kind {
                case .run, .partialStream:
                    _ = services.jobs.cancel(request.id, keyID: request.ownerKeyID, app: request.endpoint.app)
                default:
                    break
                }
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
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive {
                channel.close(promise: nil)
            }
        }
    }

    private static func path(_ uri: String) -> Substring {
        uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    }

    /// `x-relay-cache` and RFC 9211 `Cache-Status`: how the request was served.
    static func cacheHeaders(_ request: RelayRequest) -> [(String, String)] {
        [("x-relay-cache", request.cacheOutcome.rawValue), ("cache-status", request.cacheStatus)]
    }

    /// `Cache-Control` request directives, lowercased, without values.
    static func cacheDirectives(_ headers: HTTPHeaders) -> Set<Substring> {
        var directives: Set<Substring> = []
        for value in headers["cache-control"] {
            for part in value.split(separator: ",") {
                let name = (part.split(separator: "=", maxSplits: 1).first ?? "").filter { $0 != " " && $0 != "\t" }
                directives.insert(Substring(name.lowercased()))
            }
        }
        return directives
    }
}

@available(*, unavailable)
extension RelayHTTPHandler: Sendable {}

extension Job {
    /// Subscribes a handler living on `eventLoop`: `body` runs on that loop, and all subscribers on one loop share one
    /// hop per batch of events.
    func subscribe(
        after sequence: Int,
        on eventLoop: any EventLoop,
        _ body: @escaping @Sendable (JobEvent) -> Void
    ) -> Subscription {
        subscribe(after: sequence, loop: ObjectIdentifier(eventLoop), execute: { eventLoop.execute($0) }, body)
    }
}
