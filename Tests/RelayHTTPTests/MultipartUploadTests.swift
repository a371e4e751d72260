import Foundation
import NIOCore
import NIOPosix
import RelayCore
import RelayStore
import Testing

@testable import RelayHTTP

@Suite struct MultipartUploadTests {
    let t0 = Timestamp(secondsSinceEpoch: 1_800_000_000)
    let limits = MultipartUploadLimits(partBytes: 100, totalBytes: 250, idleSeconds: 60, lifetimeSeconds: 600)

    func at(_ seconds: Double) -> Timestamp { Timestamp(secondsSinceEpoch: t0.secondsSinceEpoch + seconds) }

    func upload() -> MultipartUpload {
        MultipartUpload(
            id: Digest128(high: 1, low: 2),
            fileID: Digest128(high: 3, low: 4),
            fileName: "clip.mp4",
            mediaType: .forContentType("video/mp4"),
            ownerKeyID: "k1",
            limits: limits,
            now: t0
        )
    }

    func part(_ name: String, _ size: Int = 10) -> MultipartUpload.Part {
        MultipartUpload.Part(path: "/tmp/\(name)", etag: "\"\(name)\"", size: size)
    }

    @Test func partsInAnyOrderAreAssembledByNumberAndTheLastWriteOfAPartWins() {
        var upload = upload()
        #expect(upload.beginPart(3, now: at(1)) == .success(100))  // the per-part cap
        #expect(upload.partStored(3, part: part("c"), now: at(1)) == .accepted(replaced: nil))
        #expect(upload.partStored(1, part: part("a"), now: at(2)) == .accepted(replaced: nil))
        #expect(upload.partStored(2, part: part("b"), now: at(3)) == .accepted(replaced: nil))
        #expect(upload.partStored(2, part: part("b2"), now: at(4)) == .accepted(replaced: "/tmp/b"))  // re-sent
        #expect(upload.storedBytes == 30)

        // The old etag of a re-sent part no longer matches; listed in completion order, quoted or bare.
        #expect(
            upload.complete([(2, "\"b\""), (1, "\"a\""), (3, "\"c\"")], now: at(5))
                == .rejected(
                    .badRequest(
                        "Part 2's etag does not match the part stored (it was sent again since?)",
                        type: "invalid_part"
                    )
                )
        )
        #expect(upload.phase == .open)
        #expect(
            upload.complete([(2, "b2"), (3, "W/\"c\""), (1, "\"a\"")], now: at(5))
                == .assemble(["/tmp/a", "/tmp/b2", "/tmp/c"])
        )
        #expect(upload.phase == .completing)
        #expect(upload.beginPart(4, now: at(6)).isFailure)  // nothing changes while it is assembled
        #expect(upload.complete([(1, "a")], now: at(6)).failure?.status == 503)  // a concurrent completion: retry

        let completion = MultipartUpload.Completion(digest: Digest128(high: 9, low: 9), size: 30)
        #expect(Set(upload.assembled(completion, now: at(7))) == ["/tmp/a", "/tmp/b2", "/tmp/c"])
        #expect(upload.complete([(1, "a")], now: at(8)) == .done(completion))  // a retried completion
        #expect(upload.partStored(5, part: part("late"), now: at(8)).failure?.errorType == "upload_already_completed")
    }

    @Test func aCompletionMustListUploadedPartsOnce() {
        var upload = upload()
        _ = upload.partStored(1, part: part("a"), now: at(1))
        #expect(upload.complete([], now: at(2)).failure?.errorType == "invalid_parts")
        #expect(upload.complete([(1, "a"), (1, "a")], now: at(2)).failure?.errorType == "invalid_parts")
        #expect(upload.complete([(1, "a"), (2, "b")], now: at(2)).failure?.message == "Part 2 was not uploaded")
        #expect(upload.phase == .open)
        // A part not listed is left out of the file, and removed with the others.
        _ = upload.partStored(2, part: part("b"), now: at(3))
        #expect(upload.complete([(2, "b")], now: at(4)) == .assemble(["/tmp/b"]))
        let completion = MultipartUpload.Completion(digest: Digest128(high: 1, low: 1), size: 10)
        #expect(Set(upload.assembled(completion, now: at(5))) == ["/tmp/a", "/tmp/b"])
    }

    @Test func partNumbersAndTheTotalAreBounded() {
        var upload = upload()
        for number in [0, -1, 10_001] {
            #expect(upload.beginPart(number, now: at(1)).failure?.errorType == "invalid_part_number")
        }
        #expect(upload.beginPart(10_000, now: at(1)) == .success(100))
        #expect(upload.partStored(1, part: part("a", 100), now: at(1)) == .accepted(replaced: nil))
        #expect(upload.partStored(2, part: part("b", 100), now: at(1)) == .accepted(replaced: nil))
        // 251 > 250: the part that would pass the total is refused (413), and what was stored stays.
        #expect(upload.partStored(3, part: part("c", 51), now: at(1)).failure?.status == 413)
        #expect(upload.partStored(3, part: part("c", 50), now: at(1)) == .accepted(replaced: nil))
        // Replacing a part counts its new size, not both.
        #expect(upload.partStored(3, part: part("c2", 50), now: at(1)) == .accepted(replaced: "/tmp/c"))
        #expect(upload.storedBytes == 250)
    }

    @Test func anUploadIsAbandonedWhenIdleOrTooOldButNeverWhileAssembled() {
        var upload = upload()
        #expect(!upload.isAbandoned(now: at(59)))
        #expect(upload.isAbandoned(now: at(60)))  // idle since creation
        _ = upload.beginPart(1, now: at(50))  // activity moves the idle deadline
        #expect(!upload.isAbandoned(now: at(100)))
        #expect(upload.isAbandoned(now: at(110)))
        for second in stride(from: 100.0, through: 600, by: 50) { _ = upload.beginPart(1, now: at(second)) }
        #expect(upload.isAbandoned(now: at(600)))  // however active: the lifetime
        _ = upload.partStored(1, part: part("a"), now: at(10))
        #expect(upload.complete([(1, "a")], now: at(11)) == .assemble(["/tmp/a"]))
        #expect(!upload.isAbandoned(now: at(10_000)))
    }
}

