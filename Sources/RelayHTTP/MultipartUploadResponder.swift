import NIOCore
import RelayCore
import RelayStore

/// The small-bodied steps of multipart uploads (`MultipartUploadStep`): creating one (v3 and `initiate-multipart`)
/// and completing it. Parts are bodies streamed to disk by `UploadExchange`.
extension RelayServices {
    func respondMultipart(_ request: RouteRequest, step: MultipartUploadStep, uploads: UploadService) -> RouteAnswer {
        switch step {
        case .create:
            return createMultipart(request, uploads: uploads)
        case .initiate:
            return initiateMultipart(request, uploads: uploads)
        case .complete(let file, let id):
            switch authorizeV3Multipart(request.facts, file: file, upload: id, uploads: uploads) {
            case .failure(let error): return request.error(error)
            case .success: return completeMultipart(request, id: id, uploads: uploads)
            }
        case .signedComplete(let id, let token):
            switch authorizeSignedMultipart(token: token, upload: id, uploads: uploads) {
            case .failure(let error): return request.error(error)
            case .success: return completeMultipart(request, id: id, uploads: uploads)
            }
        case .completeByURL:
            guard let url = request.jsonObject?["upload_url"]?.stringValue,
                case .signedComplete(let id, let token) = Router.signedCompletion(uploadURL: url)
            else {
                return request.error(
                    .badRequest(
                        "expected {\"upload_url\": <an initiate-multipart upload_url>, \"parts\": […]}",
                        type: "invalid_upload_url"
                    )
                )
            }
            switch authorizeSignedMultipart(token: token, upload: id, uploads: uploads) {
            case .failure(let error): return request.error(error)
            case .success: return completeMultipart(request, id: id, uploads: uploads)
            }
        case .part, .signedPart:
            // `UploadExchange` takes every part body when uploads are enabled.
            return request.error(.internalError("multipart part not handled"))
        }
    }

    /// A v3 step's caller: the credentials a v3 upload takes (storage token or key), of the key that created it.
    func authorizeV3Multipart(
        _ facts: RequestFacts,
        file: Digest128,
        upload id: Digest128,
        uploads: UploadService
    ) -> Result<MultipartUpload, FalError> {
        guard case .success(let principal) = caller(facts, route: .v3Upload), principal != .anonymous else {
            return .failure(.unauthorized("Uploads need an API key or a storage token"))
        }
        guard let upload = uploads.multipart.upload(id), upload.fileID == file else {
            return .failure(MultipartUploadTable.unknown)
        }
        guard upload.ownerKeyID == nil || upload.ownerKeyID == principal.keyID else {
            return .failure(.forbidden("This upload was made with another key"))
        }
        return .success(upload)
    }

    /// A signed step's URL, and its upload.
    func authorizeSignedMultipart(
        token: String,
        upload id: Digest128,
        uploads: UploadService
    ) -> Result<MultipartUpload, FalError> {
        guard authenticator.authenticate(token: token, app: UploadService.multipartScope(id)) != nil else {
            return .failure(.unauthorized("The upload URL is invalid or has expired"))
        }
        guard let upload = uploads.multipart.upload(id) else { return .failure(MultipartUploadTable.unknown) }
        return .success(upload)
    }

    /// v3 `POST /files/upload/multipart` (no body; the file's type and name in headers, as for `POST /files/upload`):
    /// admitted and charged as a v3 upload → `{access_url, uploadId}`.
    private func createMultipart(_ request: RouteRequest, uploads: UploadService) -> RouteAnswer {
        let principal: Principal
        let rateLimitHeaders: [(String, String)]
        switch admit(request.facts, route: .v3Upload) {
        case .refused(let error, let headers):
            return request.error(error, extraHeaders: headers)
        case .admitted(let admitted, let headers):
            (principal, rateLimitHeaders) = (admitted, headers)
        }
        let headers = request.facts.headers
        let upload = uploads.startMultipart(
            fileName: headers.first(name: "x-fal-file-name") ?? "upload.bin",
            mediaType: MediaType.forContentType(headers.first(name: "content-type") ?? "application/octet-stream"),
            ownerKeyID: principal.keyID,
            eventLoop: request.eventLoop
        )
        return request.json(
            [
                "access_url": .string(uploads.fileURL(id: upload.fileID, fileName: upload.fileName)),
                "uploadId": .string(upload.id.hex),
            ],
            extraHeaders: rateLimitHeaders
        )
    }

    /// `POST /storage/upload/initiate-multipart`: `{file_name, content_type}` → `{upload_url, file_url}`, the upload
    /// URL signed for this upload only.
    private func initiateMultipart(_ request: RouteRequest, uploads: UploadService) -> RouteAnswer {
        guard let object = request.jsonObject else {
            return request.error(.malformedJSON("expected {\"file_name\", \"content_type\"}"))
        }
        let fileName = object["file_name"]?.stringValue ?? "upload.bin"
        let contentType = object["content_type"]?.stringValue ?? "application/octet-stream"
        let id = UploadService.makeUploadID()
        guard let token = uploadToken(request, scope: UploadService.multipartScope(id), uploads: uploads) else {
            return request.error(.unauthorized("Uploads need an API key"))
        }
        let upload = uploads.startMultipart(
            id: id,
            fileName: fileName,
            mediaType: MediaType.forContentType(contentType),
            ownerKeyID: request.principal.keyID,
            eventLoop: request.eventLoop
        )
        return request.json(
            [
                "upload_url": .string(uploads.signedMultipartURL(id: id, token: token)),
                "file_url": .string(uploads.fileURL(id: upload.fileID, fileName: upload.fileName)),
            ],
            extraHeaders: request.rateLimitHeaders
        )
    }

