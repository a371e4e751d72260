import NIOCore
import NIOHTTP1
public import RelayCore

/// What the admin API does beyond the HTTP layer, supplied by the application (purging touches the result
/// index, the media store and the job table; draining reaches the service group).
public struct AdminOperations: Sendable {
    /// What to purge.
    public enum PurgeTarget: Sendable, Hashable {
        case key(Digest128)
        case model(String)
        case digest(Digest128)
    }

    /// Removes cached results (and for a digest the blob itself); returns what went as JSON.
    public var purge: @Sendable (PurgeTarget) async -> Result<JSONValue, FalError>
    /// Cache statistics beyond the live counters (entries, store bytes, evictions).
    public var cacheStatistics: @Sendable () -> JSONObject
    /// Stop being ready at once; with `shutdown`, stop serving after the drain deadline.
    public var drain: @Sendable (_ shutdown: Bool) -> Void

    public init(
        purge: @escaping @Sendable (PurgeTarget) async -> Result<JSONValue, FalError> = { _ in
            .failure(.unavailable("purge is not configured"))
        },
        cacheStatistics: @escaping @Sendable () -> JSONObject = { [:] },
        drain: @escaping @Sendable (Bool) -> Void = { _ in }
    ) {
        self.purge = purge
        self.cacheStatistics = cacheStatistics
        self.drain = drain
    }

    /// `{"key": "<32 hex>"}`, `{"model": "owner/alias"}` or `{"digest": "<32 hex>"}` — exactly one.
    public static func purgeTarget(from body: JSONValue) -> Result<PurgeTarget, FalError> {
        guard let object = body.objectValue else {
            return .failure(
                .validation(.init(location: ["body"], message: "value is not a valid dict", type: "type_error.dict"))
            )
        }
        let named = ["key", "model", "digest"].filter { object[$0] != nil }
        guard named.count == 1, let name = named.first, let value = object[name]?.stringValue else {
            return .failure(
                .validation(
                    .init(
                        location: ["body"],
                        message: "give exactly one of key, model or digest, as a string",
                        type: "value_error"
                    )
                )
            )
        }
        switch name {
        case "model":
            return .success(.model(value))
        default:
            // Accept the Cache-Status form too: key="…".
            let hex = value.hasPrefix("key=\"") && value.hasSuffix("\"") ? String(value.dropFirst(5).dropLast()) : value
            guard let digest = Digest128(hex: hex[...]) else {
                return .failure(.validation(.invalid(name, "expected 32 hexadecimal digits")))
            }
            return .success(name == "key" ? .key(digest) : .digest(digest))
        }
    }
}

extension RelayHTTPHandler {
    func serveAdmin(_ action: AdminAction, context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        switch action {
        case .stats:
            var stats = services.jobs.statistics.snapshot().objectValue ?? [:]
            stats["cache"] = .object(services.admin.cacheStatistics())
            respond(
                context: context,
                head: head,
                status: .ok,
                json: .object(stats),
                extraHeaders: [("cache-control", "no-store")]
            )
        case .drain:
            let request =
                (try? body.withUnsafeReadableBytes { bytes throws(JSONError) in try JSONValue(parsing: bytes) }) ?? [:]
            let shutdown = request["shutdown"]?.boolValue ?? false
            services.readiness.set(false)
            services.admin.drain(shutdown)
            services.logger.notice("drain requested through the admin API", metadata: ["shutdown": "\(shutdown)"])
            respond(
                context: context,
                head: head,
                status: .accepted,
                json: ["status": "draining", "shutdown": .bool(shutdown)]
            )
        case .purge:
            let parsed: JSONValue
            do {
                parsed = try body.withUnsafeReadableBytes { bytes throws(JSONError) in try JSONValue(parsing: bytes) }
            } catch {
                return respondError(context: context, head: head, error: .malformedJSON(error.description))
            }
            let target: AdminOperations.PurgeTarget
            switch AdminOperations.purgeTarget(from: parsed) {
            case .success(let found): target = found
            case .failure(let error): return respondError(context: context, head: head, error: error)
            }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let purge = services.admin.purge
            let keepAlive = head.isKeepAlive
            let promise = context.eventLoop.makePromise(of: Result<JSONValue, FalError>.self)
            promise.completeWithTask { await purge(target) }
            promise.futureResult.whenSuccess { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let json):
                    handler.respond(context: context, keepAlive: keepAlive, status: .ok, json: json, requestID: nil)
                case .failure(let error):
                    handler.respondError(context: context, keepAlive: keepAlive, error: error, requestID: nil)
                }
            }
        }
    }
}
