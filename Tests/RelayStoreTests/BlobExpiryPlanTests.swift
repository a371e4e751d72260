import RelayCore
import Testing

@testable import RelayStore

@Suite("BlobExpiryPlan")
struct BlobExpiryPlanTests {
    static let now = 1_800_000_000.0

    static func blob(_ number: Int, size: Int = 1_000, lastUsed: Double, referenced: Bool = true) -> BlobExpiryPlan.Blob
    {
        BlobExpiryPlan.Blob(
            digest: Digest128(high: 0, low: UInt64(number)),
            storedSize: size,
            lastUsed: lastUsed,
            referenced: referenced
        )
    }

    static func digests(_ numbers: [Int]) -> [Digest128] { numbers.map { Digest128(high: 0, low: UInt64($0)) } }

    @Test func underTheHighWatermarkNothingIsEvicted() {
        let blobs = (0..<9).map { Self.blob($0, lastUsed: Self.now - Double($0)) }
        let plan = BlobExpiryPlan(blobs: blobs, budget: .init(maxBytes: 10_000), now: Self.now)
        #expect(plan.bytesBefore == 9_000)  // 90 %: between the watermarks
        #expect(plan.evicted.isEmpty)
        #expect(plan.garbage.isEmpty)
        #expect(plan.bytesAfter == 9_000)
    }

    @Test func evictsLeastRecentlyUsedFirstDownToTheLowWatermark() {
        // Used in a scrambled order; 10 × 1,000 bytes against a 10,000-byte budget (high 9,500, low 8,500).
        let order = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]  // 3 is the least recently used, 4 the most
        let blobs = order.enumerated().map { rank, number in
            Self.blob(number, lastUsed: Self.now - 1_000 + Double(rank))
        }
        let plan = BlobExpiryPlan(blobs: blobs.shuffled(), budget: .init(maxBytes: 10_000), now: Self.now)
        #expect(plan.evicted == Self.digests([3, 7]))
        #expect(plan.bytesAfter == 8_000)
        #expect(plan.evictedBytes == 2_000)
    }

    @Test func stopsAsSoonAsItIsAtOrBelowTheLowWatermark() {
        let budget = BlobExpiryPlan.Budget(maxBytes: 1_000, highWatermark: 0.9, lowWatermark: 0.5)
        #expect(budget.highBytes == 900)
        #expect(budget.lowBytes == 500)
        let blobs = [
            Self.blob(1, size: 300, lastUsed: 10), Self.blob(2, size: 300, lastUsed: 20),
            Self.blob(3, size: 300, lastUsed: 30),
            Self.blob(4, size: 100, lastUsed: 40),
        ]
        let plan = BlobExpiryPlan(blobs: blobs, budget: budget, now: Self.now)
        #expect(plan.evicted == Self.digests([1, 2]))  // 1,000 → 700 → 400
        #expect(plan.bytesAfter == 400)
    }

    @Test func unreferencedBlobsAreGarbageOnlyAfterTheGracePeriod() {
        let blobs = [
            Self.blob(1, lastUsed: Self.now - 3_600, referenced: false),  // garbage
            Self.blob(2, lastUsed: Self.now - 60, referenced: false),  // a job's output before its manifest
            Self.blob(3, lastUsed: Self.now - 86_400, referenced: true),  // old but referenced
        ]
        let plan = BlobExpiryPlan(blobs: blobs, budget: .init(maxBytes: nil, gracePeriodSeconds: 600), now: Self.now)
        #expect(plan.garbage == Self.digests([1]))
        #expect(plan.evicted.isEmpty)
        #expect(plan.bytesAfter == 2_000)
    }

    @Test func garbageCountsBeforeTheBudgetAndFreshWorkIsNeverEvicted() {
        let blobs = [
            Self.blob(1, size: 5_000, lastUsed: Self.now - 3_600, referenced: false),  // garbage: frees half
            Self.blob(2, size: 4_000, lastUsed: Self.now - 10, referenced: false),  // in flight: protected
            Self.blob(3, size: 1_000, lastUsed: Self.now - 100),
            Self.blob(4, size: 1_000, lastUsed: Self.now - 50),
        ]
        // 11,000 bytes; after garbage 6,000 > 5,700 (95 % of 6,000): evict referenced LRU to ≤ 5,100.
        let plan = BlobExpiryPlan(blobs: blobs, budget: .init(maxBytes: 6_000), now: Self.now)
        #expect(plan.garbage == Self.digests([1]))
        #expect(plan.evicted == Self.digests([3]))
        #expect(plan.bytesAfter == 5_000)
    }

    @Test func tiesBreakTowardsTheBiggerBlobThenTheDigest() {
        let blobs = [
            Self.blob(1, size: 100, lastUsed: 5), Self.blob(2, size: 900, lastUsed: 5),
            Self.blob(3, size: 100, lastUsed: 5),
        ]
        let plan = BlobExpiryPlan(
            blobs: blobs,
            budget: .init(maxBytes: 1_000, highWatermark: 0.5, lowWatermark: 0.05),
            now: Self.now
        )
        #expect(plan.evicted == Self.digests([2, 1, 3]))
        let watermarks = BlobExpiryPlan.Budget(maxBytes: 100, highWatermark: 0.5, lowWatermark: 0.9)
        #expect(watermarks.lowWatermark == 0.5, "low is clamped to high")
    }
}