    /// `{"parts": [{"partNumber": n, "etag": "…"}]}` → the parts assembled in order into one stored blob, recorded
    /// under the upload's stable URL. A repeated completion gets the same answer.
    private func completeMultipart(_ request: RouteRequest, id: Digest128, uploads: UploadService) -> RouteAnswer {
        guard let listed = Self.listedParts(request.body) else {
            return request.error(
                .malformedJSON("expected {\"parts\": [{\"partNumber\": <integer>, \"etag\": <string>}, …]}")
            )
        }
        let now = Timestamp.now()
        guard let plan = uploads.multipart.update(id, { $0.complete(listed, now: now) }),
            let upload = uploads.multipart.upload(id)
        else { return request.error(MultipartUploadTable.unknown) }
        let paths: [String]
        switch plan {
        case .rejected(let error):
            return request.error(error)
        case .done(let completion):
            return request.json(uploads.multipartAnswer(upload, completion))
        case .assemble(let ordered):
            paths = ordered
        }
        let eventLoop = request.eventLoop
        let isHead = request.isHead
        let answer = uploads.parts.assemble(paths, mediaType: upload.mediaType, eventLoop: eventLoop).flatMap {
            record in
            self.mediaServed(record.digest)  // a fresh upload is recently used
            let alias = UploadAliases.Alias(
                id: upload.fileID,
                digest: record.digest,
                mediaType: upload.mediaType,
                fileName: upload.fileName,
                created: Int(now.secondsSinceEpoch)
            )
            return uploads.aliases.record(alias, eventLoop: eventLoop).map { _ in record }
        }.map { record -> PreparedResponse in
            let completion = MultipartUpload.Completion(digest: record.digest, size: record.size)
            let done = uploads.multipart.update(id) { $0.assembled(completion, now: .now()) } ?? []
            uploads.parts.remove(done, eventLoop: eventLoop)
            return PreparedResponse(
                status: .ok,
                json: uploads.multipartAnswer(upload, completion),
                requestID: nil,
                isHead: isHead
            )
        }.recover { error in
            _ = uploads.multipart.update(id) { $0.assemblyFailed() }
            return PreparedResponse(error: self.multipartStoreError(error), requestID: nil, isHead: isHead)
        }
        return .pending(answer)
    }

    /// A full disk is 507 in fal's error shape; anything else a 500 that names no path.
    func multipartStoreError(_ error: any Error) -> FalError {
        if let error = error as? StoreError, error.isDiskFull {
            return .insufficientStorage("The relay's media store is full: the upload was not stored")
        }
        logger.error("multipart upload not stored", metadata: ["error": "\(error)"])
        return .internalError("The upload could not be stored")
    }

    /// The `parts` list of a completion; nil when it is not one.
    static func listedParts(_ body: ByteBuffer) -> [(number: Int, etag: String)]? {
        guard body.readableBytes > 0, let list = RouteRequest.jsonObject(body)?["parts"]?.arrayValue else { return nil }
        var parts: [(number: Int, etag: String)] = []
        for entry in list {
            guard let object = entry.objectValue, let number = object["partNumber"]?.intValue,
                let etag = object["etag"]?.stringValue
            else { return nil }
            parts.append((number, etag))
        }
        return parts
    }
}

extension UploadService {
    /// A new multipart upload, kept until completed or abandoned; arms the sweep that removes abandoned ones.
    func startMultipart(
        id: Digest128 = UploadService.makeUploadID(),
        fileName: String,
        mediaType: MediaType,
        ownerKeyID: String?,
        now: Timestamp = .now(),
        eventLoop: any EventLoop
    ) -> MultipartUpload {
        let upload = MultipartUpload(
            id: id,
            fileID: UploadService.makeUploadID(),
            fileName: UploadService.safeFileName(fileName),
            mediaType: mediaType,
            ownerKeyID: ownerKeyID,
            limits: multipartLimits,
            now: now
        )
        multipart.insert(upload)
        armMultipartSweep(on: eventLoop)
        return upload
    }

    /// The answer to a completion: the stable URL (what the clients return) and the content-addressed one.
    func multipartAnswer(_ upload: MultipartUpload, _ completion: MultipartUpload.Completion) -> JSONValue {
        let stable = fileURL(id: upload.fileID, fileName: upload.fileName)
        return [
            "access_url": .string(stable),
            "file_url": .string(stable),
            "content_url": .string(accessURL(digest: completion.digest, mediaType: upload.mediaType)),
            "content_type": .string(upload.mediaType.contentType),
            "file_name": .string(upload.fileName),
            "file_size": .number(Double(completion.size)),
        ]
    }

    /// Removes the uploads abandoned by `now` and their part files; returns how many files went.
    @discardableResult
    func sweepMultipart(now: Timestamp, eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let (paths, _) = multipart.sweep(now: now)
        return parts.remove(paths, eventLoop: eventLoop).map { paths.count }
    }

    /// While multipart uploads exist, sweeps once a minute (or more often for a short idle limit) on `eventLoop`.
    func armMultipartSweep(on eventLoop: any EventLoop) {
        guard multipart.armSweep() else { return }
        scheduleMultipartSweep(on: eventLoop)
    }

    private func scheduleMultipartSweep(on eventLoop: any EventLoop) {
        let seconds = max(1, min(60, multipartLimits.idleSeconds / 4))
        let scheduled = eventLoop.scheduleTask(in: .milliseconds(Int64(seconds * 1000))) { [self] in
            let (paths, remaining) = multipart.sweep(now: .now())
            parts.remove(paths, eventLoop: eventLoop)
            if remaining > 0 { scheduleMultipartSweep(on: eventLoop) }
        }
        scheduled.futureResult.whenFailure { [self] _ in multipart.disarmSweep() }
    }
}
