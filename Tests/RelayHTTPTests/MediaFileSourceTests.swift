import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import RelayCore
import RelayStore
import Testing

@testable import RelayHTTP

/// MediaFileSource against a real BlobStore in a temporary directory: raw and LZ4 blobs, zero-copy and buffer modes.
@Suite struct MediaFileSourceTests {
    /// Small, so that a 300 kB blob is sent in several chunks.
    static let chunkSize = 64 * 1024

    /// A store in a fresh directory, removed at the end of the test.
    struct Fixture {
        let directory: String
        let store: BlobStore
        var source: MediaFileSource
        let eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let allocator = ByteBufferAllocator()

        init(chunkSize: Int = MediaFileSourceTests.chunkSize) throws {
            directory =
                FileManager.default.temporaryDirectory.appendingPathComponent("relayhttp-\(UUID().uuidString)").path
            let secret = (0..<KeyedHasher.secretSize).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            store = try BlobStore(directory: directory, hasher: KeyedHasher(secret: secret), threadPool: .singleton)
            source = MediaFileSource(store: store, threadPool: .singleton, chunkSize: chunkSize)
        }

        func remove() {
            try? FileManager.default.removeItem(atPath: directory)
        }

        func body(_ record: BlobRecord, _ range: Range<Int>, zeroCopy: Bool) async throws -> MediaBody? {
            try await source.body(
                of: record,
                range: range,
                zeroCopy: zeroCopy,
                allocator: allocator,
                eventLoop: eventLoop
            ).get()
        }

        /// Writes the body the way the handler does and returns the bytes that would reach the wire, with the parts'
        /// kinds. A `.fileRegion` part is read back from its file through its handle and offsets.
        func send(_ body: MediaBody) async throws -> (bytes: [UInt8], parts: [String]) {
            let collected = NIOLockedValueBox<([UInt8], [String])>(([], []))
            let fileIO = NonBlockingFileIO(threadPool: .singleton)
            let eventLoop = self.eventLoop
            let allocator = self.allocator
            try await eventLoop.flatSubmit {
                body.write(on: eventLoop) { part in
                    eventLoop.assertInEventLoop()
                    switch part {
                    case .byteBuffer(let buffer):
                        collected.withLockedValue {
                            $0.0 += Array(buffer.readableBytesView)
                            $0.1.append("buffer")
                        }
                        return eventLoop.makeSucceededVoidFuture()
                    case .fileRegion(let region):
                        return fileIO.read(
                            fileHandle: region.fileHandle,
                            fromOffset: Int64(region.readerIndex),
                            byteCount: region.readableBytes,
                            allocator: allocator,
                            eventLoop: eventLoop
                        ).map { buffer in
                            collected.withLockedValue {
                                $0.0 += Array(buffer.readableBytesView)
                                $0.1.append("fileRegion")
                            }
                        }
                    }
                }
            }.get()
            return collected.withLockedValue { $0 }
        }
    }

    /// What a PNG file looks like to the store: a signature, then incompressible bytes (stored raw).
    static func png(_ count: Int) -> [UInt8] {
        var generator = SplitMix64(seed: 0xC0FFEE)
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        return signature + (0..<(count - signature.count)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
    }

    /// A 16-bit mono PCM WAV of a tone: compressible, stored LZ4-framed.
    static func wav(samples: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        func append32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        func append16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        bytes += Array("RIFF".utf8)
        append32(UInt32(36 + samples * 2))
        bytes += Array("WAVEfmt ".utf8)
        append32(16)
        append16(1)
        append16(1)
        append32(22_050)
        append32(44_100)
        append16(2)
        append16(16)
        bytes += Array("data".utf8)
        append32(UInt32(samples * 2))
        for index in 0..<samples {
            append16(UInt16(bitPattern: Int16((sin(Double(index) * 0.125) * 9_000).rounded())))
        }
        return bytes
    }

    static func json(_ count: Int) -> [UInt8] {
        var text = "{\"images\":["
        var index = 0
        while text.utf8.count < count - 2 {
            text += "{\"url\":\"https://relay.example/files/\(index % 97).png\",\"width\":1024,\"height\":768},"
            index += 1
        }
        return Array(text.utf8.prefix(count - 2)) + Array("]}".utf8)
    }

    /// Ranges every blob is checked with, for a blob of `length` bytes.
    static func ranges(_ length: Int) -> [Range<Int>] {
        [
            0..<length, 0..<1, (length - 1)..<length, 1_000..<1_500, 0..<chunkSize, 0..<(chunkSize + 1),
            (chunkSize - 1)..<(chunkSize + 1), 7..<(7 + 3 * chunkSize + 5), (length - chunkSize - 3)..<length,
        ]
    }

    // MARK: - Raw blobs

    @Test func rawBlobZeroCopyIsAFileRegionOfTheRange() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let content = Self.png(300_000)
        let record = try await fixture.store.put(content, mediaType: .png)
        #expect(!record.isCompressed)
        #expect(
            try await fixture.source.record(record.digest, mediaType: .png, eventLoop: fixture.eventLoop).get()
                == record
        )

