import NIOCore
import NIOHTTP1
import RelayCore
import RelayJobs

/// `/v1/models…`: fal's Platform API on this relay (PROTOCOL.md §11.3). Models and prices come from the catalog;
/// the request history and usage from the retained requests, scoped to the caller: a key sees its own requests, the
/// anonymous caller the anonymous ones, an admin key all of them. The history routes scan every retained request, so
/// they run off the event loop.
extension RelayServices {
    func respondPlatform(_ request: RouteRequest, action: PlatformAction) -> RouteAnswer {
        let query = QueryParameters(uri: request.facts.uri)
        let origin = queueBase(request.facts, app: "").origin
        let catalog = catalog
        let scope: String?? = request.principal.isAdmin ? nil : .some(request.principal.keyID)
        let isHead = request.isHead
        switch action {
        case .models:
            return .response(
                Self.platformResponse(isHead: isHead) { () throws(PlatformAPI.Failure) in
                    try PlatformAPI.models(catalog, query: query, origin: origin, updatedAt: startedAt)
                }
            )
        case .pricing:
            return .response(
                Self.platformResponse(isHead: isHead) { () throws(PlatformAPI.Failure) in
                    try PlatformAPI.pricing(catalog, query: query)
                }
            )
        case .requests, .usage:
            let jobs = jobs
            let promise = request.eventLoop.makePromise(of: PreparedResponse.self)
            promise.completeWithTask {
                let history = jobs.history(keyID: scope)
                return Self.platformResponse(isHead: isHead) { () throws(PlatformAPI.Failure) in
                    action == .usage
                        ? try PlatformUsage.usage(history, catalog: catalog, query: query, now: .now())
                        : try PlatformHistory.requests(history, catalog: catalog, query: query, now: .now())
                }
            }
            return .pending(promise.futureResult)
        case .deletePayloads(let id):
            guard let deleted = jobs.deletePayloads(id, keyID: scope) else {
                return .response(
                    Self.platformResponse(isHead: isHead) { () throws(PlatformAPI.Failure) in
                        throw .notFound("No request \(id) for this caller")
                    }
                )
            }
            let promise = request.eventLoop.makePromise(of: PreparedResponse.self)
            promise.completeWithTask {
                let results = await self.deleteMedia(of: deleted)
                return Self.platformResponse(isHead: isHead) { () throws(PlatformAPI.Failure) in
                    ["request_id": .string(id), "cdn_delete_results": .array(results)]
                }
            }
            return .pending(promise.futureResult)
        }
    }

    /// The body's JSON, or its failure in the Platform API's error shape; never stored by a cache.
    private static func platformResponse(
        isHead: Bool,
        _ body: () throws(PlatformAPI.Failure) -> JSONValue
    ) -> PreparedResponse {
        let headers = [("cache-control", "no-store")]
        do {
            return PreparedResponse(
                status: .ok,
                json: try body(),
                requestID: nil,
                extraHeaders: headers,
                isHead: isHead
            )
        } catch {
            let status = HTTPResponseStatus(statusCode: error.status)
            return PreparedResponse(
                status: status,
                json: error.json,
                requestID: nil,
                extraHeaders: headers,
                isHead: isHead
            )
        }
    }

    /// Deletes the media a request's result points at (this relay's `/files/<digest>.<ext>`), and its cached result:
    /// fal's `cdn_delete_results`, one per file. A file another caller's retained request also points at is kept
    /// (their result would break), and says so.
    private func deleteMedia(of request: RelayRequest) async -> [JSONValue] {
        guard !request.payloadsDeleted, case .completed(.success(let result, _)) = request.job.status.phase else {
            return []
        }
        _ = await admin.purge(.key(request.job.key.digest))
        let links = PlatformHistory.strings(in: result).filter { Self.mediaDigest(in: $0) != nil }
        guard !links.isEmpty else { return [] }
        var shared: Set<Digest128> = []
        for other in jobs.history(keyID: nil)
        where other.ownerKeyID != request.ownerKeyID && !other.payloadsDeleted {
            guard case .completed(.success(let otherResult, _)) = other.job.status.phase else { continue }
            for text in PlatformHistory.strings(in: otherResult) {
                if let digest = Self.mediaDigest(in: text) { shared.insert(digest) }
            }
        }
        var results: [JSONValue] = []
        for link in Set(links).sorted() {
            guard let digest = Self.mediaDigest(in: link) else { continue }
            var exception: JSONValue = .null
            if shared.contains(digest) {
                exception = "Kept: another caller's request points at the same file"
            } else if case .failure(let error) = await admin.purge(.digest(digest)) {
                exception = .string(error.message)
            }
            results.append(["link": .string(link), "exception": exception])
        }
        return results
    }

    /// The digest of a URL of this relay's media (`…/files/<32 hex>.<ext>`).
    static func mediaDigest(in text: String) -> Digest128? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[parts.count - 2] == "files", let name = parts.last,
            let dot = name.firstIndex(of: "."), name.utf8.distance(from: name.startIndex, to: dot) == 32
        else { return nil }
        return Digest128(hex: name[..<dot])
    }
}