@Suite("Abandoned multipart uploads: their part files go at the deadline", .serialized)
struct MultipartUploadSweepTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()

    @Test func theSweepRemovesAbandonedUploadsAndTheirFilesAndNothingElse() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mp-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let hasher = KeyedHasher(secret: [UInt8](repeating: 7, count: KeyedHasher.secretSize))
        let store = try BlobStore(directory: directory, hasher: hasher, threadPool: .singleton)
        let uploads = UploadService(
            store: store,
            aliases: try UploadAliases(dataDirectory: directory, threadPool: .singleton),
            multipartLimits: MultipartUploadLimits(idleSeconds: 60, lifetimeSeconds: 3600),
            publicOrigin: { "https://relay.test" }
        )
        let t0 = Timestamp(secondsSinceEpoch: 1_800_000_000)
        func at(_ seconds: Double) -> Timestamp { Timestamp(secondsSinceEpoch: t0.secondsSinceEpoch + seconds) }

        func storePart(_ id: Digest128, _ number: Int, now: Timestamp) async throws -> String {
            let upload = store.makeUpload()
            try await store.append(ByteBuffer(repeating: 1, count: 1000), to: upload, eventLoop: loop).get()
            let sealed = try await uploads.parts.seal(upload, eventLoop: loop).get()
            let part = MultipartUpload.Part(path: sealed.path, etag: sealed.digest.hex, size: sealed.size)
            #expect(
                uploads.multipart.update(id) { $0.partStored(number, part: part, now: now) } == .accepted(replaced: nil)
            )
            return sealed.path
        }

        let idle = uploads.startMultipart(
            fileName: "a.bin",
            mediaType: .forContentType("application/octet-stream"),
            ownerKeyID: nil,
            now: t0,
            eventLoop: loop
        )
        let active = uploads.startMultipart(
            fileName: "b.bin",
            mediaType: .forContentType("application/octet-stream"),
            ownerKeyID: nil,
            now: t0,
            eventLoop: loop
        )
        let idleParts = [try await storePart(idle.id, 1, now: at(1)), try await storePart(idle.id, 2, now: at(2))]
        let activePart = try await storePart(active.id, 1, now: at(30))

        #expect(try await uploads.sweepMultipart(now: at(61), eventLoop: loop).get() == 0)  // idle since 2 s: not yet
        #expect(idleParts.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        #expect(try await uploads.sweepMultipart(now: at(62), eventLoop: loop).get() == 2)
        #expect(!idleParts.contains { FileManager.default.fileExists(atPath: $0) })
        #expect(uploads.multipart.upload(idle.id) == nil)  // its URLs answer 404 from now on
        #expect(FileManager.default.fileExists(atPath: activePart))
        #expect(uploads.multipart.count == 1)

        #expect(try await uploads.sweepMultipart(now: at(90), eventLoop: loop).get() == 1)
        #expect(!FileManager.default.fileExists(atPath: activePart))
        #expect(uploads.multipart.count == 0)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: store.temporaryDirectory)
        #expect(leftovers.isEmpty)
    }
}

extension Result {
    var isFailure: Bool {
        if case .failure = self { return true }
        return false
    }

    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

extension MultipartUpload.PartOutcome {
    var failure: FalError? {
        if case .rejected(let error) = self { return error }
        return nil
    }
}

extension MultipartUpload.CompletionPlan {
    var failure: FalError? {
        if case .rejected(let error) = self { return error }
        return nil
    }
}
