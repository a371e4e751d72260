import Foundation
import NIOCore
import NIOPosix
import RelayCore
import Testing

@testable import RelayStore

@Suite("ResultIndex durability")
struct ResultIndexDurabilityTests {
    // MARK: - Manifest format

    @Test func manifestRoundTripsEveryOutcome() throws {
        let digests = [Fixtures.hasher.digest([1]), Fixtures.hasher.digest([2])]
        let cases: [CachedResult] = [
            ResultFixtures.success(1, digests: digests),
            ResultFixtures.success(2, seconds: nil),
            ResultFixtures.rejection(3),
        ]
        for result in cases {
            let key = ResultFixtures.key(7)
            let manifest = ResultManifest(
                key: key,
                result: result,
                digests: ResultIndex.referencedDigests(in: result.json)
            )
            let bytes = try #require(manifest.encoded())
            let decoded = try ResultManifest.decode(bytes, expectedKey: key)
            #expect(decoded == manifest)
            #expect(decoded.result == result)
            let header = try ResultManifest.decodeHeader(bytes, fileSize: bytes.readableBytes)
            #expect(header.expiresAt == result.expiresAt.secondsSinceEpoch)
            #expect(header.digests == manifest.digests)
        }
    }

    @Test func manifestRejectsDamage() throws {
        let key = ResultFixtures.key(1)
        let manifest = ResultManifest(key: key, result: ResultFixtures.success(1), digests: [])
        let bytes = try #require(manifest.encoded())
        // Every single flipped byte is caught (by magic, version, length or checksum).
        for offset in stride(from: 0, to: bytes.readableBytes, by: 7) {
            var damaged = bytes
            damaged.setInteger(bytes.getInteger(at: offset, as: UInt8.self)! ^ 0x40, at: offset)
            #expect(throws: ResultManifestError.self) { try ResultManifest.decode(damaged, expectedKey: key) }
        }
        // Truncated anywhere.
        for length in [0, 10, 47, 48, bytes.readableBytes - 1] {
            #expect(throws: ResultManifestError.self) {
                try ResultManifest.decode(bytes.getSlice(at: 0, length: length)!, expectedKey: key)
            }
        }
        // Filed under another key.
        #expect(throws: ResultManifestError.self) {
            try ResultManifest.decode(bytes, expectedKey: ResultFixtures.key(2))
        }
    }

    @Test func referencedDigestsFindsRelayFileURLs() {
        let a = Fixtures.hasher.digest([1])
        let b = Fixtures.hasher.digest([2])
        let c = Fixtures.hasher.digest([3])
        let result: JSONValue = [
            "images": [
                ["url": .string("https://relay.example/files/\(a.hex).png")], ["url": .string("/files/\(b.hex).webp")],
            ],
            "video": ["url": .string("http://x/files/\(a.hex).mp4")],  // same blob, another type: once
            "text": .string("see /files/\(c.hex).txt and /files/\(c.hex.prefix(31)).txt and /files/\(c.hex)x"),
            "not": .string("/files/\(c.hex.uppercased()).png"),  // upper case hex is still a digest
            "numbers": [1, 2, 3],
        ]
        #expect(ResultIndex.referencedDigests(in: result) == [a, b, c])
        #expect(ResultIndex.referencedDigests(in: ["url": "https://v3.fal.media/files/monkey/abc.png"]) == [])
    }

    // MARK: - Round trips

    @Test func memoryNeverReadsAFileAndTheReadRunsOnThePool() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = ResultFixtures.durableIndex(in: directory)
        try await first.load()
        first.store(ResultFixtures.key(1), ResultFixtures.success(1))
        await first.flush()

        let second = ResultFixtures.durableIndex(in: directory)
        try await second.load()
        func probe(_ number: Int, input: Int? = nil) -> ResultIndex.Probe {
            second.probe(
                ResultFixtures.key(number),
                modelID: "fal-ai/flux/dev",
                canonicalInput: ResultFixtures.input(input ?? number)
            )
        }
        // Known, not decoded: memory says so instead of reading the manifest.
        #expect(probe(1) == .onDisk)
        #expect(probe(2) == .miss)
        let read = await second.read(ResultFixtures.key(1))
        #expect(read == ResultFixtures.lookup(first, 1))
        #expect(probe(1) == .hit(try #require(read)))
        // A hash is still never trusted alone.
        #expect(probe(1, input: 2) == .miss)
        #expect(await second.read(ResultFixtures.key(2)) == nil)
    }

    @Test func durableRoundTripAcrossInstances() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let digest = Fixtures.hasher.digest([9])
        let first = ResultFixtures.durableIndex(in: directory)
        try await first.load()
        first.store(ResultFixtures.key(1), ResultFixtures.success(1, digests: [digest]))
        first.store(ResultFixtures.key(2), ResultFixtures.rejection(2))
        first.store(ResultFixtures.key(3), ResultFixtures.success(3, seconds: nil))
        await first.flush()
        #expect(first.pendingWrites == 0)
        #expect(first.writeFailures == 0)
        #expect(FileManager.default.fileExists(atPath: ResultFixtures.manifestPath(directory, ResultFixtures.key(1))))

        let second = ResultFixtures.durableIndex(in: directory)
        let report = try await second.load()
        #expect(report.entries == 3)
        #expect(!report.usedSnapshot)
        #expect(second.count == 3)
        for number in 1...3 {
            let hit = try #require(ResultFixtures.lookup(second, number))
            #expect(hit == ResultFixtures.lookup(first, number))
        }
        #expect(second.references(digest))
        // Model and canonical input are compared byte for byte, also for entries read from disk.
        #expect(
            second.lookup(ResultFixtures.key(1), modelID: "fal-ai/flux/dev", canonicalInput: ResultFixtures.input(2))
                == nil
        )
        #expect(
            second.lookup(
                ResultFixtures.key(1),
                modelID: "fal-ai/flux/schnell",
                canonicalInput: ResultFixtures.input(1)
            ) == nil
        )
        if case .rejected(let error) = ResultFixtures.lookup(second, 2)?.outcome {
            #expect(error.status == 422)
            #expect(error.body == ResultFixtures.rejection(2).json)
        } else {
            Issue.record("the rejection did not survive")
        }
    }

    @Test func laterWriteOfTheSameKeyWins() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let index = ResultFixtures.durableIndex(in: directory)
        try await index.load()
        let key = ResultFixtures.key(1)
        var last: CachedResult?
        for round in 0..<50 {
            let result = ResultFixtures.success(1, seconds: Double(round))
            index.store(key, result)
            last = result
        }
        index.remove(ResultFixtures.key(2))  // absent: nothing to do
        await index.flush()
        let reloaded = ResultFixtures.durableIndex(in: directory)
        try await reloaded.load()
        #expect(ResultFixtures.lookup(reloaded, 1) == last)

        // And a store after a remove resurrects, a remove after a store deletes.
        index.remove(key)
        index.store(key, ResultFixtures.success(1, seconds: 99))
        index.store(ResultFixtures.key(3), ResultFixtures.success(3))
        index.remove(ResultFixtures.key(3))
        await index.flush()
        let again = ResultFixtures.durableIndex(in: directory)
        try await again.load()
        #expect(again.count == 1)
        #expect(ResultFixtures.lookup(again, 1)?.outcome == ResultFixtures.success(1, seconds: 99).outcome)
        #expect(!FileManager.default.fileExists(atPath: ResultFixtures.manifestPath(directory, ResultFixtures.key(3))))
    }

    @Test func expiredEntriesAreNotServedAfterReload() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let now = Timestamp.now().secondsSinceEpoch
        let first = ResultFixtures.durableIndex(in: directory)
        try await first.load()
        first.store(ResultFixtures.key(1), ResultFixtures.success(1, storedAt: now - 100, ttl: 50))  // already expired
        // Expires in 30 min: long enough for a slow, loaded CI machine to get to the reload first.
        first.store(ResultFixtures.key(2), ResultFixtures.success(2, storedAt: now, ttl: 1800))
        first.store(ResultFixtures.key(3), ResultFixtures.success(3, storedAt: now, ttl: 3600))
        await first.flush()

        let second = ResultFixtures.durableIndex(in: directory)
        let report = try await second.load()
        #expect(report.expired == 1)
        #expect(second.count == 2)
        #expect(ResultFixtures.lookup(second, 1) == nil)
        #expect(ResultFixtures.lookup(second, 2) != nil)
        // Later, entry 2 expires: not served, and its file goes.
        #expect(ResultFixtures.lookup(second, 2, now: Timestamp(secondsSinceEpoch: now + 1801)) == nil)
        #expect(second.sweep(now: Timestamp(secondsSinceEpoch: now + 1801)) == 0)
        #expect(second.sweep(now: Timestamp(secondsSinceEpoch: now + 7200)) == 1)
        await second.flush()
        #expect(second.count == 0)
        for number in 1...3 {
            #expect(
                !FileManager.default.fileExists(
                    atPath: ResultFixtures.manifestPath(directory, ResultFixtures.key(number))
                )
            )
        }
    }

    @Test(arguments: [1, 4])
    func concurrentStoresAllSurviveAReload(writers: Int) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // More writers only on a pool of their own (the shared pool also serves media).
        let pool = writers == 1 ? NIOThreadPool.singleton : NIOThreadPool(numberOfThreads: writers)
        if writers > 1 { pool.start() }
        let index = ResultIndex(directory: directory.path + "/data", threadPool: pool, writers: writers)
        try await index.load()
        let total = 800
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for number in stride(from: task, to: total, by: 8) {
                        index.store(
                            ResultFixtures.key(number),
                            ResultFixtures.success(number, digests: [Fixtures.hasher.digest([UInt8(number & 0xFF)])])
                        )
                    }
                }
            }
        }
        // From plain threads too: store() is called under job locks on arbitrary threads.
        DispatchQueue.concurrentPerform(iterations: 4) { part in
            for number in stride(from: total + part, to: total + 200, by: 4) {
                index.store(ResultFixtures.key(number), ResultFixtures.success(number))
            }
        }
        await index.flush()
        #expect(index.writeFailures == 0)
        #expect(index.pendingWrites == 0)
        if writers > 1 { try await pool.shutdownGracefully() }

        let reloaded = ResultFixtures.durableIndex(in: directory)
        let report = try await reloaded.load()
        #expect(report.entries == total + 200)
        for number in 0..<(total + 200) {
            #expect(ResultFixtures.lookup(reloaded, number)?.canonicalInput == ResultFixtures.input(number))
        }
    }

    // MARK: - Damage

    @Test func corruptManifestsAreQuarantinedAndNeverServed() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = ResultFixtures.durableIndex(in: directory)
        try await first.load()
        for number in 1...4 { first.store(ResultFixtures.key(number), ResultFixtures.success(number)) }
        await first.flush()
        #expect(try await first.writeSnapshot())

        // 1: garbage; 2: a future version; 3: body damaged behind an intact header; 4: untouched.
        let path1 = ResultFixtures.manifestPath(directory, ResultFixtures.key(1))
        try Fixtures.write(Array("not a manifest".utf8), to: path1)
        let path2 = ResultFixtures.manifestPath(directory, ResultFixtures.key(2))
        var bytes2 = try #require(Fixtures.contents(path2))
        bytes2[4] = 9
        try Fixtures.write(bytes2, to: path2)
        let path3 = ResultFixtures.manifestPath(directory, ResultFixtures.key(3))
        var bytes3 = try #require(Fixtures.contents(path3))
        bytes3[bytes3.count - 20] ^= 0xFF
        try Fixtures.write(bytes3, to: path3)
        // Files 1 and 2 arrive as replaced files (a restore, a copy): their shard directories change, which is what a
        // start-up scan looks at. Written in place here, the directories' times would depend on how long the steps
        // above took (more than the snapshot's slack on a loaded machine, and the scan would skip them).
        for path in [path1, path2] {
            try FileManager.default.setAttributes(
                [.modificationDate: Date()],
                ofItemAtPath: (path as NSString).deletingLastPathComponent
            )
        }

        let second = ResultFixtures.durableIndex(in: directory)
        let report = try await second.load()
        #expect(report.quarantined == 2, "bad headers are found at load")
        #expect(ResultFixtures.lookup(second, 1) == nil)
        #expect(ResultFixtures.lookup(second, 2) == nil)
        #expect(ResultFixtures.lookup(second, 3) == nil, "a bad body is found at the first lookup")
        #expect(ResultFixtures.lookup(second, 4) != nil)
        await second.flush()
        #expect(second.count == 1)
        let corrupt = ResultFixtures.resultsDirectory(directory) + "/corrupt"
        for number in 1...3 {
            let hex = ResultFixtures.key(number).digest.hex
            #expect(FileManager.default.fileExists(atPath: corrupt + "/" + hex), "manifest \(number) quarantined")
            #expect(
                !FileManager.default.fileExists(
                    atPath: ResultFixtures.manifestPath(directory, ResultFixtures.key(number))
                )
            )
        }

        // A later start does not see them at all.
        let third = ResultFixtures.durableIndex(in: directory)
        #expect(try await third.load().entries == 1)
    }

    @Test func tornTemporaryFilesAreIgnored() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = ResultFixtures.durableIndex(in: directory)
        try await first.load()
        first.store(ResultFixtures.key(1), ResultFixtures.success(1))
        await first.flush()
        #expect(try await first.writeSnapshot())

        // What a crash mid-write leaves: half a manifest under a temporary name, half a snapshot, stray names.
        let key = ResultFixtures.key(2)
        let full = try #require(ResultManifest(key: key, result: ResultFixtures.success(2), digests: []).encoded())
        let half = Array(full.readableBytesView.prefix(full.readableBytes / 2))
        let shard = ResultFixtures.resultsDirectory(directory) + "/" + key.digest.hex.prefix(2)
        let tornOld = "\(shard)/\(key.digest.hex).tmp.1234.abcdef"
        let tornNew = "\(shard)/\(key.digest.hex).tmp.1234.fedcba"
        try Fixtures.write(half, to: tornOld)
        try Fixtures.write(half, to: tornNew)
        try ResultFixtures.setModified(tornOld, to: Timestamp.now().secondsSinceEpoch - 3600)
        try Fixtures.write([1, 2, 3], to: ResultFixtures.resultsDirectory(directory) + "/index.snapshot.tmp.1234.99")
        try Fixtures.write([1, 2, 3], to: shard + "/README")

        let second = ResultFixtures.durableIndex(in: directory)
        let report = try await second.load()
        #expect(report.entries == 1)
        #expect(report.quarantined == 0)
        #expect(report.temporaryFilesRemoved == 1, "old debris is removed, a fresh one may be a write in flight")
        #expect(ResultFixtures.lookup(second, 2) == nil)
        #expect(ResultFixtures.lookup(second, 1) != nil)
        #expect(!FileManager.default.fileExists(atPath: tornOld))
    }

    // MARK: - Memory

    @Test func decodedEntriesAreBounded() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let first = ResultFixtures.durableIndex(in: directory, decodedLimit: 10)
        try await first.load()
        for number in 0..<100 { first.store(ResultFixtures.key(number), ResultFixtures.success(number)) }
        await first.flush()
        // Fresh entries are dropped from memory once written; lookups read them back.
        for number in 0..<100 { #expect(ResultFixtures.lookup(first, number) != nil) }

        let second = ResultFixtures.durableIndex(in: directory, decodedLimit: 10)
        try await second.load()
        #expect(await second.warm() == 10)
        for round in 0..<2 {
            for number in 0..<100 {
                #expect(ResultFixtures.lookup(second, number) != nil, "round \(round) entry \(number)")
            }
        }
        #expect(second.count == 100)
    }

    @Test func memoryOnlyIndexKeepsItsBehaviour() async throws {
        let index = ResultIndex()
        let now = Timestamp.now().secondsSinceEpoch
        index.store(ResultFixtures.key(1), ResultFixtures.success(1, storedAt: now, ttl: 10))
        #expect(try await index.load().entries == 0)
        await index.flush()
        #expect(ResultFixtures.lookup(index, 1) != nil)
        #expect(ResultFixtures.lookup(index, 1, now: Timestamp(secondsSinceEpoch: now + 11)) == nil)
        #expect(index.count == 0)
        index.store(ResultFixtures.key(2), ResultFixtures.success(2, storedAt: now, ttl: 10))
        #expect(index.remove(ResultFixtures.key(2)))
        #expect(!index.remove(ResultFixtures.key(2)))
    }
}
