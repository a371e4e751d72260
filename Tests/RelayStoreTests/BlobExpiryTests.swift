import Foundation
import NIOPosix
import RelayCore
import Synchronization
import Testing

@testable import RelayStore

@Suite("BlobExpiry")
struct BlobExpiryTests {
    /// A store, a durable result index on the same data directory, and blobs of 1,000 random bytes each.
    struct Setup {
        let directory: TemporaryDirectory
        let store: BlobStore
        let results: ResultIndex

        init() async throws {
            directory = try TemporaryDirectory()
            store = try Fixtures.store(in: directory)
            results = ResultFixtures.durableIndex(in: directory)
            try await results.load()
        }

        func put(_ number: Int, size: Int = 1_000) async throws -> Digest128 {
            try await store.put(Fixtures.randomBytes(size, seed: UInt64(number) &+ 1), mediaType: .png).digest
        }

        /// Makes the blob's file look stored `secondsAgo` ago.
        func age(_ digest: Digest128, secondsAgo: Double) throws {
            try ResultFixtures.setModified(
                store.path(for: digest, compressed: false),
                to: Timestamp.now().secondsSinceEpoch - secondsAgo
            )
        }

        func exists(_ digest: Digest128) -> Bool {
            FileManager.default.fileExists(atPath: store.path(for: digest, compressed: false))
        }
    }

