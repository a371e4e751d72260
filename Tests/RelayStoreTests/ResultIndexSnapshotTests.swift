import Foundation
import NIOCore
import NIOPosix
import RelayCore
import Testing

@testable import RelayStore

@Suite("ResultIndex snapshot")
struct ResultIndexSnapshotTests {
    // MARK: - Format

    @Test func snapshotRoundTrips() throws {
        let records = (0..<50).map { number in
            ResultManifestSnapshot.Record(
                key: ResultFixtures.key(number),
                storedAt: Double(number),
                expiresAt: Double(number) + 0.5,
                size: number * 10,
                digests: (0..<(number % 4)).map { Fixtures.hasher.digest([UInt8(number), UInt8($0)]) }
            )
        }
        for list in [[], records, Array(records.prefix(1)), Array(records.filter { $0.digests.isEmpty })] {
            let snapshot = ResultManifestSnapshot(createdAt: 1_234.5, records: list)
            let decoded = try ResultManifestSnapshot(decoding: snapshot.encoded())
            #expect(decoded.createdAt == 1_234.5)
            #expect(decoded.records == list)
        }
        let bytes = ResultManifestSnapshot(createdAt: 1, records: records).encoded()
        for length in [0, 27, 28, bytes.readableBytes - 1] {
            #expect(throws: ResultManifestError.self) {
                try ResultManifestSnapshot(decoding: bytes.getSlice(at: 0, length: length)!)
            }
        }
    }

    // MARK: - Load and write

    @Test func snapshotPlusRescanOfChangedShards() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = ResultFixtures.durableIndex(in: directory)
        try await first.load()
        for number in 0..<300 { first.store(ResultFixtures.key(number), ResultFixtures.success(number)) }
        await first.flush()
        #expect(try await first.writeSnapshot())
        // Age everything so that only what changes next looks newer than the snapshot.
        try ageResults(directory, by: 3600)

        // After the snapshot: one new, one replaced, one removed; then a crash (no new snapshot).
        first.store(ResultFixtures.key(1000), ResultFixtures.success(1000))
        first.store(ResultFixtures.key(5), ResultFixtures.success(5, seconds: 55))
        first.remove(ResultFixtures.key(6))
        await first.flush()

        let second = ResultFixtures.durableIndex(in: directory)
        let report = try await second.load()
        #expect(report.usedSnapshot)
        #expect(report.scannedShards <= 3)
        #expect(report.headersRead == 2)
        #expect(report.entries == 300)
        #expect(ResultFixtures.lookup(second, 1000) != nil)
        #expect(ResultFixtures.lookup(second, 6) == nil)
        if case .success(_, let seconds) = ResultFixtures.lookup(second, 5)?.outcome {
            #expect(seconds == 55)
        } else {
            Issue.record("entry 5 missing")
        }
        for number in 0..<300 where number != 6 {
            #expect(ResultFixtures.lookup(second, number) != nil, "entry \(number)")
        }
    }

    @Test func manifestTheSnapshotDoesNotListIsAnOrphan() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = ResultFixtures.durableIndex(in: directory)
        try await first.load()
        for number in 0..<3 { first.store(ResultFixtures.key(number), ResultFixtures.success(number)) }
        await first.flush()
        // Removed before the snapshot, but the unlink "did not happen" (a crash): put the file back, older than the
        // snapshot, in a shard that changed since (so it is rescanned).
        let path = ResultFixtures.manifestPath(directory, ResultFixtures.key(1))
        let saved = try #require(Fixtures.contents(path))
        first.remove(ResultFixtures.key(1))
        await first.flush()
        #expect(try await first.writeSnapshot())
        try Fixtures.write(saved, to: path)
        try ageResults(directory, by: 3600, shards: false, snapshot: false)

        let second = ResultFixtures.durableIndex(in: directory)
        let report = try await second.load()
        #expect(report.orphansRemoved == 1)
        #expect(ResultFixtures.lookup(second, 1) == nil)
        await second.flush()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func damagedSnapshotFallsBackToAFullScan() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = ResultFixtures.durableIndex(in: directory)
        try await first.load()
        for number in 0..<20 { first.store(ResultFixtures.key(number), ResultFixtures.success(number)) }
        await first.flush()
        #expect(try await first.writeSnapshot())
        let snapshot = ResultFixtures.resultsDirectory(directory) + "/index.snapshot"
        var bytes = try #require(Fixtures.contents(snapshot))
        bytes[30] ^= 1
        try Fixtures.write(bytes, to: snapshot)

        let second = ResultFixtures.durableIndex(in: directory)
        let report = try await second.load()
        #expect(!report.usedSnapshot)
        #expect(report.snapshotProblem != nil)
        #expect(report.entries == 20)
    }

    @Test func snapshotListsWhatIsOnDiskWhileANewerVersionIsQueued() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let index = ResultIndex(directory: directory.path + "/data", threadPool: pool)
        try await index.load()
        let old = Fixtures.hasher.digest(Array("v1".utf8))
        let new = Fixtures.hasher.digest(Array("v2".utf8))
        let key = ResultFixtures.key(1)
        index.store(key, ResultFixtures.success(1, digests: [old]))
        await index.flush()

        // Hold the pool's only thread: version 2 stays queued while the snapshot is collected.
        let gate = DispatchSemaphore(value: 0)
        pool.submit { _ in gate.wait() }
        index.store(key, ResultFixtures.success(1, digests: [new]))
        #expect(index.references(new) && !index.references(old), "in memory the newest version counts")
        // Runs at once, up to its first suspension: the snapshot is collected, and its write waits for the pool.
        let snapshotting = Task.immediate { try await index.writeSnapshot() }
        gate.signal()
        #expect(try await snapshotting.value)
        await index.flush()
        try await pool.shutdownGracefully()

        let path = ResultFixtures.resultsDirectory(directory) + "/index.snapshot"
        let snapshot = try ResultManifestSnapshot(decoding: ByteBuffer(bytes: try #require(Fixtures.contents(path))))
        #expect(snapshot.records.map(\.digests) == [[old]], "the snapshot lists the version the file held")
        // Version 2 landed after the snapshot: its shard is rescanned, so a restart knows version 2.
        let reloaded = ResultFixtures.durableIndex(in: directory)
        let report = try await reloaded.load()
        #expect(report.headersRead == 1)
        #expect(reloaded.references(new) && !reloaded.references(old))
        #expect(ResultIndex.referencedDigests(in: try #require(ResultFixtures.lookup(reloaded, 1)).json) == [new])
    }

    @Test func snapshotIsNotWrittenBeforeLoad() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let index = ResultFixtures.durableIndex(in: directory)
        index.store(ResultFixtures.key(1), ResultFixtures.success(1))  // before load: kept, and wins over disk
        #expect(try await index.writeSnapshot() == false)
        try await index.load()
        #expect(try await index.writeSnapshot())
        #expect(try await ResultIndex().writeSnapshot() == false)
    }

    /// Moves manifests (and shard directories, and the snapshot's clock) `seconds` into the past, as if written long
    /// ago; the snapshot is made to look taken a minute after the manifests.
    private func ageResults(
        _ directory: TemporaryDirectory,
        by seconds: Double,
        shards: Bool = true,
        snapshot: Bool = true
    ) throws {
        let root = ResultFixtures.resultsDirectory(directory)
        let past = Timestamp.now().secondsSinceEpoch - seconds
        for file in Fixtures.files(under: root) where !file.hasPrefix("corrupt") && !file.hasPrefix("index.snapshot") {
            try ResultFixtures.setModified(root + "/" + file, to: past)
        }
        if shards {
            for name in try FileManager.default.contentsOfDirectory(atPath: root) where name.count == 2 {
                try ResultFixtures.setModified(root + "/" + name, to: past)
            }
        }
        if snapshot {
            let path = root + "/index.snapshot"
            var decoded = try ResultManifestSnapshot(decoding: ByteBuffer(bytes: try #require(Fixtures.contents(path))))
            decoded.createdAt -= seconds - 60
            // Rewriting it changes the results directory, which is not a shard.
            try Fixtures.write(Array(decoded.encoded().readableBytesView), to: path)
        }
    }
}
