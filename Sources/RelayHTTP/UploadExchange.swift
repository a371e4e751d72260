import NIOCore
import NIOHTTP1
import RelayCore
import RelayStore

/// The body of one upload on its way to disk: decides when to write, when to stop and resume reading the socket,
/// and when the upload is complete or over its limit. Pure (STYLE.md rule 1): `RelayHTTPHandler` performs the
/// actions; tested without a channel.
///
/// Back-pressure: one write is in flight at a time. Bytes that arrive meanwhile collect in `pending`; once that
/// reaches `highWater` the handler stops reading (autoRead off), and reading resumes as soon as the next write takes
/// the pending bytes. Memory per upload is therefore about two `highWater`s plus one socket read, whatever the body
/// size — a 100 MiB upload is never in memory.
struct UploadReceiver {
    /// What the handler does next; several may apply at once.
    struct Actions {
        /// Write these bytes to the upload's file (then report `writeSucceeded` or `writeFailed`).
        var write: ByteBuffer?
        /// Switch reading the socket on or off.
        var reading: Bool?
        /// Every byte is on disk: place the blob and answer.
        var finish = false
        /// Give up: discard the upload and answer this error.
        var failure: FalError?

        static let none = Actions()
    }

    let limit: Int
    let highWater: Int
    private(set) var received = 0
    private var pending: ByteBuffer?
    private(set) var writing = false
    private(set) var paused = false
    /// The request's `.end` arrived.
    private(set) var ended = false
    /// Finished or failed: nothing more happens.
    private(set) var done = false

    init(limit: Int, highWater: Int = 1 << 20) {
        self.limit = limit
        self.highWater = highWater
    }

    var pendingBytes: Int { pending?.readableBytes ?? 0 }

    mutating func received(_ chunk: inout ByteBuffer) -> Actions {
        guard !done else { return .none }
        received += chunk.readableBytes
        guard received <= limit else {
            return fail(.payloadTooLarge(limit: limit))
        }
        if pending == nil {
            pending = chunk
        } else {
            pending!.writeBuffer(&chunk)
        }
        if !writing {
            return takePending()
        }
        if !paused, pendingBytes >= highWater {
            paused = true
            return Actions(reading: false)
        }
        return .none
    }

    mutating func writeSucceeded() -> Actions {
        guard !done else { return .none }
        writing = false
        if pendingBytes > 0 {
            return takePending()
        }
        if ended {
            done = true
            return Actions(finish: true)
        }
        return .none
    }

    mutating func writeFailed(_ error: FalError) -> Actions {
        guard !done else { return .none }
        return fail(error)
    }

    /// Ends the upload. Reading resumes if it was paused: after an error the connection may carry on (when the
    /// request had ended), and the rest of a rejected body must be drained to reach the close.
    private mutating func fail(_ error: FalError) -> Actions {
        done = true
        writing = false
        pending = nil
        var actions = Actions(failure: error)
        if paused {
            paused = false
            actions.reading = true
        }
        return actions
    }

    mutating func endReceived() -> Actions {
        guard !done else { return .none }
        ended = true
        if !writing && pendingBytes == 0 {
            done = true
            return Actions(finish: true)
        }
        return .none
    }

    private mutating func takePending() -> Actions {
        var actions = Actions()
        actions.write = pending
        pending = nil
        writing = true
        if paused {
            paused = false
            actions.reading = true
        }
        return actions
    }
}

/// An upload being received by `RelayHTTPHandler`.
struct UploadExchange {
    enum Kind {
        /// v3 `POST /files/upload`: answered with the content-addressed `access_url`.
        case v3(fileName: String)
        /// The PUT of an initiated upload: recorded as the alias `id`.
        case put(id: Digest128)
        /// One part of a multipart upload: sealed in `tmp/` and kept by the upload's `MultipartUpload`.
        case part(upload: Digest128, number: Int)
    }

    let head: HTTPRequestHead
    let kind: Kind
    let upload: BlobUpload
    let mediaType: MediaType
    var receiver: UploadReceiver
}

