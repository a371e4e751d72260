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
