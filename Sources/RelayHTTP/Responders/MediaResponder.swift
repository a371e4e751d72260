import NIOCore
import NIOHTTP1
import RelayCore
import RelayStore

/// Media: `/files/<digest>.<ext>` and an initiated upload's stable URL, served CDN-style (ETag, immutable caching,
/// Range, 304). The answer is decided here in two pure steps that every transport takes: `respondMedia` says which
/// blob, `mediaAnswer` what to send of it once its record is known. How the record and the bytes are fetched
/// (a record already known and a file already open, or the thread pool) is the transport's business.
extension RelayServices {
    func respondMedia(_ request: RouteRequest) -> RouteAnswer {
        switch request.route {
        case .file(let digest, let fileExtension):
            guard let file = MediaFileRequest(digest: digest, fileExtension: fileExtension) else {
                return request.error(.notFound("No such file"))
            }
            return .file(file)
        case .uploadAlias(let id):
            guard let alias = uploads?.aliases.alias(id) else {
                return request.error(.notFound("No such file (the upload may not be finished)"))
            }
            return .file(MediaFileRequest(digest: alias.digest, mediaType: alias.mediaType))
        default:
            return request.error(.internalError("not a media route"))
        }
    }

    /// What to send for `file` given its record (nil: not stored). Pure: a transport may ask before it commits to
    /// answering (the fast lane does, to know whether the file is open); `mediaServed(_:)` records that it did.
    func mediaAnswer(record: BlobRecord?, facts: RequestFacts) -> MediaAnswer {
        guard let record else {
            return .complete(PreparedResponse(error: .notFound("No such file"), requestID: nil, isHead: facts.isHead))
        }
        let plan = MediaResponsePlan(method: facts.method, requestHeaders: facts.headers, record: record)
        if plan.outcome == .unsatisfiable {
            return .complete(
                PreparedResponse(
                    error: .rangeNotSatisfiable(length: record.size),
                    requestID: nil,
                    extraHeaders: plan.headers.map { ($0.name, $0.value) },
                    isHead: facts.isHead
                )
            )
        }
        var headers = plan.headers.map { ($0.name, $0.value) }
        headers.append(("x-fal-request-id", RequestID.make()))
        // The plan's fields carry `content-length` (what GET would send, for HEAD too): the encoders frame it.
        let contentLength = plan.headers.first(name: "content-length").flatMap(Int.init) ?? 0
        headers.removeAll { $0.0 == "content-length" }
        return .send(
            status: plan.status,
            headers: headers,
            contentLength: contentLength,
            record: record,
            range: plan.body
        )
    }

    /// `media_bytes_per_second`, when configured: the body an answer is about to send (`range`, nil for none) is
    /// charged to the client's address, whatever key it sent. Called by each transport once it knows it sends that
    /// body, after admission. The 429 when the address's bytes are spent; nil when it may be sent.
    func chargeMediaBytes(_ range: Range<Int>?, facts: RequestFacts) -> PreparedResponse? {
        guard let rateLimiter, let range, !range.isEmpty, facts.method != .HEAD,
            let decision = rateLimiter.chargeMediaBytes(range.count, clientIP: facts.clientIP),
            let rejection = decision.rejection
        else { return nil }
        return PreparedResponse(
            error: .rateLimited(rejection.detail),
            requestID: nil,
            extraHeaders: rejection.headers,
            isHead: facts.isHead
        )
    }

    /// Counts a media answer that went out: a store hit or miss, and a use of the blob (the store's LRU keeps what
    /// is read).
    func countMediaServed(_ record: BlobRecord?) {
        jobs.statistics.recordStoreRead(hit: record != nil)
        if let record { mediaServed(record.digest) }
    }
}

extension MediaFileRequest {
    /// nil for an extension that names no media type the store keeps.
    init?(digest: Digest128, fileExtension: String) {
        guard let mediaType = MediaType.forExtension(fileExtension) else { return nil }
        self.init(digest: digest, mediaType: mediaType)
    }
}

/// What `mediaAnswer` decided.
enum MediaAnswer {
    /// A whole response with no file bytes: 404, or 416 with its JSON body.
    case complete(PreparedResponse)
    /// A head with `content-length` (added by the encoder), then the bytes of `range` of the blob, if any (none for
    /// HEAD, 304 and an empty blob).
    case send(
        status: HTTPResponseStatus,
        headers: [(String, String)],
        contentLength: Int,
        record: BlobRecord,
        range: Range<Int>?
    )
}
