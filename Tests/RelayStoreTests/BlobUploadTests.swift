import Foundation
import NIOCore
import NIOPosix
import RelayCore
import Testing

@testable import RelayStore

@Suite("Uploads streamed into the blob store", .serialized)
struct BlobUploadTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()

    /// Appends `bytes` in `pieces` and finishes the upload.
    func upload(
        _ bytes: [UInt8],
        pieces: Int,
        to store: BlobStore,
        as mediaType: MediaType = .png
    ) async throws -> BlobRecord {
        let upload = store.makeUpload()
        let size = max(1, (bytes.count + pieces - 1) / pieces)
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + size, bytes.count)
            try await store.append(ByteBuffer(bytes: bytes[offset..<end]), to: upload, eventLoop: loop).get()
            offset = end
        }
        return try await store.finish(upload, mediaType: mediaType, eventLoop: loop).get()
    }

    @Test func streamedDigestIsTheOneShotDigest() {
        let bytes = Fixtures.randomBytes(300_000)
        let stream = KeyedHasher.Stream(Fixtures.hasher)
        bytes.withUnsafeBytes { all in
            stream.update(UnsafeRawBufferPointer(rebasing: all[0..<1]))
            stream.update(UnsafeRawBufferPointer(rebasing: all[1..<70_000]))
            stream.update(UnsafeRawBufferPointer(rebasing: all[70_000...]))
        }
        #expect(stream.digest() == Fixtures.hasher.digest(bytes))
    }

    @Test func anUploadIsTheSameBlobAsAPutOfTheSameBytes() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let bytes = Fixtures.randomBytes(2_500_000)
        let uploaded = try await upload(bytes, pieces: 7, to: store)
        #expect(uploaded.digest == Fixtures.hasher.digest(bytes))
        #expect(uploaded.size == bytes.count)
        #expect(try await store.read(uploaded.digest) == bytes)
        let inode = try Fixtures.inode(store.path(for: uploaded.digest, compressed: false))
        // Again as an upload, and as a put: the same blob, not rewritten; tmp/ is empty.
        let again = try await upload(bytes, pieces: 3, to: store)
        #expect(again.digest == uploaded.digest)
        let put = try await store.put(bytes, mediaType: .png)
        #expect(put.digest == uploaded.digest)
        #expect(try Fixtures.inode(store.path(for: uploaded.digest, compressed: false)) == inode)
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
    }

    @Test func anUploadOfBytesStoredCompressedFindsThatBlob() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let text = Fixtures.text(200_000)
        let put = try await store.put(text, mediaType: .text)
        #expect(put.isCompressed)
        let uploaded = try await upload(text, pieces: 5, to: store, as: .text)
        #expect(uploaded.digest == put.digest)
        #expect(uploaded.isCompressed)  // the LZ4 blob, not a second raw copy
        #expect(Fixtures.rawFile(put.digest, in: store) == nil)
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
    }

    @Test func emptyAndDiscardedUploads() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // One thread: work submitted after the discard runs after it.
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        defer { pool.shutdownGracefully { _ in } }
        let store = try BlobStore(directory: directory.path + "/data", hasher: Fixtures.hasher, threadPool: pool)
        let empty = try await upload([], pieces: 1, to: store)
        #expect(empty.size == 0)
        #expect(try await store.read(empty.digest) == [])

        let abandoned = store.makeUpload()
        try await store.append(ByteBuffer(bytes: Fixtures.randomBytes(1000)), to: abandoned, eventLoop: loop).get()
        #expect(Fixtures.files(under: store.temporaryDirectory).count == 1)
        store.discard(abandoned)
        try await pool.runIfActive {}
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
        await #expect(throws: StoreError.self) {
            try await store.append(ByteBuffer(bytes: [1]), to: abandoned, eventLoop: loop).get()
        }
    }

    @Test func aliasesAreDurableWriteOnceAndPinned() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let aliases = try UploadAliases(dataDirectory: directory.path, threadPool: .singleton)
        let id = Digest128(high: 1, low: 2)
        let first = UploadAliases.Alias(
            id: id,
            digest: Digest128(high: 3, low: 4),
            mediaType: .png,
            fileName: "a.png",
            created: 5
        )
        #expect(aliases.alias(id) == nil)
        #expect(try await aliases.record(first, eventLoop: loop).get() == first)
        let other = UploadAliases.Alias(
            id: id,
            digest: Digest128(high: 9, low: 9),
            mediaType: .jpeg,
            fileName: "b.jpg",
            created: 6
        )
        #expect(try await aliases.record(other, eventLoop: loop).get() == first)  // write-once
        #expect(aliases.pinnedDigests == [first.digest])
        // Debris of an interrupted write is swept at load; a restart sees the record.
        #expect(
            FileManager.default.createFile(atPath: aliases.directory + "/\(id.hex).tmp.123", contents: Data("{".utf8))
        )
        let reloaded = try UploadAliases(dataDirectory: directory.path, threadPool: .singleton)
        #expect(try await reloaded.load() == 1)
        #expect(reloaded.alias(id) == first)
        #expect(Fixtures.files(under: aliases.directory) == [id.hex])
    }

    @Test func uploadedBlobsArePinnedAgainstGarbageCollection() async throws {
        let setup = try await BlobExpiryTests.Setup()
        defer { setup.directory.remove() }
        let uploaded = try await setup.put(1)
        let garbage = try await setup.put(2)
        for digest in [uploaded, garbage] { try setup.age(digest, secondsAgo: 86_400) }
        let aliases = try UploadAliases(dataDirectory: setup.directory.path + "/data", threadPool: .singleton)
        let alias = UploadAliases.Alias(
            id: Digest128(high: 7, low: 7),
            digest: uploaded,
            mediaType: .png,
            fileName: "a.png",
            created: 0
        )
        _ = try await aliases.record(alias, eventLoop: loop).get()
        let expiry = BlobExpiry(store: setup.store, results: setup.results, configuration: .init(maxBytes: nil)) {
            aliases.pinnedDigests
        }
        let report = try await expiry.sweep()
        #expect(report.collected == 1)
        #expect(setup.exists(uploaded))
        #expect(!setup.exists(garbage))
    }

    @Test func aFullDiskIs507MaterialAndLeavesNothingBehind() async throws {
        try await BlobStoreDiskFullTests.withTinyFilesystem(size: "256k") { mountPoint in
            let store = try BlobStore(directory: mountPoint + "/data", hasher: Fixtures.hasher, threadPool: .singleton)
            let error = await #expect(throws: StoreError.self) {
                _ = try await upload(Fixtures.randomBytes(1_000_000), pieces: 10, to: store)
            }
            #expect(error?.isDiskFull == true, "\(String(describing: error))")
            #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
            #expect(Fixtures.files(under: store.blobsDirectory).isEmpty)
            // The space is back.
            let small = Fixtures.randomBytes(8 * 1024)
            let record = try await upload(small, pieces: 2, to: store)
            #expect(try await store.read(record.digest) == small)
        }
    }
}
