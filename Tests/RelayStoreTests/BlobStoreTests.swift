import Foundation
import NIOPosix
import RelayCore
import Testing

@testable import RelayStore

@Suite("BlobStore")
struct BlobStoreTests {
    @Test func createsItsDirectories() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        var isDirectory: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: directory.path + "/data/blobs", isDirectory: &isDirectory))
        #expect(isDirectory.boolValue)
        #expect(FileManager.default.fileExists(atPath: directory.path + "/data/tmp", isDirectory: &isDirectory))
        #expect(store.blobsDirectory == directory.path + "/data/blobs")
        // Opening the same directory again is fine.
        _ = try BlobStore(directory: directory.path + "/data/", hasher: Fixtures.hasher, threadPool: .singleton)
    }

    @Test func rawRoundTrip() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let bytes = Fixtures.randomBytes(300_000)

        let record = try await store.put(bytes, mediaType: .png)
        let digest = Fixtures.hasher.digest(bytes)
        #expect(record == BlobRecord(digest: digest, size: bytes.count, storedSize: bytes.count, mediaType: .png))
        #expect(record.fileName == "\(digest.hex).png")
        #expect(!record.isCompressed)

        let hex = digest.hex
        let expectedPath = "\(directory.path)/data/blobs/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))/\(hex)"
        #expect(Fixtures.contents(expectedPath) == bytes, "raw bytes at blobs/ab/cd/<digest>")
        #expect(Fixtures.rawFile(digest, in: store) == expectedPath)
        #expect(try await store.read(digest) == bytes)
        #expect(try await store.record(digest, mediaType: .png) == record)
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
    }

    @Test func compressedRoundTrip() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let bytes = Fixtures.text(500_000)

        let record = try await store.put(bytes, mediaType: .text)
        let digest = Fixtures.hasher.digest(bytes)
        #expect(record.digest == digest)
        #expect(record.size == bytes.count)
        #expect(record.isCompressed)

        let framePath = store.path(for: digest, compressed: true)
        #expect(framePath.hasSuffix("/\(digest.hex).lz4"))
        let frame = try #require(Fixtures.contents(framePath))
        #expect(frame.count == record.storedSize)
        #expect(frame.count < bytes.count / 4, "text is stored much smaller")
        #expect(try LZ4FrameCodec.decompress(frame) == bytes, "the file is a plain LZ4 frame")
        #expect(!FileManager.default.fileExists(atPath: store.path(for: digest, compressed: false)))

        #expect(Fixtures.rawFile(digest, in: store) == nil, "no sendfile for a compressed blob")
        #expect(try await store.read(digest) == bytes)
        #expect(try await store.record(digest, mediaType: .text) == record)
    }

    @Test func wavIsStoredSmaller() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let wav = Fixtures.wav(seconds: 2)
        let record = try await store.put(wav, mediaType: .wav)
        #expect(record.isCompressed)
        let onDisk = try #require(Fixtures.contents(store.path(for: record.digest, compressed: true)))
        #expect(onDisk.count == record.storedSize)
        #expect(onDisk.count < wav.count / 2)
        #expect(try await store.read(record.digest) == wav)
    }

    @Test func compressibleTypeThatDoesNotShrinkIsStoredRaw() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let noise = Fixtures.randomBytes(100_000)  // white-noise "audio"
        let record = try await store.put(noise, mediaType: .wav)
        #expect(!record.isCompressed)
        #expect(record.storedSize == noise.count)
        #expect(Fixtures.rawFile(record.digest, in: store) != nil)

        let tiny = Array("ok".utf8)
        let tinyRecord = try await store.put(tiny, mediaType: .text)
        #expect(!tinyRecord.isCompressed, "a frame is larger than two bytes")
        #expect(try await store.read(tinyRecord.digest) == tiny)
    }

    @Test func emptyBlob() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let record = try await store.put([], mediaType: .json)
        #expect(record.size == 0 && record.storedSize == 0)
        #expect(try await store.read(record.digest) == [])
        #expect(try await store.record(record.digest, mediaType: .json) == record)
    }

    @Test(arguments: [MediaType.png, .text])
    func sameBytesTwiceIsOneFileNotRewritten(mediaType: MediaType) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let bytes = mediaType.isCompressible ? Fixtures.text(80_000) : Fixtures.randomBytes(80_000)

        let first = try await store.put(bytes, mediaType: mediaType)
        let path = store.path(for: first.digest, compressed: first.isCompressed)
        let inode = try Fixtures.inode(path)
        let second = try await store.put(bytes, mediaType: mediaType)
        #expect(second == first)
        #expect(try Fixtures.inode(path) == inode, "the existing file was kept, not replaced")
        #expect(Fixtures.files(under: store.blobsDirectory).count == 1)

        // Another media type for the same bytes is the same file; the record carries the caller's type.
        let asBinary = try await store.put(bytes, mediaType: .octetStream)
        #expect(asBinary.digest == first.digest && asBinary.storedSize == first.storedSize)
        #expect(asBinary.mediaType == .octetStream)
        #expect(Fixtures.files(under: store.blobsDirectory).count == 1)
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
    }

    @Test func absentBlob() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let digest = Fixtures.hasher.digest(Array("never stored".utf8))
        #expect(try await store.read(digest) == nil)
        #expect(try await store.record(digest, mediaType: .png) == nil)
        #expect(Fixtures.rawFile(digest, in: store) == nil)
        #expect(try await store.remove(digest) == false)
    }

    @Test func removeDeletesTheBlob() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let raw = try await store.put(Fixtures.randomBytes(5000), mediaType: .png)
        let compressed = try await store.put(Fixtures.text(5000), mediaType: .json)
        #expect(try await store.remove(raw.digest))
        #expect(try await store.remove(compressed.digest))
        #expect(try await store.read(raw.digest) == nil)
        #expect(try await store.read(compressed.digest) == nil)
        #expect(Fixtures.files(under: store.blobsDirectory).isEmpty)
    }

    @Test func corruptCompressedFileIsReportedNotServed() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let record = try await store.put(Fixtures.text(200_000), mediaType: .text)
        let path = store.path(for: record.digest, compressed: true)
        var frame = try #require(Fixtures.contents(path))
        frame[frame.count / 2] ^= 0x10
        try Fixtures.write(frame, to: path)
        await #expect(throws: StoreError.corrupt(record.digest)) { try await store.read(record.digest) }

        // Truncated, as a torn write would leave it (which the store itself never does).
        try Fixtures.write(Array(frame.prefix(frame.count / 3)), to: path)
        await #expect(throws: StoreError.corrupt(record.digest)) { try await store.read(record.digest) }
    }

    @Test func corruptRawFileIsReportedNotServed() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let record = try await store.put(Fixtures.randomBytes(10_000), mediaType: .png)
        let path = try #require(Fixtures.rawFile(record.digest, in: store))
        var bytes = try #require(Fixtures.contents(path))
        bytes[1234] ^= 0x01
        try Fixtures.write(bytes, to: path)
        await #expect(throws: StoreError.corrupt(record.digest)) { try await store.read(record.digest) }
    }

    @Test func collisionNeverOverwrites() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)

        // Raw, other size.
        let bytes = Fixtures.randomBytes(4096, seed: 1)
        let digest = Fixtures.hasher.digest(bytes)
        let squatter = Array("someone else's bytes".utf8)
        try Fixtures.write(squatter, to: store.path(for: digest, compressed: false))
        await #expect(throws: StoreError.collision(digest)) { try await store.put(bytes, mediaType: .png) }
        #expect(Fixtures.contents(store.path(for: digest, compressed: false)) == squatter)

        // Raw, same size, one byte differs.
        let other = Fixtures.randomBytes(4096, seed: 2)
        let otherDigest = Fixtures.hasher.digest(other)
        var sameSize = other
        sameSize[4000] ^= 0xFF
        try Fixtures.write(sameSize, to: store.path(for: otherDigest, compressed: false))
        await #expect(throws: StoreError.collision(otherDigest)) { try await store.put(other, mediaType: .png) }
        #expect(Fixtures.contents(store.path(for: otherDigest, compressed: false)) == sameSize)

        // Compressed: a valid frame of other content at the digest's .lz4 name.
        let text = Fixtures.text(50_000)
        let textDigest = Fixtures.hasher.digest(text)
        let foreignFrame = LZ4FrameCodec.compress(Fixtures.text(49_000) + Array(repeating: 0x41, count: 1000))
        try Fixtures.write(foreignFrame, to: store.path(for: textDigest, compressed: true))
        await #expect(throws: StoreError.collision(textDigest)) { try await store.put(text, mediaType: .text) }
        #expect(Fixtures.contents(store.path(for: textDigest, compressed: true)) == foreignFrame)
        #expect(!FileManager.default.fileExists(atPath: store.path(for: textDigest, compressed: false)))

        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
        #expect(Fixtures.files(under: store.blobsDirectory).count == 3)
    }

    @Test func temporaryLeftoversAreRemoved() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let kept = try await store.put(Fixtures.randomBytes(1000), mediaType: .png)
        for index in 0..<5 {
            try Fixtures.write(Fixtures.randomBytes(100 * index), to: "\(store.temporaryDirectory)/crash-\(index).tmp")
        }
        #expect(Fixtures.files(under: store.temporaryDirectory).count == 5)
        #expect(try await store.removeTemporaryFiles() == 5)
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
        #expect(try await store.read(kept.digest) != nil, "blobs are not touched")
        #expect(try await store.removeTemporaryFiles() == 0)
    }

    @Test(arguments: [MediaType.png, .text])
    func concurrentPutsOfTheSameBytesMakeOneFile(mediaType: MediaType) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let bytes = mediaType.isCompressible ? Fixtures.text(256 * 1024) : Fixtures.randomBytes(256 * 1024)
        // A pool of its own with several threads, so that puts really overlap.
        let pool = NIOThreadPool(numberOfThreads: 8)
        pool.start()
        let racingStore = try BlobStore(directory: store.directory, hasher: Fixtures.hasher, threadPool: pool)

        let records = try await withThrowingTaskGroup(of: BlobRecord.self) { group in
            for _ in 0..<50 {
                group.addTask { try await racingStore.put(bytes, mediaType: mediaType) }
            }
            var records: [BlobRecord] = []
            for try await record in group { records.append(record) }
            return records
        }
        try await pool.shutdownGracefully()

        #expect(records.count == 50)
        #expect(Set(records).count == 1, "every put returned the same record")
        #expect(Fixtures.files(under: store.blobsDirectory).count == 1)
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
        let record = try #require(records.first)
        #expect(try await store.read(record.digest) == bytes)
        #expect(try await store.record(record.digest, mediaType: mediaType) == record)
    }

    @Test func scanListsEveryBlob() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        var expected: [Digest128: (Int, Bool)] = [:]
        for index in 0..<20 {
            let record =
                index.isMultiple(of: 2)
                ? try await store.put(Fixtures.randomBytes(500 + index, seed: UInt64(index)), mediaType: .png)
                : try await store.put(Fixtures.text(5000 + index), mediaType: .text)
            expected[record.digest] = (record.storedSize, record.isCompressed)
        }
        // Debris that is not a blob is skipped.
        try Fixtures.write([1, 2, 3], to: store.blobsDirectory + "/zz/yy/nonsense")
        try Fixtures.write([1, 2, 3], to: store.blobsDirectory + "/ab/cd/not-a-digest.lz4")

        let entries = try await store.scan()
        #expect(entries.count == 20)
        for entry in entries {
            let (storedSize, compressed) = try #require(expected[entry.digest])
            #expect(entry.storedSize == storedSize)
            #expect(entry.isCompressed == compressed)
            #expect(entry.modified > 1_600_000_000)
        }
    }

    @Test func stoppedThreadPoolIsAnError() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let store = try BlobStore(directory: directory.path, hasher: Fixtures.hasher, threadPool: pool)
        try await pool.shutdownGracefully()
        await #expect(throws: StoreError.shutdown) { try await store.put([1, 2, 3], mediaType: .png) }
        #expect(Fixtures.files(under: store.blobsDirectory).isEmpty)
    }

    @Test func cancelledBeforeThePoolRunsItWritesNothing() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        // Cancelled before its work reaches the pool: the pool hands the work back unrun.
        let put = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await store.put(Fixtures.randomBytes(1000), mediaType: .png)
        }
        await #expect(throws: StoreError.cancelled) { try await put.value }
        #expect(Fixtures.files(under: store.blobsDirectory).isEmpty)
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
    }

    @Test func unusableDirectoryIsAnIOError() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Fixtures.write([1], to: directory.path + "/file")
        let error = #expect(throws: StoreError.self) {
            try BlobStore(directory: directory.path + "/file/data", hasher: Fixtures.hasher, threadPool: .singleton)
        }
        #expect(error?.errno != nil)
    }

    @Test func placingNeverReplacesAnExistingFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Fixtures.write([1, 2, 3], to: directory.path + "/existing")
        try Fixtures.write([4, 5, 6], to: directory.path + "/new")
        #expect(try BlobFileIO.linkIfAbsent(directory.path + "/new", directory.path + "/existing") == false)
        #expect(Fixtures.contents(directory.path + "/existing") == [1, 2, 3])
        #expect(try BlobFileIO.linkIfAbsent(directory.path + "/new", directory.path + "/placed"))
        #expect(Fixtures.contents(directory.path + "/placed") == [4, 5, 6])
    }

    @Test func compressionThreshold() {
        #expect(BlobStore.isWorthStoringCompressed(frameSize: 900, contentSize: 1000))
        #expect(BlobStore.isWorthStoringCompressed(frameSize: 937, contentSize: 1000))
        #expect(!BlobStore.isWorthStoringCompressed(frameSize: 990, contentSize: 1000))
        #expect(!BlobStore.isWorthStoringCompressed(frameSize: 15, contentSize: 0))
        #expect(!BlobStore.isWorthStoringCompressed(frameSize: 15, contentSize: 15))
    }
}
