import NIOCore
import RelayCore

/// `/admin/…` (admission lets only admin keys through): statistics, purge, drain.
extension RelayServices {
    func respondAdmin(_ request: RouteRequest, action: AdminAction) -> RouteAnswer {
        switch action {
        case .cluster:
            guard let fleet else { return request.error(.notFound("This relay is a single node, not a fleet")) }
            return request.json(fleet.status(), extraHeaders: [("cache-control", "no-store")])
        case .stats:
            var stats = jobs.statistics.snapshot().objectValue ?? [:]
            stats["cache"] = .object(admin.cacheStatistics())
            return request.json(.object(stats), extraHeaders: [("cache-control", "no-store")])
        case .drain:
            let body = request.jsonObject ?? [:]
            let shutdown = body["shutdown"]?.boolValue ?? false
            readiness.set(false)
            admin.drain(shutdown)
            logger.notice("drain requested through the admin API", metadata: ["shutdown": "\(shutdown)"])
            return request.json(["status": "draining", "shutdown": .bool(shutdown)], status: .accepted)
        case .purge:
            let parsed: JSONValue
            do {
                parsed = try request.body.withUnsafeReadableBytes { bytes throws(JSONError) in
                    try JSONValue(parsing: bytes)
                }
            } catch {
                return request.error(.malformedJSON(error.description))
            }
            let target: AdminOperations.PurgeTarget
            switch AdminOperations.purgeTarget(from: parsed) {
            case .success(let found): target = found
            case .failure(let error): return request.error(error)
            }
            let purge = admin.purge
            let isHead = request.isHead
            let promise = request.eventLoop.makePromise(of: PreparedResponse.self)
            promise.completeWithTask {
                switch await purge(target) {
                case .success(let json):
                    PreparedResponse(status: .ok, json: json, requestID: nil, isHead: isHead)
                case .failure(let error):
                    PreparedResponse(error: error, requestID: nil, isHead: isHead)
                }
            }
            return .pending(promise.futureResult)
        }
    }
}
