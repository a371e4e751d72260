import Foundation
import NIOCore
import NIOPosix
import RelayCore
import Synchronization
import Testing

@testable import RelayStore

@Suite("Request log")
struct RequestLogTests {
    static let interrupted = RequestLogRecord.Outcome.failure(.unavailable("restarted", type: "relay_restarted"))

    static func creation(
        _ index: Int,
        job: UInt64? = nil,
        owner: String? = "key-a",
        at: Double = Timestamp.now().secondsSinceEpoch
    )
        -> RequestLogRecord.Creation
    {
        RequestLogRecord.Creation(
            id: "req-\(index)",
            jobID: job ?? UInt64(index),
            endpoint: "fal-ai/flux/dev",
            key: ResultFixtures.key(index),
            ownerKeyID: owner,
            createdAt: Timestamp(secondsSinceEpoch: at),
            cacheOutcome: "miss",
            cacheStatus: "MediaRelay; fwd=miss; stored; key=\"\(index)\""
        )
    }

    static func append(_ log: RequestLog, _ records: [RequestLogRecord]) async -> Bool {
        await withCheckedContinuation { continuation in log.append(records) { continuation.resume(returning: $0) } }
    }

    static func segments(_ directory: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory + "/requests").filter { $0.hasSuffix(".log") }
            .sorted()
    }

    // MARK: - Records

    @Test func everyRecordRoundTrips() throws {
        let now = Timestamp(secondsSinceEpoch: 1_700_000_000.5)
        let records: [RequestLogRecord] = [
            .created(Self.creation(1, at: now.secondsSinceEpoch)),
            .created(Self.creation(2, owner: nil, at: now.secondsSinceEpoch)),
            .finished(
                jobID: 1,
                at: now,
                outcome: .success(
                    result: ["images": [["url": "https://x/files/a.png"]], "seed": 7],
                    inferenceSeconds: 1.5
                )
            ),
            .finished(jobID: 2, at: now, outcome: .success(result: ["text": "ünïcødé"], inferenceSeconds: nil)),
            .finished(
                jobID: 3,
                at: now,
                outcome: .failure(.validation([.missing("prompt"), .invalid("seed", "bad")]))
            ),
            .finished(jobID: 4, at: now, outcome: .failure(.upstreamFailed("GPU on fire"))),
            .finished(jobID: 5, at: now, outcome: .failure(.unavailable("restarted", type: "relay_restarted"))),
            .finished(jobID: 6, at: now, outcome: .failure(.insufficientStorage())),
            .finished(jobID: 7, at: now, outcome: .failure(.badRequest("nope", type: "odd_type"))),
            .finished(jobID: 8, at: now, outcome: .cancelled),
            .cancelled(requestID: "req-1", at: now),
        ]
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        for record in records { #expect(record.frame(into: &buffer)) }
        for record in records {
            guard case .record(let decoded) = RequestLogRecord.readFrame(&buffer) else {
                Issue.record("\(record) did not decode")
                return
            }
            #expect(decoded == record)
        }
        guard case .end = RequestLogRecord.readFrame(&buffer) else {
            Issue.record("trailing bytes")
            return
        }
    }

    @Test func frameDamageIsTornOrCorrupt() throws {
        var whole = ByteBufferAllocator().buffer(capacity: 0)
        RequestLogRecord.created(Self.creation(1)).frame(into: &whole)
        // Every strict prefix is a torn frame, never a record and never a crash.
        for length in 1..<whole.readableBytes {
            var prefix = whole.getSlice(at: 0, length: length)!
            guard case .torn = RequestLogRecord.readFrame(&prefix) else {
                Issue.record("prefix \(length) not torn")
                return
            }
        }
        // A flipped payload bit is a whole frame with a bad checksum.
        var flipped = whole
        let index = RequestLogRecord.frameHeaderSize + 5
        flipped.setInteger(flipped.getInteger(at: index, as: UInt8.self)! ^ 0x10, at: index)
        guard case .corrupt = RequestLogRecord.readFrame(&flipped) else {
            Issue.record("flip not detected")
            return
        }
        #expect(flipped.readableBytes == 0)
    }

    // MARK: - Load

    @Test func loadRestoresOutcomesAndMarksInterrupted() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let log = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        _ = try await log.load(interrupted: Self.interrupted)
        let now = Timestamp.now()
        let ok = await Self.append(
            log,
            [
                .created(Self.creation(1)), .created(Self.creation(2, job: 1)),  // two requests, one job
                .created(Self.creation(3)), .created(Self.creation(4)),
                .finished(jobID: 1, at: now, outcome: .success(result: ["ok": true], inferenceSeconds: 2)),
                .cancelled(requestID: "req-4", at: now),
                .created(Self.creation(5, at: now.secondsSinceEpoch - 7200)),  // past retention
            ]
        )
        #expect(ok)

        let reopened = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        let (requests, report) = try await reopened.load(interrupted: Self.interrupted)
        let byID = Dictionary(uniqueKeysWithValues: requests.map { ($0.creation.id, $0) })
        #expect(Set(byID.keys) == ["req-1", "req-2", "req-3", "req-4"])
        #expect(byID["req-1"]?.outcome == .success(result: ["ok": true], inferenceSeconds: 2))
        #expect(byID["req-2"]?.outcome == .success(result: ["ok": true], inferenceSeconds: 2))
        #expect(byID["req-1"]?.creation == Self.creation(1, at: byID["req-1"]!.creation.createdAt.secondsSinceEpoch))
        #expect(byID["req-3"]?.interrupted == true && byID["req-3"]?.outcome == Self.interrupted)
        #expect(byID["req-4"]?.cancelled == true && byID["req-4"]?.outcome == .cancelled)
        #expect(report.interrupted == 1 && report.expired == 1 && report.restored == 4)

        // Compacted into one segment; a second restart finds the same, with the interruption now on record.
        #expect(try Self.segments(directory.path).count == 1)
        let again = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        let (second, secondReport) = try await again.load(interrupted: .cancelled)
        #expect(secondReport.interrupted == 0)
        #expect(Set(second.map(\.creation.id)) == Set(byID.keys))
        #expect(second.first { $0.creation.id == "req-3" }?.outcome == Self.interrupted)
    }

    @Test func tornTailAndCorruptRecordsAreSkipped() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let log = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        _ = try await log.load(interrupted: Self.interrupted)
        #expect(
            await Self.append(
                log,
                [.created(Self.creation(1)), .created(Self.creation(2)), .created(Self.creation(3))]
            )
        )
        let name = try #require(try Self.segments(directory.path).last)
        let path = directory.path + "/requests/" + name
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        // Corrupt a byte inside the second record, then add half of a fourth record (a crash mid-append).
        var one = ByteBufferAllocator().buffer(capacity: 0)
        RequestLogRecord.created(Self.creation(1)).frame(into: &one)
        let second = RequestLogRecord.segmentMagic.count + one.readableBytes
        bytes[second + RequestLogRecord.frameHeaderSize + 3] ^= 0xFF
        var fourth = ByteBufferAllocator().buffer(capacity: 0)
        RequestLogRecord.created(Self.creation(4)).frame(into: &fourth)
        bytes += fourth.readBytes(length: fourth.readableBytes / 2)!
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let reopened = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        let (requests, report) = try await reopened.load(interrupted: Self.interrupted)
        #expect(Set(requests.map(\.creation.id)) == ["req-1", "req-3"])
        #expect(report.corruptRecords == 1 && report.tornSegments == 1 && report.tornBytes > 0)
        // A segment whose header never made it is ignored, not fatal.
        try Data([0x4D, 0x52]).write(to: URL(fileURLWithPath: directory.path + "/requests/00000000000000ff.log"))
        let third = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        let (kept, _) = try await third.load(interrupted: Self.interrupted)
        #expect(Set(kept.map(\.creation.id)) == ["req-1", "req-3"])
    }

    // MARK: - Writing

    @Test func concurrentAppendsShareCommits() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let log = RequestLog(dataDirectory: directory.path, threadPool: .singleton, retentionSeconds: 3600)
        _ = try await log.load(interrupted: Self.interrupted)
        let clock = ContinuousClock()
        let started = clock.now
        let results = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<400 {
                group.addTask { await Self.append(log, [.created(Self.creation(index))]) }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        let elapsed = clock.now - started
        #expect(results.allSatisfy { $0 })
        let (commits, records, failures) = log.statistics
        #expect(records == 400 && failures == 0)
        #expect(commits < 400, "group commit: \(commits) fsyncs for 400 records")
        print("request log: 400 appends in \(elapsed), \(commits) group commits")
        let (restored, _) = try await RequestLog(
            dataDirectory: directory.path,
            threadPool: .singleton,
            retentionSeconds: 3600
        )
        .load(interrupted: Self.interrupted)
        #expect(restored.count == 400)
    }

    @Test func sealedSegmentsPastRetentionAreSwept() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let log = RequestLog(
            dataDirectory: directory.path,
            threadPool: .singleton,
            retentionSeconds: 60,
            segmentBytes: 4096
        )
        _ = try await log.load(interrupted: Self.interrupted)
        let old = Timestamp.now().secondsSinceEpoch - 1000
        for index in 0..<150 {
            #expect(await Self.append(log, [.created(Self.creation(index, at: old))]))
        }
        #expect(await Self.append(log, [.created(Self.creation(999))]))
        let before = try Self.segments(directory.path).count
        #expect(before >= 3)
        // A request still served keeps its segment (and every later one).
        #expect(await log.sweep(oldestWanted: Timestamp(secondsSinceEpoch: old - 10)) == 0)
        let removed = await log.sweep()
        let after = try Self.segments(directory.path).count
        #expect(removed >= 2 && removed == before - after)
        let (restored, _) = try await RequestLog(
            dataDirectory: directory.path,
            threadPool: .singleton,
            retentionSeconds: 60
        )
        .load(interrupted: Self.interrupted)
        #expect(restored.map(\.creation.id) == ["req-999"])
    }

    // MARK: - Result manifests

    @Test func whenWrittenWaitsForTheManifest() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let index = ResultIndex(directory: directory.path, threadPool: .singleton)
        try await index.load()
        let key = ResultFixtures.key(1)
        let stored = ResultFixtures.success(1)
        index.store(key, stored)
        let written = await withCheckedContinuation { continuation in
            index.whenWritten(key) { continuation.resume(returning: $0) }
        }
        #expect(written)
        // Once written, the file is there for a fresh index to find.
        let files = ResultManifestFiles(directory: directory.path)
        guard case .manifest(let manifest, _) = files.read(key) else {
            Issue.record("manifest not on disk")
            return
        }
        #expect(manifest.result == stored)
        // Nothing to wait for: answered at once.
        let immediate = Atomic<Bool>(false)
        index.whenWritten(ResultFixtures.key(2)) { _ in immediate.store(true, ordering: .relaxed) }
        let answered = immediate.load(ordering: .relaxed)
        #expect(answered)
    }
}