extension RelayHTTPHandler {
    /// At a request head: when it is an upload (v3 POST or a signed PUT), checks auth, rate limit and declared size
    /// before any byte of the body is read, and starts streaming it to disk. Returns false for any other request.
    func beginUpload(context: ChannelHandlerContext, head: HTTPRequestHead) -> Bool {
        // Uploads are POST or PUT: other methods never pay for routing twice.
        guard refusal == nil, head.method == .POST || head.method == .PUT, let uploads = services.uploads else {
            return false
        }
        let route = services.router.route(method: head.method, host: head.headers.first(name: "host"), uri: head.uri)
        routedRoute = route
        accessLog?.annotate(route: route.label, keyID: nil)
        let kind: UploadExchange.Kind
        var limit = uploads.maxBytes
        switch route {
        case .v3Upload:
            let principal: Principal
            switch services.admit(facts(head, context: context), route: route) {
            case .refused(let error, let headers):
                rejectUpload(context: context, error: error, extraHeaders: headers)
                return true
            case .admitted(let admitted, _):
                principal = admitted
            }
            if let keyID = principal.keyID { accessLog?.annotate(keyID: keyID) }
            kind = .v3(fileName: head.headers.first(name: "x-fal-file-name") ?? "upload.bin")
        case .uploadPut(let id, let token):
            guard services.authenticator.authenticate(token: token, app: UploadService.uploadScope(id)) != nil else {
                rejectUpload(context: context, error: .unauthorized("The upload URL is invalid or has expired"))
                return true
            }
            kind = .put(id: id)
        case .multipartUpload(let step) where step.isPart:
            switch beginPart(step, head: head, context: context, uploads: uploads) {
            case .failure(let error):
                rejectUpload(context: context, error: error)
                return true
            case .success(let (id, number, partLimit)):
                kind = .part(upload: id, number: number)
                limit = partLimit
            }
        default:
            return false
        }
        services.jobs.statistics.recordHTTPRequest()
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
            rejectUpload(context: context, error: .payloadTooLarge(limit: limit))
            return true
        }
        if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
            context.writeAndFlush(
                Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))),
                promise: nil
            )
        }
        let mediaType = MediaType.forContentType(head.headers.first(name: "content-type") ?? "application/octet-stream")
        state = .uploading(
            UploadExchange(
                head: head,
                kind: kind,
                upload: uploads.store.makeUpload(),
                mediaType: mediaType,
                receiver: UploadReceiver(limit: limit)
            )
        )
        return true
    }

    /// A body part of the upload in progress.
    func uploadReceived(context: ChannelHandlerContext, chunk: inout ByteBuffer) {
        guard case .uploading(var exchange) = state else { return }
        state = .idle  // drop the reference so that appending to the pending bytes does not copy them
        let actions = exchange.receiver.received(&chunk)
        state = .uploading(exchange)
        perform(actions, exchange: exchange, context: context)
    }

    func uploadEnded(context: ChannelHandlerContext) {
        guard case .uploading(var exchange) = state else { return }
        let actions = exchange.receiver.endReceived()
        state = .uploading(exchange)
        perform(actions, exchange: exchange, context: context)
    }

    /// The client left mid-upload: the file goes.
    func uploadAbandoned() {
        guard case .uploading(let exchange) = state else { return }
        services.uploads?.store.discard(exchange.upload)
    }

    private func perform(_ actions: UploadReceiver.Actions, exchange: UploadExchange, context: ChannelHandlerContext) {
        guard let uploads = services.uploads else { return }
        if let reading = actions.reading {
            context.channel.setOption(ChannelOptions.autoRead, value: reading).whenFailure { _ in }
        }
        if let failure = actions.failure {
            uploads.store.discard(exchange.upload)
            failUpload(context: context, exchange: exchange, error: failure)
            return
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let upload = exchange.upload
        if let bytes = actions.write {
            uploads.store.append(bytes, to: upload, eventLoop: context.eventLoop).whenComplete { result in
                let (handler, context) = bound.value
                guard case .uploading(var current) = handler.state, current.upload === upload else { return }
                let next: UploadReceiver.Actions
                switch result {
                case .success:
                    next = current.receiver.writeSucceeded()
                case .failure(let error):
                    next = current.receiver.writeFailed(handler.uploadError(error))
                }
                handler.state = .uploading(current)
                handler.perform(next, exchange: current, context: context)
            }
        }
        if actions.finish, case .part(let id, let number) = exchange.kind {
            finishPart(context: context, upload: upload, id: id, number: number, uploads: uploads)
        } else if actions.finish {
            let services = self.services
            let eventLoop = context.eventLoop
            let kind = exchange.kind
            let mediaType = exchange.mediaType
            uploads.store.finish(upload, mediaType: mediaType, eventLoop: eventLoop).flatMap { record in
                services.mediaServed(record.digest)  // a fresh upload is recently used
                let id: Digest128
                let fileName: String
                switch kind {
                case .v3(let name):
                    id = record.digest
                    fileName = name
                case .put(let uploadID), .part(let uploadID, _):  // parts never get here: `finishPart` seals them
                    id = uploadID
                    fileName = "upload"
                }
                let alias = UploadAliases.Alias(
                    id: id,
                    digest: record.digest,
                    mediaType: mediaType,
                    fileName: UploadService.safeFileName(fileName),
                    created: Int(Timestamp.now().secondsSinceEpoch)
                )
                return uploads.aliases.record(alias, eventLoop: eventLoop).map { (record, $0) }
            }.whenComplete { result in
                let (handler, context) = bound.value
                guard case .uploading(let current) = handler.state, current.upload === upload else { return }
                handler.finishUpload(context: context, exchange: current, result: result)
            }
        }
    }

    /// A multipart step's part: its caller (as `authorizeV3Multipart` or `authorizeSignedMultipart` says), then the
    /// upload id, part number and the most bytes the part may have.
    private func beginPart(
        _ step: MultipartUploadStep,
        head: HTTPRequestHead,
        context: ChannelHandlerContext,
        uploads: UploadService
    ) -> Result<(Digest128, Int, Int), FalError> {
        let authorized: Result<MultipartUpload, FalError>
        let id: Digest128
        let number: Int
        switch step {
        case .part(let file, let upload, let partNumber):
            let facts = facts(head, context: context)
            authorized = services.authorizeV3Multipart(facts, file: file, upload: upload, uploads: uploads)
            (id, number) = (upload, partNumber)
        case .signedPart(let upload, let token, let partNumber):
            authorized = services.authorizeSignedMultipart(token: token, upload: upload, uploads: uploads)
            (id, number) = (upload, partNumber)
        default:
            return .failure(.internalError("not a part"))
        }
        if case .failure(let error) = authorized { return .failure(error) }
        let now = Timestamp.now()
        guard let limit = uploads.multipart.update(id, { $0.beginPart(number, now: now) }) else {
            return .failure(MultipartUploadTable.unknown)
        }
        return limit.map { (id, number, $0) }
    }

    /// Every byte of a part is written: seal its file and hand it to its upload, which answers with its etag (the
    /// digest of its bytes) in the `ETag` field (the Python client reads it there) and in a JSON body (fal-js).
    private func finishPart(
        context: ChannelHandlerContext,
        upload: BlobUpload,
        id: Digest128,
        number: Int,
        uploads: UploadService
    ) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        uploads.parts.seal(upload, eventLoop: eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            guard case .uploading(let current) = handler.state, current.upload === upload else {
                // The client left meanwhile: nothing holds the sealed file.
                if case .success(let sealed) = result { uploads.parts.remove([sealed.path], eventLoop: eventLoop) }
                return
            }
            handler.state = .idle
            let head = current.head
            switch result {
            case .failure(let error):
                handler.respondError(context: context, head: head, error: handler.uploadError(error))
            case .success(let sealed):
                let etag = "\"\(sealed.digest.hex)\""
                let part = MultipartUpload.Part(path: sealed.path, etag: etag, size: sealed.size)
                let outcome =
                    uploads.multipart.update(id) { $0.partStored(number, part: part, now: .now()) }
                    ?? .rejected(MultipartUploadTable.unknown)
                switch outcome {
                case .rejected(let error):
                    uploads.parts.remove([sealed.path], eventLoop: eventLoop)
                    handler.respondError(context: context, head: head, error: error)
                case .accepted(let replaced):
                    if let replaced { uploads.parts.remove([replaced], eventLoop: eventLoop) }
                    handler.respond(
                        context: context,
                        head: head,
                        status: .ok,
                        json: ["partNumber": .number(Double(number)), "etag": .string(etag)],
                        extraHeaders: [("etag", etag)]
                    )
                }
            }
        }
    }

    private func finishUpload(
        context: ChannelHandlerContext,
        exchange: UploadExchange,
        result: Result<(BlobRecord, UploadAliases.Alias), any Error>
    ) {
        guard let uploads = services.uploads else { return }
        state = .idle
        let head = exchange.head
        switch result {
        case .failure(let error):
            respondError(context: context, head: head, error: uploadError(error))
        case .success(let (record, alias)):
            let accessURL = uploads.accessURL(digest: record.digest, mediaType: exchange.mediaType)
            switch exchange.kind {
            case .v3(let fileName):
                respond(
                    context: context,
                    head: head,
                    status: .ok,
                    json: [
                        "access_url": .string(accessURL),
                        "content_type": .string(exchange.mediaType.contentType),
                        "file_name": .string(fileName),
                        "file_size": .number(Double(record.size)),
                    ]
                )
            case .put, .part:
                guard alias.digest == record.digest else {
                    // The URL was used already, for other bytes: a file URL names one content for good.
                    return respondError(
                        context: context,
                        head: head,
                        error: .badRequest(
                            "This upload URL was already used for other bytes; initiate a new upload",
                            type: "upload_already_completed"
                        )
                    )
                }
                respond(context: context, head: head, status: .ok, json: ["access_url": .string(accessURL)])
            }
        }
    }

    /// Before the request ended, the rest of the body is not worth reading: answer and close. After, the connection
    /// can carry on.
    private func failUpload(context: ChannelHandlerContext, exchange: UploadExchange, error: FalError) {
        if exchange.receiver.ended {
            state = .idle
            respondError(context: context, head: exchange.head, error: error)
        } else {
            rejectUpload(context: context, error: error)
        }
    }

    /// Answers before the body is read, drops whatever of it still arrives, and closes.
    private func rejectUpload(context: ChannelHandlerContext, error: FalError, extraHeaders: [(String, String)] = []) {
        state = .rejecting
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        respondError(
            context: context,
            keepAlive: false,
            error: error,
            requestID: RequestID.make(),
            extraHeaders: extraHeaders
        )
    }

    /// A full disk is 507 in fal's error shape; anything else a 500 that names no path.
    private func uploadError(_ error: any Error) -> FalError {
        if let error = error as? StoreError {
            if error.isDiskFull {
                return .insufficientStorage("The relay's media store is full: the upload was not stored")
            }
            services.logger.error("upload not stored", metadata: ["error": "\(error)"])
            if error.isCollision { return .internalError("The upload could not be stored (digest collision)") }
        } else {
            services.logger.error("upload not stored", metadata: ["error": "\(error)"])
        }
        return .internalError("The upload could not be stored")
    }
}
