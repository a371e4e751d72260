import RelayCore

/// fal's storage API (PROTOCOL.md §7.1): tokens for v3 uploads and initiated (signed-URL) uploads. The bodies of
/// uploads themselves are streamed to disk as they arrive (`UploadExchange`), never held whole.
extension RelayServices {
    func respondUpload(_ request: RouteRequest) -> RouteAnswer {
        guard let uploads else { return request.error(.notFound("Uploads are not enabled on this relay")) }
        switch request.route {
        case .storageToken:
            return storageToken(request, uploads: uploads)
        case .uploadInitiate:
            return initiate(request, uploads: uploads)
        case .multipartUpload(let step):
            return respondMultipart(request, step: step, uploads: uploads)
        default:
            // `UploadExchange` takes every upload body when uploads are enabled.
            return request.error(.internalError("upload not handled"))
        }
    }

    /// `POST /storage/auth/token`: a Bearer token for v3 uploads, valid `tokenSeconds`.
    private func storageToken(_ request: RouteRequest, uploads: UploadService) -> RouteAnswer {
        let expiresAt = UploadService.expiry(now: .now(), seconds: uploads.tokenSeconds)
        guard
            let token = authenticator.issueToken(
                for: request.principal,
                apps: [UploadService.storageScope],
                seconds: uploads.tokenSeconds
            )
        else {
            return request.error(.unauthorized("Storage tokens need an API key"))
        }
        return request.json(
            UploadService.storageTokenBody(token: token, expiresAt: expiresAt, baseURL: uploads.baseURL)
        )
    }

    /// `POST /storage/upload/initiate`: `{file_name, content_type}` → `{upload_url, file_url}`.
    private func initiate(_ request: RouteRequest, uploads: UploadService) -> RouteAnswer {
        let parsed =
            request.body.readableBytes == 0
            ? JSONValue.object([:])
            : (try? request.body.withUnsafeReadableBytes { bytes throws(JSONError) in try JSONValue(parsing: bytes) })
        guard let object = parsed?.objectValue else {
            return request.error(.malformedJSON("expected {\"file_name\", \"content_type\"}"))
        }
        let fileName = object["file_name"]?.stringValue ?? "upload.bin"
        let id = UploadService.makeUploadID()
        guard
            let token = authenticator.issueToken(
                for: request.principal,
                apps: [UploadService.uploadScope(id)],
                seconds: uploads.tokenSeconds
            )
        else {
            return request.error(.unauthorized("Uploads need an API key"))
        }
        return request.json(
            [
                "upload_url": .string(uploads.uploadURL(id: id, token: token)),
                "file_url": .string(uploads.fileURL(id: id, fileName: fileName)),
            ],
            extraHeaders: request.rateLimitHeaders
        )
    }
}