    @Test func evictsLeastRecentlyUsedFirstAndStopsAtTheLowWatermark() async throws {
        let setup = try await Setup()
        defer { setup.directory.remove() }
        let now = Timestamp.now().secondsSinceEpoch
        var digests: [Digest128] = []
        for number in 0..<10 {
            let digest = try await setup.put(number)
            try setup.age(digest, secondsAgo: 7_200)
            setup.results.store(
                ResultFixtures.key(number),
                ResultFixtures.success(number, digests: [digest], storedAt: now - 7_000, ttl: 86_400)
            )
            digests.append(digest)
        }
        // 10,000 bytes against 10,000 (high 9,500, low 8,500): two must go, the two least recently served.
        let expiry = BlobExpiry(store: setup.store, results: setup.results, configuration: .init(maxBytes: 10_000))
        let order = [6, 2, 9, 0, 4, 1, 8, 3, 7, 5]  // served in this order: 6 longest ago
        for (rank, number) in order.enumerated() {
            expiry.touch(digests[number], now: Timestamp(secondsSinceEpoch: now - 3_600 + Double(rank)))
        }

        let report = try await expiry.sweep()
        #expect(report.blobs == 10)
        #expect(report.bytesBefore == 10_000)
        #expect(report.evicted == 2)
        #expect(report.bytesAfter == 8_000)
        #expect(report.collected == 0)
        #expect(report.resultsRemovedWithBlobs == 2)
        #expect(report.error == nil)
        #expect(expiry.bytes == 8_000)
        #expect(expiry.evictions == 2)
        for number in 0..<10 {
            let evicted = number == 6 || number == 2
            #expect(setup.exists(digests[number]) != evicted, "blob \(number)")
            // A result never outlives its blob.
            #expect((ResultFixtures.lookup(setup.results, number) == nil) == evicted, "result \(number)")
        }

        // Between the watermarks now: the next sweep evicts nothing.
        let again = try await expiry.sweep()
        #expect(again.evicted == 0)
        #expect(again.bytesBefore == 8_000)
        #expect(expiry.evictions == 2)

        // And the removed results' manifests are gone from disk too.
        await setup.results.flush()
        for number in [6, 2] {
            #expect(
                !FileManager.default.fileExists(
                    atPath: ResultFixtures.manifestPath(setup.directory, ResultFixtures.key(number))
                )
            )
        }
    }

    @Test func referencedBlobsOutliveGarbageCollection() async throws {
        let setup = try await Setup()
        defer { setup.directory.remove() }
        let referenced = try await setup.put(1)
        let garbage = try await setup.put(2)
        let fresh = try await setup.put(3)  // a job's output whose manifest is not stored yet
        let served = try await setup.put(4)  // an upload a client keeps using
        for digest in [referenced, garbage, served] { try setup.age(digest, secondsAgo: 86_400) }
        setup.results.store(ResultFixtures.key(1), ResultFixtures.success(1, digests: [referenced]))

        let expiry = BlobExpiry(store: setup.store, results: setup.results, configuration: .init(maxBytes: nil))
        expiry.touch(served)
        let report = try await expiry.sweep()
        #expect(report.collected == 1)
        #expect(report.collectedBytes == 1_000)
        #expect(report.evicted == 0)
        #expect(setup.exists(referenced))
        #expect(!setup.exists(garbage))
        #expect(setup.exists(fresh))
        #expect(setup.exists(served))
        #expect(ResultFixtures.lookup(setup.results, 1) != nil)
        #expect(expiry.bytes == 3_000)
        #expect(expiry.collected == 1)

        // Once its result expires, the blob is garbage too (it was stored long ago).
        setup.results.remove(ResultFixtures.key(1))
        let later = try await expiry.sweep()
        #expect(later.collected == 1)
        #expect(!setup.exists(referenced))
    }

    @Test func evictingABlobRemovesEveryResultThatReferencesIt() async throws {
        let setup = try await Setup()
        defer { setup.directory.remove() }
        let now = Timestamp.now().secondsSinceEpoch
        let shared = try await setup.put(1, size: 4_000)  // two results show the same picture
        let other = try await setup.put(2, size: 1_000)
        let kept = try await setup.put(3, size: 1_000)
        try setup.age(shared, secondsAgo: 7_200)
        try setup.age(other, secondsAgo: 7_200)
        setup.results.store(
            ResultFixtures.key(1),
            ResultFixtures.success(1, digests: [shared, other], storedAt: now - 7_000, ttl: 86_400)
        )
        setup.results.store(
            ResultFixtures.key(2),
            ResultFixtures.success(2, digests: [shared], storedAt: now - 7_000, ttl: 86_400)
        )
        setup.results.store(ResultFixtures.key(3), ResultFixtures.success(3, digests: [kept], storedAt: now - 10))

        // 6,000 bytes against 5,000: the shared blob (least recently used, biggest) goes.
        let expiry = BlobExpiry(store: setup.store, results: setup.results, configuration: .init(maxBytes: 5_000))
        expiry.touch(other, now: Timestamp(secondsSinceEpoch: now - 7_000))
        let report = try await expiry.sweep()
        #expect(report.evicted == 1)
        #expect(!setup.exists(shared))
        #expect(report.resultsRemovedWithBlobs == 2)
        #expect(ResultFixtures.lookup(setup.results, 1) == nil)
        #expect(ResultFixtures.lookup(setup.results, 2) == nil)
        #expect(ResultFixtures.lookup(setup.results, 3) != nil)
        // `other` lost its only result; it is stored long ago, so the next sweep collects it.
        #expect(setup.exists(other))
        #expect(!setup.results.references(other))
        #expect(try await expiry.sweep().collected == 1)
        #expect(!setup.exists(other))
        #expect(setup.exists(kept))
    }

    @Test func resultsWhoseBlobsAreGoneAreRemoved() async throws {
        let setup = try await Setup()
        defer { setup.directory.remove() }
        let now = Timestamp.now().secondsSinceEpoch
        let present = try await setup.put(1)
        let lost = Fixtures.hasher.digest(Array("never stored".utf8))
        setup.results.store(ResultFixtures.key(1), ResultFixtures.success(1, digests: [present], storedAt: now - 60))
        setup.results.store(
            ResultFixtures.key(2),
            ResultFixtures.success(2, digests: [present, lost], storedAt: now - 60)
        )
        let expiry = BlobExpiry(store: setup.store, results: setup.results, configuration: .init(maxBytes: nil))
        let report = try await expiry.sweep()
        #expect(report.resultsWithMissingBlobs == 1)
        #expect(ResultFixtures.lookup(setup.results, 1) != nil)
        #expect(ResultFixtures.lookup(setup.results, 2) == nil)

        let lenient = BlobExpiry(
            store: setup.store,
            results: setup.results,
            configuration: .init(budget: .init(), removeResultsWithMissingBlobs: false)
        )
        setup.results.store(
            ResultFixtures.key(2),
            ResultFixtures.success(2, digests: [present, lost], storedAt: now - 60)
        )
        #expect(try await lenient.sweep().resultsWithMissingBlobs == 0)
        #expect(ResultFixtures.lookup(setup.results, 2) != nil)
    }

    @Test func expiredResultsReleaseTheirBlobs() async throws {
        let setup = try await Setup()
        defer { setup.directory.remove() }
        let now = Timestamp.now().secondsSinceEpoch
        let digest = try await setup.put(1)
        try setup.age(digest, secondsAgo: 7_200)
        setup.results.store(
            ResultFixtures.key(1),
            ResultFixtures.success(1, digests: [digest], storedAt: now - 7_200, ttl: 3_600)
        )
        let expiry = BlobExpiry(store: setup.store, results: setup.results, configuration: .init(maxBytes: nil))
        let report = try await expiry.sweep()
        #expect(report.resultsExpired == 1)
        #expect(report.collected == 1)
        #expect(!setup.exists(digest))
    }

    @Test func nothingIsCollectedBeforeTheResultsAreLoaded() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let digest = try await store.put(Fixtures.randomBytes(1_000), mediaType: .png).digest
        try ResultFixtures.setModified(
            store.path(for: digest, compressed: false),
            to: Timestamp.now().secondsSinceEpoch - 86_400
        )
        let results = ResultFixtures.durableIndex(in: directory)
        results.store(ResultFixtures.key(1), ResultFixtures.success(1))  // a store before load does not make it loaded
        #expect(!results.isLoaded)
        let expiry = BlobExpiry(store: store, results: results, configuration: .init(maxBytes: 1))
        let early = try await expiry.sweep()
        #expect(early.waitedForResults)
        #expect(early.collected == 0 && early.evicted == 0)
        #expect(FileManager.default.fileExists(atPath: store.path(for: digest, compressed: false)))
        try await results.load()
        #expect(results.isLoaded)
        #expect(try await expiry.sweep().collected == 1)
        #expect(ResultIndex().isLoaded)
    }

    @Test func runSweepsEveryIntervalUntilCancelled() async throws {
        let setup = try await Setup()
        defer { setup.directory.remove() }
        let garbage = try await setup.put(1)
        try setup.age(garbage, secondsAgo: 86_400)
        let expiry = BlobExpiry(store: setup.store, results: setup.results, configuration: .init(maxBytes: nil))
        let sweeps = Counter()
        let clock = ManualClock()
        var waits = clock.sleeps.makeAsyncIterator()
        let task = Task { await expiry.run(every: .seconds(30), on: clock) { _ in sweeps.increment() } }
        // A sweep at once, then one each time the interval passes.
        for sweep in 1...3 {
            _ = await waits.next()
            #expect(sweeps.value == sweep)
            if sweep < 3 { clock.advance(by: .seconds(30)) }
        }
        clock.advance(by: .seconds(29))
        #expect(sweeps.value == 3, "not before the interval passed")
        task.cancel()
        await task.value
        #expect(sweeps.value == 3)
        #expect(!setup.exists(garbage))
        #expect(expiry.collected == 1)
    }

    final class Counter: Sendable {
        private let count = Mutex(0)
        func increment() { count.withLock { $0 += 1 } }
        var value: Int { count.withLock { $0 } }
    }
}

