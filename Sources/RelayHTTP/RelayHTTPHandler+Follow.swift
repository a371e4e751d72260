import NIOCore
import NIOHTTP1
import RelayCore
import RelayJobs

extension RelayHTTPHandler {
    // MARK: - Exchanges that follow a job

    /// Hands the connection to a bare SSE writer: this handler and the rest of the HTTP/1.1 pipeline leave it, and the
    /// access line of this request is written by the stream when it ends.
    func takeOver(_ stream: StatusStream, context: ChannelHandlerContext) {
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
        case .run(let r), .partialStream(let r), .peerEvents(let r, _):
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
        // A peer logs every event under the owner's numbers; taken after subscribing, so nothing falls between
        // (an event both here and live goes out once: the stream drops what it has sent).
        var catchUp = subscription.replay
        if case .peerEvents = kind { catchUp = request.job.events(after: sequence) }
        for event in catchUp {
            receive(event, context: context, number: number)
        }
        // A peer learns that it now holds everything this job had (it answers its adopted request's calls from then).
        if case .peerEvents = kind, case .exchanging(let current) = state, current.number == number {
            writeSSE(context: context, data: ["kind": "live"])
        }
        return number
    }

    func writeStreamHead(context: ChannelHandlerContext, request: RelayRequest, exchange: inout Exchange) {
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
    func writeStatsStreamHead(context: ChannelHandlerContext, exchange: inout Exchange) {
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

    func sendKeepAlive(context: ChannelHandlerContext, number: Int) {
        guard case .exchanging(let exchange) = state, exchange.number == number,
            exchange.stream.shouldPing(writable: context.channel.isWritable)
        else { return }
        writeSSE(context: context, text: ServerSentEvents.keepAlive)
    }

    func receive(_ event: JobEvent, context: ChannelHandlerContext, number: Int) {
        guard case .exchanging(var exchange) = state, exchange.number == number else { return }
        switch exchange.kind {
        case .statusStream, .partialStream, .peerEvents:
            // A slow reader never makes us buffer: while the socket cannot take more, events stay in the job's log
            // and are replayed from there when it drains (`channelWritabilityChanged`).
            let delivery = exchange.stream.deliver(
                sequence: event.sequence,
                terminal: event.isTerminal,
                writable: context.channel.isWritable
            )
            state = .exchanging(exchange)
            if delivery == .end { return endStream(exchange, context: context) }
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
        case .peerEvents:
            writeSSE(context: context, data: event.peerJSON)
            if event.isTerminal {
                endStream(exchange, context: context)
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

    func endStream(_ exchange: Exchange, context: ChannelHandlerContext) {
        finish(exchange, context: context, clientGone: false)
        let keepAlive = exchange.keepAlive
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive {
                channel.close(promise: nil)
            }
        }
    }

    /// An answer that became ready after its client left (the connection or stream closed while the answer waited for
    /// the result tiers or for its record to be durable): a run or `/stream` it would have followed takes its request
    /// with it, as one whose client leaves while it follows does (`finish`), instead of a job running for nobody.
    func abandon(_ answer: RouteAnswer, on eventLoop: any EventLoop) {
        switch answer {
        case .afterRecorded(let request, let then):
            // Once recorded: a cancel must not reach the fleet's registry before the registration does.
            let bound = NIOLoopBound((self, then), eventLoop: eventLoop)
            request.recorded.whenDone {
                eventLoop.execute {
                    let (handler, then) = bound.value
                    handler.abandon(then, on: eventLoop)
                }
            }
        case .later(let future):
            let bound = NIOLoopBound(self, eventLoop: future.eventLoop)
            future.whenSuccess { bound.value.abandon($0, on: future.eventLoop) }
        case .follow(let follow):
            switch follow.kind {
            case .run, .partialStream, .peerEvents(_, detachOnLeave: true):
                clientLeft(follow.request)
            case .statusStream(let stream):
                // Its watcher place goes back to the caller.
                stream.lease?.release()
            case .peerEvents:
                break
            }
        default:
            break
        }
    }

    /// The client of a run, a `/stream` or a peer's follow of a key left: its request goes, and its job with it unless
    /// other requests wait on it.
    private func clientLeft(_ request: RelayRequest) {
        _ = services.jobs.cancel(request.id, keyID: request.ownerKeyID, app: request.endpoint.app)
    }

    /// Ends an exchange's subscriptions and timers. A client that leaves a run or stream detaches its request
    /// (the job goes on only if other requests wait on it).
    func finish(_ exchange: Exchange, context: ChannelHandlerContext, clientGone: Bool) {
        state = .idle
        exchange.keepAliveTask?.cancel()
        if case .statusStream = exchange.kind {
            services.jobs.statistics.adjustWatchers(.sse, by: -1)
        }
        switch exchange.kind {
        case .waiting, .statsStream:
            break
        case .run(let request), .partialStream(let request), .peerEvents(let request, _):
            if exchange.subscriptionToken != 0 {
                request.job.unsubscribe(exchange.subscriptionToken)
            }
            // A client that leaves a run or a `/stream` takes its request with it (the job goes on for others); so
            // does a peer that leaves the request it made to follow a key, but not one that watched a client's.
            if case .peerEvents(_, detachOnLeave: false) = exchange.kind { return }
            if clientGone { clientLeft(request) }
        case .statusStream(let stream):
            stream.lease?.release()
            if exchange.subscriptionToken != 0 {
                stream.request.job.unsubscribe(exchange.subscriptionToken)
            }
        }
    }
}
