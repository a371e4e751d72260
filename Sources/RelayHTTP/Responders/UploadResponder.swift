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
        guard let token = uploadToken(request, scope: UploadService.storageScope, uploads: uploads) else {
            return request.error(.unauthorized("Storage tokens need an API key"))
        }
        return request.json(
            UploadService.storageTokenBody(token: token, expiresAt: expiresAt, baseURL: uploads.baseURL)
        )
    }

    /// `POST /storage/upload/initiate`: `{file_name, content_type}` → `{upload_url, file_url}`.
    private func initiate(_ request: RouteRequest, uploads: UploadService) -> RouteAnswer {
        guard let object = request.jsonObject else {
            return request.error(.malformedJSON("expected {\"file_name\", \"content_type\"}"))
        }
        let fileName = object["file_name"]?.stringValue ?? "upload.bin"
        let id = UploadService.makeUploadID()
        guard let token = uploadToken(request, scope: UploadService.uploadScope(id), uploads: uploads) else {
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

    /// A token signed for `scope` (storage, or one upload's signed URLs), valid `tokenSeconds`; nil for a caller who
    /// may not have one (anonymous).
    func uploadToken(_ request: RouteRequest, scope: String, uploads: UploadService) -> String? {
        authenticator.issueToken(for: request.principal, apps: [scope], seconds: uploads.tokenSeconds)
    }
}