        var handles: [NIOFileHandle] = []
        for range in Self.ranges(content.count) {
            let body = try #require(try await fixture.body(record, range, zeroCopy: true))
            guard case .fileRegion(let region, let lease) = body else {
                Issue.record("expected a FileRegion for \(range), got \(body)")
                continue
            }
            #expect(region.readerIndex == range.lowerBound && region.endIndex == range.upperBound)
            #expect(region.fileHandle === lease.fileHandle)
            #expect(body.byteCount == range.count)
            let sent = try await fixture.send(body)
            #expect(sent.bytes == Array(content[range]), "\(range)")
            #expect(sent.parts == ["fileRegion"])
            #expect(lease.fileHandle.isOpen, "the loop keeps the file open for the next response")
            handles.append(lease.fileHandle)
        }
        #expect(handles.allSatisfy { $0 === handles[0] }, "one open file serves every range")
        #expect(fixture.source.openFiles.counts.opened.load(ordering: .relaxed) == 1)
    }

    @Test func rawBlobWithoutZeroCopyIsReadInChunks() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let content = Self.png(300_000)
        let record = try await fixture.store.put(content, mediaType: .png)

        for range in Self.ranges(content.count) {
            let body = try #require(try await fixture.body(record, range, zeroCopy: false))
            #expect(body.byteCount == range.count)
            let expectedParts = (range.count + Self.chunkSize - 1) / Self.chunkSize
            switch body {
            case .buffer:
                #expect(range.count <= Self.chunkSize, "one buffer only up to one chunk: \(range)")
            case .fileChunks(let chunks):
                #expect(range.count > Self.chunkSize)
                #expect(chunks.range == range && chunks.chunkSize == Self.chunkSize)
                #expect(chunks.handle.isOpen)
            case .fileRegion:
                Issue.record("no FileRegion without zero-copy")
            }
            let sent = try await fixture.send(body)
            #expect(sent.bytes == Array(content[range]), "\(range)")
            #expect(sent.parts == Array(repeating: "buffer", count: expectedParts), "\(range)")
            if case .fileChunks(let chunks) = body {
                #expect(!chunks.handle.isOpen, "write(on:) closes the file")
            }
        }
    }

    @Test func chunkedWriteStopsWhenTheClientIsGone() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let content = Self.png(300_000)
        let record = try await fixture.store.put(content, mediaType: .png)
        let body = try #require(try await fixture.body(record, 0..<content.count, zeroCopy: false))
        guard case .fileChunks(let chunks) = body else {
            Issue.record("expected chunks, got \(body)")
            return
        }
        struct ClientGone: Error {}
        let parts = NIOLockedValueBox(0)
        let eventLoop = fixture.eventLoop
        await #expect(throws: ClientGone.self) {
            try await eventLoop.flatSubmit {
                body.write(on: eventLoop) { _ in
                    let count = parts.withLockedValue {
                        $0 += 1
                        return $0
                    }
                    return count == 2 ? eventLoop.makeFailedFuture(ClientGone()) : eventLoop.makeSucceededVoidFuture()
                }
            }.get()
        }
        #expect(parts.withLockedValue { $0 } == 2, "no chunk is read after a failed write")
        #expect(!chunks.handle.isOpen)
    }

    /// Chunks own their file and close it; a region's file is the loop's to keep, and closes only with no cache.
    @Test(arguments: [MediaFileSource.defaultOpenFilesPerLoop, 0])
    func discardClosesTheFileOrReturnsItsLease(openFilesPerLoop: Int) async throws {
        var fixture = try Fixture()
        defer { fixture.remove() }
        fixture.source = MediaFileSource(
            store: fixture.store,
            threadPool: .singleton,
            chunkSize: Self.chunkSize,
            openFilesPerLoop: openFilesPerLoop
        )
        let record = try await fixture.store.put(Self.png(300_000), mediaType: .png)
        let region = try #require(try await fixture.body(record, 0..<10, zeroCopy: true))
        let chunks = try #require(try await fixture.body(record, 0..<200_000, zeroCopy: false))
        let handles = [region, chunks].compactMap { body -> NIOFileHandle? in
            switch body {
            case .fileRegion(_, let lease): lease.fileHandle
            case .fileChunks(let chunks): chunks.handle
            case .buffer: nil
            }
        }
        try #require(handles.count == 2)
        #expect(handles.allSatisfy { $0.isOpen })
        region.discard()  // off the loop: the lease goes back there
        chunks.discard()
        try await fixture.eventLoop.submit {}.get()
        #expect(!handles[1].isOpen)
        #expect(handles[0].isOpen == (openFilesPerLoop > 0))
    }

    // MARK: - Compressed blobs

    @Test(arguments: ["wav", "json"])
    func compressedBlobIsDecompressedAndSliced(kind: String) async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let (content, mediaType) =
            kind == "wav" ? (Self.wav(samples: 150_000), MediaType.wav) : (Self.json(300_000), .json)
        let record = try await fixture.store.put(content, mediaType: mediaType)
        #expect(record.isCompressed)
        #expect(record.size == content.count)
        #expect(
            try await fixture.source.record(record.digest, mediaType: mediaType, eventLoop: fixture.eventLoop).get()
                == record
        )

        for range in Self.ranges(content.count) {
            for zeroCopy in [true, false] {
                let body = try #require(try await fixture.body(record, range, zeroCopy: zeroCopy))
                guard case .buffer(let buffer) = body else {
                    Issue.record("a compressed blob is sent from memory, got \(body)")
                    continue
                }
                #expect(Array(buffer.readableBytesView) == Array(content[range]), "\(range) zeroCopy: \(zeroCopy)")
                let sent = try await fixture.send(body)
                #expect(sent.bytes == Array(content[range]))
                #expect(sent.parts == ["buffer"])
            }
        }
    }

    // MARK: - Missing, damaged and odd requests

    @Test func removedBlobGivesNil() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let raw = try await fixture.store.put(Self.png(10_000), mediaType: .png)
        let compressed = try await fixture.store.put(Self.json(10_000), mediaType: .json)
        try await fixture.store.remove(raw.digest)
        try await fixture.store.remove(compressed.digest)
        for zeroCopy in [true, false] {
            #expect(try await fixture.body(raw, 0..<10, zeroCopy: zeroCopy) == nil)
            #expect(try await fixture.body(compressed, 0..<10, zeroCopy: zeroCopy) == nil)
        }
        #expect(try await fixture.source.record(raw.digest, mediaType: .png, eventLoop: fixture.eventLoop).get() == nil)
    }

    @Test func truncatedRawFileFailsInsteadOfSendingShort() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let record = try await fixture.store.put(Self.png(300_000), mediaType: .png)
        #expect(truncate(fixture.store.path(for: record.digest, compressed: false), 100_000) == 0)
        for zeroCopy in [true, false] {
            for range in [0..<10, 0..<300_000, 250_000..<260_000] {
                await #expect(throws: StoreError.corrupt(record.digest)) {
                    _ = try await fixture.body(record, range, zeroCopy: zeroCopy)
                }
            }
        }
    }

    /// Cut in the middle (an empty chunk follows) and inside the last chunk (only the last chunk is short).
    @Test(arguments: [100_000, 299_000])
    func fileTruncatedWhileStreamingFailsTheWrite(truncatedSize: Int) async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let record = try await fixture.store.put(Self.png(300_000), mediaType: .png)
        let body = try #require(try await fixture.body(record, 0..<300_000, zeroCopy: false))
        #expect(truncate(fixture.store.path(for: record.digest, compressed: false), off_t(truncatedSize)) == 0)
        await #expect(throws: StoreError.corrupt(record.digest)) {
            _ = try await fixture.send(body)
        }
        if case .fileChunks(let chunks) = body { #expect(!chunks.handle.isOpen) }
    }

    @Test func rangeOutsideTheRecordFails() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let record = try await fixture.store.put(Self.png(1_000), mediaType: .png)
        await #expect(throws: StoreError.self) { _ = try await fixture.body(record, 0..<1_001, zeroCopy: true) }
        await #expect(throws: StoreError.self) { _ = try await fixture.body(record, 999..<1_001, zeroCopy: false) }
    }

    @Test func emptyRangeNeedsNoFile() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let record = BlobRecord(digest: Digest128(high: 1, low: 2), size: 0, storedSize: 0, mediaType: .png)
        let body = try #require(try await fixture.body(record, 0..<0, zeroCopy: true))
        #expect(body.byteCount == 0)
    }

    /// The whole path the handler takes, minus the channel: record → plan → body → bytes.
    @Test func recordPlanAndBodyTogether() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let content = Self.png(200_000)
        let stored = try await fixture.store.put(content, mediaType: .png)
        let record = try #require(
            try await fixture.source.record(stored.digest, mediaType: .png, eventLoop: fixture.eventLoop).get()
        )
        for (field, expected) in [
            ("bytes=-100", (content.count - 100)..<content.count), ("bytes=5-", 5..<content.count),
        ] {
            let plan = MediaResponsePlan(method: .GET, requestHeaders: ["Range": field], record: record)
            #expect(plan.status == .partialContent)
            let range = try #require(plan.body)
            #expect(range == expected)
            for zeroCopy in [true, false] {
                let body = try #require(try await fixture.body(record, range, zeroCopy: zeroCopy))
                #expect(String(body.byteCount) == plan.headers.first(name: "content-length"))
                #expect(try await fixture.send(body).bytes == Array(content[range]))
            }
        }
    }

    @Test func aCachedRecordOfARemovedBlobServesNothingInsteadOfStaleBytes() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let png = Self.png(10_000)
        let stored = try await fixture.store.put(png, mediaType: .png)
        let first = try await fixture.source.record(stored.digest, mediaType: .png, eventLoop: fixture.eventLoop).get()
        #expect(first == stored)
        #expect(try await fixture.store.remove(stored.digest))
        // The record is remembered (blobs are immutable), but the bytes are gone: the body is nil, answered 404.
        let again = try await fixture.source.record(stored.digest, mediaType: .png, eventLoop: fixture.eventLoop).get()
        #expect(again == stored)
        let body = try await fixture.body(stored, 0..<stored.size, zeroCopy: true)
        #expect(body == nil)
        // A digest never stored is not remembered as missing either way: put it now and it is found.
        let later = Self.png(20_000)
        let secret = (0..<KeyedHasher.secretSize).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }  // the fixture's
        let missing = KeyedHasher(secret: secret).digest(later)
        #expect(try await fixture.source.record(missing, mediaType: .png, eventLoop: fixture.eventLoop).get() == nil)
        let put = try await fixture.store.put(later, mediaType: .png)
        #expect(put.digest == missing)
        #expect(try await fixture.source.record(missing, mediaType: .png, eventLoop: fixture.eventLoop).get() == put)
    }

}
