public import RelayCore
import Synchronization

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

/// Completed results by RequestKey (DESIGN.md "Request path": `ResultIndex[key]`).
///
/// A hash is never trusted alone: `lookup` compares the stored model and canonical input byte for byte, so a
/// collision costs a miss, never a wrong answer. Expired entries are dropped when met and by `sweep`.
public final class ResultIndex: Sendable {
    private let entries = Mutex<[RequestKey: CachedResult]>([:])

    public init() {}

    public func lookup(_ key: RequestKey, modelID: String, canonicalInput: [UInt8], now: Timestamp = .now()) -> CachedResult? {
        entries.withLock { entries in
            guard let entry = entries[key] else { return nil }
            guard entry.expiresAt > now else {
                entries[key] = nil
                return nil
            }
            guard entry.modelID == modelID, entry.canonicalInput == canonicalInput else { return nil }
            return entry
        }
    }

    /// Stores (or replaces) the entry for `key`.
    public func store(_ key: RequestKey, _ result: CachedResult) {
        entries.withLock { $0[key] = result }
    }

    @discardableResult
    public func remove(_ key: RequestKey) -> Bool {
        entries.withLock { $0.removeValue(forKey: key) != nil }
    }

    /// Drops expired entries; returns how many.
    @discardableResult
    public func sweep(now: Timestamp = .now()) -> Int {
        entries.withLock { entries in
            let before = entries.count
            entries = entries.filter { $0.value.expiresAt > now }
            return before - entries.count
        }
    }

    public var count: Int { entries.withLock { $0.count } }
}
