import NIOCore
import NIOHTTP1
import RelayCore
import RelayStore

extension FastLane {
    // MARK: - Answers

    /// Answers `head` if it is one of the fast routes and everything it needs is at hand; false leaves it to NIO.
    func answer(_ head: RequestHeadScanner.FastHead, headLength: Int, context: ChannelHandlerContext) -> Bool {
        if let settled,
            settled.answers(method: head.method, uri: head.uri, host: head.host, authorization: head.authorization)
        {
            if replay(settled, for: head, headLength: headLength, context: context) { return true }
            self.settled = nil
        }
        let route = route(head)
        let started = NIODeadline.now()
        let facts = facts(head, channel: context.channel)
        let read: FastRead
        switch route {
        case .file(let digest, let fileExtension):
            guard let file = MediaFileRequest(digest: digest, fileExtension: fileExtension) else { return false }
            return answerFile(head, facts: facts, route: route, file: file, headLength: headLength, context: context)
        case .statusStream(_, let id):
            if services.fleet != nil, !services.jobs.holds(id) { return false }
            return answerStatusStream(head, facts: facts, route: route, headLength: headLength, context: context)
        default:
            guard let answered = services.fastRead(facts, route: route) else { return false }
            read = answered
        }
        guard accept(headLength: headLength) else { return true }
        let bytes = send(read.response, for: head, route: route, keyID: read.keyID, started: started, context: context)
        if let answer = SettledRead(read, facts: facts, route: route, payload: bytes) { settled = answer }
        return true
    }

    /// Sends `answer` again if it still stands; false when it may not (the caller answers anew).
    func replay(
        _ answer: SettledRead<ByteBuffer>,
        for head: RequestHeadScanner.FastHead,
        headLength: Int,
        context: ChannelHandlerContext
    ) -> Bool {
        guard answer.stands(in: services) else { return false }
        let started = NIODeadline.now()
        guard accept(headLength: headLength) else { return true }
        let facts = facts(head, channel: context.channel)
        if let refusal = services.charge(facts, route: answer.route, principal: answer.principal)
            .refusal(isHead: facts.isHead)
        {
            send(
                refusal,
                for: head,
                route: answer.route,
                keyID: answer.principal.keyID,
                started: started,
                context: context
            )
            return true
        }
        context.write(Self.wrapOutboundOut(answer.payload), promise: nil)
        timer.responseEnded()
        laneLog.record(
            method: head.method,
            uri: head.uri,
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

    /// Counts a request head the lane answers, for the connection's deadlines and the statistics; false when the head
    /// is over the limit (the clock has sent 431 and closes).
    func accept(headLength: Int) -> Bool {
        guard timer.headReceived(byteCount: headLength) else { return false }
        timer.requestEnded()
        services.jobs.statistics.recordHTTPRequest()
        return true
    }

    func facts(_ head: RequestHeadScanner.FastHead, channel: any Channel) -> RequestFacts {
        RequestFacts(
            method: head.method,
            uri: head.uri,
            host: head.host,
            authorization: head.authorization,
            scheme: scheme,
            channel: channel
        )
    }

    /// Writes a whole response (flushed with the read's others), ends it for the clock and logs it. Returns the bytes.
    @discardableResult
    func send(
        _ response: PreparedResponse,
        for head: RequestHeadScanner.FastHead,
        route: Route,
        keyID: String?,
        started: NIODeadline,
        context: ChannelHandlerContext
    ) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: 256 + response.body.readableBytes)
        response.encode(into: &buffer)
        context.write(Self.wrapOutboundOut(buffer), promise: nil)
        timer.responseEnded()
        laneLog.record(
            method: head.method,
            uri: head.uri,
            status: response.status.code,
            bytes: response.body.readableBytes,
            started: started,
            route: route.label,
            keyID: keyID,
            requestID: response.field("x-fal-request-id"),
            cache: response.field("x-relay-cache")
        )
        return buffer
    }

    func route(_ head: RequestHeadScanner.FastHead) -> Route {
        if let last = lastRouted, last.uri == head.uri, last.method == head.method, last.host == head.host {
            return last.route
        }
        let route = services.router.route(method: head.method, host: head.host, uri: head.uri)
        lastRouted = (head.method, head.host, head.uri, route)
        return route
    }

