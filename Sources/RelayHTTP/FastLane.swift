import NIOCore
import NIOHTTP1
import RelayCore
import RelayStore

/// How many requests the fast lane handed to NIO's HTTP pipeline, and how many of their responses have ended: while
/// one is unanswered, later requests must queue behind it (responses go out in request order), so they go to NIO
/// too. Loop-confined; shared by `FastLane` (counts requests) and `HTTPPartsTap` (counts response ends).
final class SlowPathLedger {
    var forwarded = 0
    var answered = 0

    var isIdle: Bool { answered >= forwarded }
}

/// Answers the hottest HTTP/1.1 requests straight from the bytes, below NIO's HTTP codec: cached results, status
/// polls, `/healthz`, and media files already open (sendfile). Everything else goes on to NIO's pipeline unchanged.
///
/// Why: a cache hit is a few hundred bytes the relay already holds. Through the full pipeline (llhttp, the HTTP
/// parts passing five handlers each way, a header dictionary, NIO's encoder) it cost ~4x nginx's CPU per request;
/// here it is one scan of the head, the shared answer logic (`RelayServices.answerRead`), and one write of bytes.
///
/// Sits between `ConnectionTimer` and the HTTP decoder. `RequestHeadScanner` frames every message: a fast head is
/// answered only when NIO owes no response (`SlowPathLedger`), otherwise the whole message — head and its
/// `Content-Length` body — is forwarded, so NIO's parser only ever sees whole messages in order. A message the
/// scanner cannot frame (chunked body, upgrade, anything unusual) hands the connection to NIO for good. Reads stop
/// while the channel is not writable, so a client that pipelines requests without reading answers cannot grow the
/// outbound buffer without bound.
final class FastLane: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Mode {
        /// Between messages: bytes are scanned for the next head.
        case scanning
        /// Forwarding the rest of a request body to NIO.
        case forwardingBody(remaining: Int)
        /// NIO owns the connection from here on.
        case opaque
        /// NIO's handlers are being replaced for an upgrade (`rearmUpgrade`): what arrives waits here, in order.
        case rearming(ByteBuffer)
    }

    private let services: RelayServices
    private let scheme: String
    private let timer: ConnectionTimer
    let ledger: SlowPathLedger
    private let accessLog: AccessLogSink
    private let scanner: RequestHeadScanner
    private var mode = Mode.scanning
    /// Bytes of a head not yet complete.
    private var pending: ByteBuffer?
    /// A `read` held back while the channel is not writable.
    private var readHeld = false
    /// A status stream took the connection over: this handler has left the pipeline.
    private var handedOver = false
    /// Told when a status stream takes the connection over (it counts as an SSE connection from then on).
    private let connectionKind: ConnectionKindTracker?

    /// Adds NIO's HTTP/1.1 handlers after this one: run once, before the first request the lane hands on; nil once
    /// they are there.
    typealias SlowPathInstaller = (ChannelPipeline.SynchronousOperations, FastLane) throws -> Void
    private var slowPath: SlowPathInstaller?
    /// The same installer, kept to install NIO's handlers afresh for an upgrade that is not the first request.
    private let installer: SlowPathInstaller?

    /// `slowPath` nil: the HTTP handlers are in the pipeline already.
    init(
        services: RelayServices,
        scheme: String,
        timer: ConnectionTimer,
        ledger: SlowPathLedger,
        proto: String = "http/1.1",
        connectionKind: ConnectionKindTracker? = nil,
        slowPath: SlowPathInstaller? = nil
    ) {
        self.connectionKind = connectionKind
        self.services = services
        self.scheme = scheme
        self.timer = timer
        self.ledger = ledger
        self.slowPath = slowPath
        self.installer = slowPath
        self.accessLog = AccessLogSink(logger: services.accessLogger, metrics: services.httpMetrics, proto: proto)
        self.scanner = RequestHeadScanner(
            maxHeadBytes: services.limits.connection.maxHeaderBytes,
            maxTargetBytes: services.limits.maxURLBytes
        )
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        switch mode {
        case .opaque:
            context.fireChannelRead(data)
            return
        case .rearming(var held):
            held.writeBuffer(&bytes)
            mode = .rearming(held)
            return
        case .forwardingBody(let remaining):
            guard bytes.readableBytes > remaining else {
                mode =
                    bytes.readableBytes == remaining
                    ? .scanning : .forwardingBody(remaining: remaining - bytes.readableBytes)
                context.fireChannelRead(data)
                return
            }
            let body = bytes.readSlice(length: remaining)!
            mode = .scanning
            context.fireChannelRead(Self.wrapInboundOut(body))
        case .scanning:
            break
        }
        if var earlier = pending {
            pending = nil
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        var wrote = false
        defer { if wrote { context.flush() } }
        while bytes.readableBytes > 0 {
            switch scanner.scan(bytes) {
            case .incomplete:
                pending = bytes
                return
            case .opaque:
                mode = .opaque
                guard installSlowPath(context: context) else { return }
                context.fireChannelRead(Self.wrapInboundOut(bytes))
                return
            case .upgrade:
                // NIO's upgrade handler only looks at the first request its pipeline sees: an upgrade after other
                // requests (fal-js opens its realtime socket after any other call on the origin) gets a pipeline of
                // its own, as a first request would. Only while NIO owes no response: its handlers are between
                // requests then, holding nothing.
                if slowPath == nil, ledger.isIdle, let installer {
                    rearmUpgrade(context: context, installer: installer, held: bytes)
                    return
                }
                mode = .opaque
                guard installSlowPath(context: context) else { return }
                context.fireChannelRead(Self.wrapInboundOut(bytes))
                return
            case .slow(let length, let bodyLength):
                forward(context: context, &bytes, headLength: length, bodyLength: bodyLength)
                if case .forwardingBody = mode { return }
            case .fast(let head, let length):
                if ledger.isIdle, answer(head, headLength: length, context: context) {
                    bytes.moveReaderIndex(forwardBy: length)
                    // The stream's writer flushes; whatever follows a close-delimited response is dropped.
                    if handedOver {
                        wrote = false
                        return
                    }
                    wrote = true
                } else {
                    forward(context: context, &bytes, headLength: length, bodyLength: 0)
                }
            }
        }
    }

    /// Hands one request (its head, and its body as far as it has arrived) to NIO's pipeline.
    private func forward(context: ChannelHandlerContext, _ bytes: inout ByteBuffer, headLength: Int, bodyLength: Int) {
        guard installSlowPath(context: context) else {
            bytes.moveReaderIndex(to: bytes.writerIndex)
            return
        }
        ledger.forwarded += 1
        let available = min(bodyLength, bytes.readableBytes - headLength)
        let message = bytes.readSlice(length: headLength + available)!
        if available < bodyLength {
            mode = .forwardingBody(remaining: bodyLength - available)
        }
        context.fireChannelRead(Self.wrapInboundOut(message))
    }

    /// Replaces NIO's HTTP handlers (and the relay's behind them) with a fresh set, whose upgrade handler sees the
    /// next request as its first. NIO's decoder leaves the pipeline on a later tick, so `held` (and whatever arrives
    /// meanwhile) goes to the new set once the old one is gone.
    private func rearmUpgrade(context: ChannelHandlerContext, installer: @escaping SlowPathInstaller, held: ByteBuffer)
    {
        mode = .rearming(held)
        let operations = context.pipeline.syncOperations
        let behind = RelayHTTPServer.http1HandlerTypes.filter { $0 != ConnectionTimer.self && $0 != FastLane.self }
        let removals = RelayHTTPServer.contexts(of: behind, in: operations).reversed().map { departing in
            let removed = context.eventLoop.makePromise(of: Void.self)
            operations.removeHandler(context: departing, promise: removed)
            return removed.futureResult
        }
        let bound = NIOLoopBound((self, context, installer), eventLoop: context.eventLoop)
        EventLoopFuture.andAllComplete(removals, on: context.eventLoop).whenComplete { _ in
            let (lane, context, installer) = bound.value
            guard case .rearming(let bytes) = lane.mode else { return }
            lane.mode = .opaque
            do {
                try installer(context.pipeline.syncOperations, lane)
            } catch {
                lane.services.logger.error("could not set up the HTTP/1.1 pipeline", metadata: ["error": "\(error)"])
                context.close(promise: nil)
                return
            }
            context.fireChannelRead(Self.wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
    }

    /// Puts NIO's HTTP handlers in place if they are not yet; false (the connection closing) if that failed.
    private func installSlowPath(context: ChannelHandlerContext) -> Bool {
        guard let install = slowPath else { return true }
        slowPath = nil
        do {
            try install(context.pipeline.syncOperations, self)
            return true
        } catch {
            services.logger.error("could not set up the HTTP/1.1 pipeline", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return false
        }
    }

    // MARK: - Without the HTTP handlers

    /// Shutdown with no HTTP handler yet: every request so far was answered whole, so once what was written is out
    /// (a media body may still be going), the connection closes, as `HTTPServerPipelineHandler` closes an idle one.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard slowPath != nil, event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    /// An error with no HTTP handler yet (which would close): close.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard slowPath != nil else {
            context.fireErrorCaught(error)
            return
        }
        services.logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: - Answers

    /// Answers `head` if it is one of the fast routes and everything it needs is at hand; false leaves it to NIO.
    private func answer(_ head: RequestHeadScanner.FastHead, headLength: Int, context: ChannelHandlerContext) -> Bool {
        if let settled, settled.answers(head) {
            if replay(settled, for: head, headLength: headLength, context: context) { return true }
            self.settled = nil
        }
        let route = route(head)
        let started = NIODeadline.now()
        let facts = facts(head, channel: context.channel)
        let response: PreparedResponse
        var keyID: String?
        var settledBy: (principal: Principal, keyTableVersion: UInt64, removals: UInt64)?
        switch route {
        case .health:
            response = services.answerHealth(facts)
        case .status, .result:
            // Read before the lookup, so that a removal or key change during it shows as a change later.
            let (keyTableVersion, removals) = (services.authenticator.keyTableVersion(), services.jobs.removals)
            switch services.admit(facts, route: route) {
            case .refused(let error, let headers):
                response = PreparedResponse(error: error, requestID: nil, extraHeaders: headers, isHead: facts.isHead)
            case .admitted(let principal, _):
                let read = services.answerRead(facts, route: route, principal: principal)
                (response, keyID) = (read.response, read.keyID)
                if read.settled, let keyTableVersion {
                    settledBy = (principal, keyTableVersion, removals)
                }
            }
        case .file(let digest, let fileExtension):
            guard let file = MediaFileRequest(digest: digest, fileExtension: fileExtension) else { return false }
            return answerFile(head, facts: facts, route: route, file: file, headLength: headLength, context: context)
        case .statusStream:
            return answerStatusStream(head, facts: facts, route: route, headLength: headLength, context: context)
        default:
            return false
        }
        guard accept(headLength: headLength) else { return true }
        let bytes = send(response, for: head, route: route, keyID: keyID, started: started, context: context)
        if let (principal, keyTableVersion, removals) = settledBy {
            settled = SettledAnswer(
                method: head.method,
                uri: head.uri,
                host: head.host,
                authorization: head.authorization,
                route: route,
                principal: principal,
                keyTableVersion: keyTableVersion,
                removals: removals,
                bytes: bytes,
                status: response.status.code,
                bodyLength: response.body.readableBytes,
                requestID: response.field("x-fal-request-id"),
                cache: response.field("x-relay-cache")
            )
        }
        return true
    }

    /// The last answer on this connection that can no longer change (the status or result of a finished request), as
    /// the bytes written. A client that polls a finished request or fetches its result again and again gets them with
    /// no table lookup, no response built and nothing encoded. Each use still checks that the caller's key is as it
    /// was (the key table's version), that no request was removed, and charges the caller's rate limit.
    private var settled: SettledAnswer?

    private struct SettledAnswer {
        let method: HTTPMethod
        let uri: String
        let host: String?
        let authorization: String?
        let route: Route
        let principal: Principal
        let keyTableVersion: UInt64
        let removals: UInt64
        let bytes: ByteBuffer
        let status: UInt
        let bodyLength: Int
        let requestID: String?
        let cache: String?

        /// The same request: everything a read's answer depends on (the scheme is the connection's).
        func answers(_ head: RequestHeadScanner.FastHead) -> Bool {
            head.uri == uri && head.authorization == authorization && head.method == method && head.host == host
        }
    }

    /// Sends `answer` again if it still stands; false when it may not (the caller answers anew).
    private func replay(
        _ answer: SettledAnswer,
        for head: RequestHeadScanner.FastHead,
        headLength: Int,
        context: ChannelHandlerContext
    ) -> Bool {
        guard services.jobs.removals == answer.removals,
            services.authenticator.keyTableVersion() == answer.keyTableVersion
        else {
            return false
        }
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
        context.write(Self.wrapOutboundOut(answer.bytes), promise: nil)
        timer.responseEnded()
        logAccess(
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
    private func accept(headLength: Int) -> Bool {
        guard timer.headReceived(byteCount: headLength) else { return false }
        timer.requestEnded()
        services.jobs.statistics.recordHTTPRequest()
        return true
    }

    private func facts(_ head: RequestHeadScanner.FastHead, channel: any Channel) -> RequestFacts {
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
    private func send(
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
        logAccess(
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

    /// The last request line routed on this connection: a client polling a status or fetching a result sends the
    /// same one again and again, and routing is a pure function of method, Host and target.
    private var lastRouted: (method: HTTPMethod, host: String?, uri: String, route: Route)?

    private func route(_ head: RequestHeadScanner.FastHead) -> Route {
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
    private func answerFile(
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
            logAccess(
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
    private func answerStatusStream(
        _ head: RequestHeadScanner.FastHead,
        facts: RequestFacts,
        route: Route,
        headLength: Int,
        context: ChannelHandlerContext
    ) -> Bool {
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
            var entry = AccessEntry(method: head.method, path: Self.path(head.uri), started: started)
            entry.status = 200
            entry.route = route.label
            entry.keyID = principal.keyID
            entry.requestID = stream.request.id
            entry.cache = stream.request.cacheOutcome.rawValue
            let writer = StatusStreamHandler(
                services: services,
                stream: stream,
                access: entry,
                accessSink: accessLog,
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

    /// The access line and HTTP metrics of a request answered here.
    private func logAccess(
        method: HTTPMethod,
        uri: String,
        status: UInt,
        bytes: Int,
        started: NIODeadline,
        route: String,
        keyID: String?,
        requestID: String?,
        cache: String?
    ) {
        // Without a log the path is never read: spare the scan.
        var entry = AccessEntry(method: method, path: accessLog.logger == nil ? "" : Self.path(uri), started: started)
        entry.status = status
        entry.declaredLength = bytes
        entry.route = route
        entry.keyID = keyID
        entry.requestID = requestID
        entry.cache = cache
        accessLog.record(entry, instruments: instruments(route: route, status: status))
    }

    /// The metrics instruments last used here: a connection mostly repeats one kind of request.
    private var lastInstruments: HTTPMetrics.Instruments?

    private func instruments(route: String, status: UInt) -> HTTPMetrics.Instruments {
        if let last = lastInstruments, last.status == status, last.route == route { return last }
        let made = services.httpMetrics.instruments(route: route, status: status)
        lastInstruments = made
        return made
    }

    private static func path(_ uri: String) -> String {
        guard let mark = uri.utf8.firstIndex(of: UInt8(ascii: "?")) else { return uri }
        return String(uri[..<mark])
    }

    // MARK: - Back-pressure

    func read(context: ChannelHandlerContext) {
        guard context.channel.isWritable else {
            readHeld = true
            return
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if readHeld, context.channel.isWritable {
            readHeld = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }
}