extension BlobExpiryTests {
    /// A request's media lifetime (`X-Fal-Object-Lifecycle-Preference`): its blobs go at the deadline, without the
    /// grace period, once no result points at them; not before, and a pinned upload goes too.
    @Test func blobsGoAtTheirDeadlineOnceNoResultPointsAtThem() async throws {
        let setup = try await Setup()
        defer { setup.directory.remove() }
        let now = Timestamp.now().secondsSinceEpoch
        let free = try await setup.put(1)
        let referenced = try await setup.put(2)
        let pinned = try await setup.put(3)
        let other = try await setup.put(4)
        setup.results.store(
            ResultFixtures.key(2),
            ResultFixtures.success(2, digests: [referenced], storedAt: now, ttl: 86_400)
        )
        let expiry = BlobExpiry(
            store: setup.store,
            results: setup.results,
            configuration: .init(maxBytes: nil),
            pinned: { [pinned] }
        )
        let deadline = Timestamp(secondsSinceEpoch: now + 60)
        expiry.delete([free, referenced, pinned], at: deadline)

        // Before the deadline, fresh blobs are within the grace period: nothing goes.
        _ = try await expiry.sweep(now: Timestamp(secondsSinceEpoch: now + 59))
        #expect(setup.exists(free) && setup.exists(referenced) && setup.exists(pinned) && setup.exists(other))

        let due = try await expiry.sweep(now: Timestamp(secondsSinceEpoch: now + 61))
        #expect(!setup.exists(free) && !setup.exists(pinned), "due, unreferenced: gone without the grace period")
        #expect(setup.exists(referenced), "a result still points at it")
        #expect(setup.exists(other), "no deadline: the grace period still holds")
        #expect(due.collected == 2)

        // Once its result is gone, the next sweep deletes it.
        setup.results.remove(ResultFixtures.key(2))
        _ = try await expiry.sweep(now: Timestamp(secondsSinceEpoch: now + 90))
        #expect(!setup.exists(referenced) && setup.exists(other))
    }
}
