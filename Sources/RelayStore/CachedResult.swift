public import RelayCore

/// A finished generation kept for reuse: what was asked (model + canonical input), what came back, until when.
public struct CachedResult: Sendable, Hashable {
    public enum Outcome: Sendable, Hashable {
        case success(result: JSONValue, inferenceSeconds: Double?)
        /// A deterministic validation failure (422), kept briefly so a client retrying it does not reach upstream.
        case rejected(FalError)
    }

    public let modelID: String
    public let canonicalInput: [UInt8]
    public let outcome: Outcome
    public let storedAt: Timestamp
    public let expiresAt: Timestamp

    public init(modelID: String, canonicalInput: [UInt8], outcome: Outcome, storedAt: Timestamp, expiresAt: Timestamp) {
        self.modelID = modelID
        self.canonicalInput = canonicalInput
        self.outcome = outcome
        self.storedAt = storedAt
        self.expiresAt = expiresAt
    }

    /// Seconds of freshness left at `now` (for `Cache-Status: …; ttl=`).
    public func ttl(at now: Timestamp) -> Int {
        max(0, Int((expiresAt.secondsSinceEpoch - now.secondsSinceEpoch).rounded(.down)))
    }
}
