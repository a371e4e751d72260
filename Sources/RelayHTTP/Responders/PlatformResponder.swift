import NIOCore
import RelayCore
import RelayJobs
import RelayStore

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
            let jobs = jobs
            let promise = request.eventLoop.makePromise(of: PreparedResponse.self)
            promise.completeWithTask {
                let deletion = await jobs.deletePayloads(id, keyID: scope)
                var results: [JSONValue] = []
                if case .deleted(let deleted) = deletion { results = await self.deleteMedia(of: deleted) }
                return Self.platformResponse(isHead: isHead) { () throws(PlatformAPI.Failure) in
                    switch deletion {
                    case .notFound: throw .notFound("No request \(id) for this caller")
                    case .inProgress:
                        throw PlatformAPI.Failure(
                            status: 409,
                            type: "conflict",
                            message: "Request \(id) is still in progress: delete its payloads once it has ended"
                        )
                    case .deleted, .alreadyDeleted:
                        return ["request_id": .string(id), "cdn_delete_results": .array(results)]
                    }
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
            return PreparedResponse(error: error.error, requestID: nil, extraHeaders: headers, isHead: isHead)
        }
    }

    /// Deletes the media a request's result points at (this relay's `/files/<digest>.<ext>`), and its cached result:
    /// fal's `cdn_delete_results`, one per file. A file anything else still points at is kept, and says so: another
    /// retained request's result or input (whoever's, the same key's too), or another cached result.
    private func deleteMedia(of request: RelayRequest) async -> [JSONValue] {
        guard case .completed(.success(let result, _)) = request.job.status.phase else { return [] }
        _ = await admin.purge(.key(request.job.key.digest))
        // Each string of the result that names a file (`…/files/<digest>.<ext>`).
        let links = Set(PlatformHistory.strings(in: result)).sorted().compactMap { link in
            ResultIndex.referencedDigests(in: .string(link)).first.map { (link, $0) }
        }
        guard !links.isEmpty else { return [] }
        var shared: Set<Digest128> = []
        for other in jobs.history(keyID: nil) where other.id != request.id && !other.payloadsDeleted {
            if case .completed(.success(let otherResult, _)) = other.job.status.phase {
                shared.formUnion(ResultIndex.referencedDigests(in: otherResult))
            }
            shared.formUnion(ResultIndex.referencedDigests(in: .object(other.job.input.fields)))
        }
        var results: [JSONValue] = []
        for (link, digest) in links {
            var exception: JSONValue = .null
            if shared.contains(digest) || jobs.results.references(digest) {
                exception = "Kept: another request or cached result points at the same file"
            } else if case .failure(let error) = await admin.purge(.digest(digest)) {
                exception = .string(error.message)
            }
            results.append(["link": .string(link), "exception": exception])
        }
        return results
    }
}