    /// A media file on plain HTTP whose record is known and whose file is open in this loop: `mediaAnswer` and
    /// sendfile, with no trip to the thread pool. Anything else goes the long way, which opens the file and remembers
    /// it for next time. Nothing is charged or counted before the lane knows it can answer.
    func answerFile(
        _ head: RequestHeadScanner.FastHead,
        facts: RequestFacts,
        route: Route,
        file: MediaFileRequest,
        headLength: Int,
        context: ChannelHandlerContext
    ) -> Bool {
        guard scheme == "http", let record = services.media.cachedRecord(file.digest, mediaType: file.mediaType) else {
            return false
        }
        var facts = facts
        if let value = head.ifNoneMatch { facts.headers.add(name: "if-none-match", value: value) }
        if let value = head.range { facts.headers.add(name: "range", value: value) }
        if let value = head.ifRange { facts.headers.add(name: "if-range", value: value) }
        let answer = services.mediaAnswer(record: record, facts: facts)
        var body: MediaBody?
        if case .send(_, _, _, let record, let range?) = answer {
            guard let open = services.media.zeroCopyBodyIfOpen(of: record, range: range, eventLoop: context.eventLoop)
            else { return false }
            body = open
        }
        let started = NIODeadline.now()
        guard accept(headLength: headLength) else {
            body?.discard()
            return true
        }
        let payer: Principal
        switch services.admit(facts, route: route) {
        case .refused(let error, let headers):
            body?.discard()
            let refusal = PreparedResponse(error: error, requestID: nil, extraHeaders: headers, isHead: facts.isHead)
            send(refusal, for: head, route: route, keyID: nil, started: started, context: context)
            return true
        case .admitted(let admitted, _):
            payer = admitted
        }
        if case .send(_, _, _, _, let range) = answer, let refusal = services.chargeMediaBytes(range, facts: facts) {
            body?.discard()
            send(refusal, for: head, route: route, keyID: payer.keyID, started: started, context: context)
            return true
        }
        services.countMediaServed(record)
        switch answer {
        case .complete(let response):
            send(response, for: head, route: route, keyID: payer.keyID, started: started, context: context)
        case .send(let status, let headers, let contentLength, _, _):
            var buffer = context.channel.allocator.buffer(capacity: 512)
            PreparedResponse.encodeHead(status: status, headers: headers, contentLength: contentLength, into: &buffer)
            context.write(Self.wrapOutboundOut(buffer), promise: nil)
            if let body {
                // Below the HTTP codec: the region goes to the socket as it is (sendfile).
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                let channel = context.channel
                _ = body.write(on: context.eventLoop) { part in
                    bound.value.write(NIOAny(part))
                }.always { result in
                    if case .failure = result { channel.close(promise: nil) }
                }
            }
            timer.responseEnded()
            laneLog.record(
                method: head.method,
                uri: head.uri,
                status: status.code,
                bytes: body?.byteCount ?? 0,
                started: started,
                route: route.label,
                keyID: payer.keyID,
                requestID: headers.first { $0.0 == "x-fal-request-id" }?.1,
                cache: nil
            )
        }
        return true
    }

    /// A status stream: the queue responder decides, and the connection goes straight to the bare SSE writer
    /// (`StatusStreamHandler`). NIO's HTTP handlers never join a connection that only watches.
    func answerStatusStream(
        _ head: RequestHeadScanner.FastHead,
        facts: RequestFacts,
        route: Route,
        headLength: Int,
        context: ChannelHandlerContext
    ) -> Bool {
        // In a fleet a resume may first wait for this node's log to reach its point (a later answer): NIO's
        // handlers carry that out.
        if services.fleet != nil, head.lastEventID != nil || head.uri.utf8.contains("last_event_id=".utf8) {
            return false
        }
        let started = NIODeadline.now()
        guard accept(headLength: headLength) else { return true }
        var facts = facts
        if let value = head.lastEventID { facts.headers.add(name: "last-event-id", value: value) }
        let principal: Principal
        switch services.admit(facts, route: route) {
        case .refused(let error, let headers):
            let refusal = PreparedResponse(error: error, requestID: nil, extraHeaders: headers, isHead: facts.isHead)
            send(refusal, for: head, route: route, keyID: nil, started: started, context: context)
            return true
        case .admitted(let admitted, _):
            principal = admitted
        }
        let request = RouteRequest(facts: facts, route: route, principal: principal, eventLoop: context.eventLoop)
        switch services.respond(request) {
        case .follow(let follow):
            guard case .statusStream(let stream) = follow.kind else { break }
            var entry = AccessEntry(method: head.method, path: LaneAccessLog.path(head.uri), started: started)
            entry.status = 200
            entry.route = route.label
            entry.keyID = principal.keyID
            entry.requestID = stream.request.id
            entry.cache = stream.request.cacheOutcome.rawValue
            let writer = StatusStreamHandler(
                services: services,
                stream: stream,
                access: entry,
                accessSink: laneLog.sink,
                connectionKind: connectionKind
            )
            handedOver = true
            do {
                try StatusStreamHandler.takeOver(writer, pipeline: context.pipeline)
            } catch {
                services.logger.error(
                    "status stream could not take the connection over",
                    metadata: ["error": "\(error)"]
                )
                context.close(promise: nil)
            }
            return true
        case .response(let response):
            send(response, for: head, route: route, keyID: principal.keyID, started: started, context: context)
            return true
        default:
            break
        }
        let error = PreparedResponse(error: .internalError("unexpected answer"), requestID: nil, isHead: facts.isHead)
        send(error, for: head, route: route, keyID: principal.keyID, started: started, context: context)
        return true
    }
}
