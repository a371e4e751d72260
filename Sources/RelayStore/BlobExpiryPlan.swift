public import RelayCore

/// Which blobs one sweep deletes: pure decision logic over what is on disk, what results reference and when each
/// blob was last used, so it is tested without a disk (STYLE.md rule 1).
///
/// Two rules, in order:
/// 1. **Garbage**: a blob no result references, unused (neither stored nor served) for the grace period. The grace
///    period protects a blob a job has just put and whose result manifest is not stored yet, and an upload a client
///    is still using.
/// 2. **Budget**: when the remaining bytes exceed the high watermark, referenced blobs are evicted least recently
///    used first until they fit under the low watermark (hysteresis: one sweep frees a good chunk instead of
///    evicting a blob per put). Unreferenced blobs inside the grace period are never evicted: they belong to work
///    in flight.
public struct BlobExpiryPlan: Sendable, Hashable {
    /// One blob as the planner sees it.
    public struct Blob: Sendable, Hashable {
        public var digest: Digest128
        /// Bytes on disk: what the budget counts.
        public var storedSize: Int
        /// Seconds since 1970: the later of when it was stored and when it was last served (`BlobExpiry.touch`).
        public var lastUsed: Double
        /// Some cached result points at it.
        public var referenced: Bool

        public init(digest: Digest128, storedSize: Int, lastUsed: Double, referenced: Bool) {
            self.digest = digest
            self.storedSize = storedSize
            self.lastUsed = lastUsed
            self.referenced = referenced
        }
    }

    /// The byte budget and the grace period.
    public struct Budget: Sendable, Hashable {
        /// Bytes on disk the blobs may use; nil for no budget (garbage is still collected).
        public var maxBytes: Int?
        /// Eviction starts above this fraction of `maxBytes`…
        public var highWatermark: Double
        /// …and stops at or below this one.
        public var lowWatermark: Double
        /// How long an unreferenced blob is kept after its last use.
        public var gracePeriodSeconds: Double

        public init(
            maxBytes: Int? = nil,
            highWatermark: Double = 0.95,
            lowWatermark: Double = 0.85,
            gracePeriodSeconds: Double = 600
        ) {
            self.maxBytes = maxBytes
            self.highWatermark = min(max(highWatermark, 0), 1)
            self.lowWatermark = min(max(lowWatermark, 0), self.highWatermark)
            self.gracePeriodSeconds = max(0, gracePeriodSeconds)
        }

        /// Above this many bytes a sweep evicts; nil without a budget.
        public var highBytes: Int? { maxBytes.map { Int((Double($0) * highWatermark).rounded(.down)) } }
        /// A sweep that evicts stops at or below this many bytes.
        public var lowBytes: Int? { maxBytes.map { Int((Double($0) * lowWatermark).rounded(.down)) } }
    }

    /// Unreferenced and idle past the grace period.
    public var garbage: [Digest128] = []
    /// Least recently used first, to get under the low watermark.
    public var evicted: [Digest128] = []
    public var garbageBytes = 0
    public var evictedBytes = 0
    public var bytesBefore = 0
    public var bytesAfter = 0

    public init(blobs: [Blob], budget: Budget, now: Double) {
        let idleBefore = now - budget.gracePeriodSeconds
        var candidates: [Blob] = []
        for blob in blobs {
            bytesBefore += blob.storedSize
            if !blob.referenced && blob.lastUsed < idleBefore {
                garbage.append(blob.digest)
                garbageBytes += blob.storedSize
            } else if blob.referenced {
                candidates.append(blob)
            }
        }
        bytesAfter = bytesBefore - garbageBytes

        guard let high = budget.highBytes, let low = budget.lowBytes, bytesAfter > high else { return }
        // Oldest use first; among equals the bigger blob (frees more for the same loss), then by digest so the
        // order is the same on every run.
        candidates.sort { a, b in
            if a.lastUsed != b.lastUsed { return a.lastUsed < b.lastUsed }
            if a.storedSize != b.storedSize { return a.storedSize > b.storedSize }
            return a.digest < b.digest
        }
        for blob in candidates {
            guard bytesAfter > low else { break }
            evicted.append(blob.digest)
            evictedBytes += blob.storedSize
            bytesAfter -= blob.storedSize
        }
    }
}
