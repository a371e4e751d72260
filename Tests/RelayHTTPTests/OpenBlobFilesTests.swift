import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RelayCore
import RelayStore
import Testing

@testable import RelayHTTP

/// The per-loop cache of open raw blob files behind zero-copy bodies: real files, a real two-loop group and thread
/// pool, and bytes sent with sendfile over real TCP connections.
@Suite struct OpenBlobFilesTests {
    /// A store in a fresh directory with its own loops and pool, all gone at the end of `run`.
    struct Fixture: Sendable {
        let directory: String
        let group: MultiThreadedEventLoopGroup
        let pool: NIOThreadPool
        let store: BlobStore
        let source: MediaFileSource
        let loops: [any EventLoop]

        static func run(openFilesPerLoop: Int = 64, _ body: (Fixture) async throws -> Void) async throws {
            let fixture = try Fixture(openFilesPerLoop: openFilesPerLoop)
            do {
                try await body(fixture)
            } catch {
                await fixture.shutdown()
                throw error
            }
            await fixture.shutdown()
        }

        private init(openFilesPerLoop: Int) throws {
            directory =
                FileManager.default.temporaryDirectory.appendingPathComponent("openblobs-\(UUID().uuidString)").path
            group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
            loops = Array(group.makeIterator())
            pool = NIOThreadPool(numberOfThreads: 2)
            pool.start()
            let secret = (0..<KeyedHasher.secretSize).map { UInt8(truncatingIfNeeded: $0 &* 53 &+ 7) }
            store = try BlobStore(directory: directory, hasher: KeyedHasher(secret: secret), threadPool: pool)
            source = MediaFileSource(store: store, threadPool: pool, openFilesPerLoop: openFilesPerLoop)
        }

        private func shutdown() async {
            try? await group.shutdownGracefully()
            try? await pool.shutdownGracefully()
            try? FileManager.default.removeItem(atPath: directory)
        }

        /// A raw blob of `count` incompressible bytes (distinct per `seed`), with its content.
        func rawBlob(_ count: Int, seed: UInt64 = 1) async throws -> (BlobRecord, [UInt8]) {
            var generator = SplitMix64(seed: seed)
            let content: [UInt8] =
                [0x89, 0x50, 0x4E, 0x47] + (0..<(count - 4)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let record = try await store.put(content, mediaType: .png)
            #expect(!record.isCompressed)
            return (record, content)
        }

        /// `MediaFileSource.body` with zero-copy, as the plain-HTTP handler asks for it.
        func body(_ record: BlobRecord, _ range: Range<Int>, on loop: any EventLoop) async throws -> MediaBody? {
            try await source.body(
                of: record,
                range: range,
                zeroCopy: true,
                allocator: ByteBufferAllocator(),
                eventLoop: loop
            ).get()
        }

        /// The fast path's call, made on `loop`.
        func bodyIfOpen(_ record: BlobRecord, _ range: Range<Int>, on loop: any EventLoop) async throws -> MediaBody? {
            let source = self.source
            return try await loop.submit { source.zeroCopyBodyIfOpen(of: record, range: range, eventLoop: loop) }.get()
        }

        /// How `loop`'s cache holds `digest`: nil when not cached, else its lease count.
        func leases(of digest: Digest128, on loop: any EventLoop) async throws -> Int? {
            let files = source.openFiles
            return try await loop.submit { files.files(on: loop)?.peek(digest)?.leases }.get()
        }

        func cachedCount(on loop: any EventLoop) async throws -> Int {
            let files = source.openFiles
            return try await loop.submit { files.files(on: loop)?.count ?? -1 }.get()
        }

        var opened: Int { source.openFiles.counts.opened.load(ordering: .relaxed) }
        var openNow: Int { source.openFiles.counts.open }
    }

    static func handle(of body: MediaBody?) -> NIOFileHandle? {
        guard case .fileRegion(let region, let lease)? = body else { return nil }
        #expect(region.fileHandle === lease.fileHandle)
        return lease.fileHandle
    }

    // MARK: - Sending over TCP

    /// Collects what a connection receives until `expected` bytes arrived.
    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let expected: Int
        let received: EventLoopPromise<[UInt8]>
        private let bytes = NIOLockedValueBox<[UInt8]>([])

        init(expected: Int, received: EventLoopPromise<[UInt8]>) {
            self.expected = expected
            self.received = received
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = Self.unwrapInboundIn(data)
            let all = bytes.withLockedValue {
                $0 += buffer.readableBytesView
                return $0
            }
            if all.count >= expected { received.succeed(all) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            received.succeed(bytes.withLockedValue { $0 })
        }
    }

    /// Writes every body at once on one TCP connection whose sending end is on `loop` (so all their leases are out
    /// together, their FileRegions sent with sendfile one after another), and returns what the other end received.
    static func send(_ bodies: [MediaBody], on loop: any EventLoop) async throws -> [UInt8] {
        let expected = bodies.reduce(0) { $0 + $1.byteCount }
        let received = loop.makePromise(of: [UInt8].self)
        let server = try await ServerBootstrap(group: loop)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(expected: expected, received: received))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let client = try await ClientBootstrap(group: loop).connect(host: "127.0.0.1", port: port).get()
        try await loop.flatSubmit {
            EventLoopFuture.andAllSucceed(
                bodies.map { body in body.write(on: loop) { part in client.writeAndFlush(part) } },
                on: loop
            )
        }.get()
        let bytes = try await received.futureResult.get()
        try? await client.close()
        try? await server.close()
        return bytes
    }

    // MARK: - Tests

    @Test func theSecondBodyOfAHotFileOpensNothing() async throws {
        try await Fixture.run { fixture in
            let loop = fixture.loops[0]
            let (record, content) = try await fixture.rawBlob(300_000)
            #expect(try await fixture.bodyIfOpen(record, 0..<10, on: loop) == nil, "nothing is open before a body")

            let first = try #require(try await fixture.body(record, 0..<content.count, on: loop))
            #expect(try await Self.send([first], on: loop) == content)
            #expect(fixture.opened == 1)
            #expect(try await fixture.leases(of: record.digest, on: loop) == 0, "the write gave its lease back")

            let second = try #require(try await fixture.body(record, 1_000..<2_000, on: loop))
            let fast = try #require(try await fixture.bodyIfOpen(record, 5..<300_000, on: loop))
            #expect(fixture.opened == 1, "no open for a file this loop has open")
            #expect(Self.handle(of: second) === Self.handle(of: first))
            #expect(Self.handle(of: fast) === Self.handle(of: first))
            #expect(fast.byteCount == 299_995)
            #expect(try await Self.send([second, fast], on: loop) == Array(content[1_000..<2_000] + content[5...]))
            #expect(fixture.opened == 1 && fixture.openNow == 1)
        }
    }

    @Test func manyLeasesOnOneLoopShareOneHandle() async throws {
        try await Fixture.run { fixture in
            let loop = fixture.loops[1]
            let (record, content) = try await fixture.rawBlob(200_000)
            let ranges = (0..<32).map { index in (index * 5_000)..<(index * 5_000 + 20_000 + index) }
            var bodies: [MediaBody] = []
            for range in ranges {
                bodies.append(try #require(try await fixture.body(record, range, on: loop)))
            }
            for range in ranges {
                bodies.append(try #require(try await fixture.bodyIfOpen(record, range, on: loop)))
            }
            let handles = bodies.compactMap(Self.handle(of:))
            #expect(handles.count == 64 && handles.allSatisfy { $0 === handles[0] })
            #expect(try await fixture.leases(of: record.digest, on: loop) == 64)
            #expect(fixture.opened == 1)

            let expected = (ranges + ranges).flatMap { content[$0] }
            #expect(try await Self.send(bodies, on: loop) == expected)
            #expect(try await fixture.leases(of: record.digest, on: loop) == 0)
            #expect(handles[0].isOpen, "kept for the next response")
        }
    }

    @Test func twoLoopsGetTwoHandles() async throws {
        try await Fixture.run { fixture in
            let (record, content) = try await fixture.rawBlob(100_000)
            let onFirst = try #require(try await fixture.body(record, 0..<100_000, on: fixture.loops[0]))
            let onSecond = try #require(try await fixture.body(record, 0..<100_000, on: fixture.loops[1]))
            #expect(fixture.opened == 2)
            let first = try #require(Self.handle(of: onFirst))
            let second = try #require(Self.handle(of: onSecond))
            #expect(first !== second)
            guard case .fileRegion(_, let lease) = onSecond else { return }
            #expect(lease.eventLoop === fixture.loops[1])
            async let sentFirst = Self.send([onFirst], on: fixture.loops[0])
            async let sentSecond = Self.send([onSecond], on: fixture.loops[1])
            #expect(try await sentFirst == content)
            #expect(try await sentSecond == content)
            // Each loop answers from its own file from now on.
            let fastFirst = try await fixture.bodyIfOpen(record, 0..<1, on: fixture.loops[0])
            let fastSecond = try await fixture.bodyIfOpen(record, 0..<1, on: fixture.loops[1])
            #expect(Self.handle(of: fastFirst) === first && Self.handle(of: fastSecond) === second)
            fastFirst?.discard()
            fastSecond?.discard()
        }
    }

    @Test func evictionClosesOnlyUnleasedFilesAndBoundsTheOpenOnes() async throws {
        let capacity = 4
        try await Fixture.run(openFilesPerLoop: capacity) { fixture in
            let loop = fixture.loops[0]
            var blobs: [(BlobRecord, [UInt8])] = []
            for seed in 0..<12 {
                blobs.append(try await fixture.rawBlob(8_000 + seed, seed: UInt64(seed)))
            }
            // Held across the whole churn: evicted early, but its file must stay open until it is sent.
            let held = try #require(try await fixture.body(blobs[0].0, 0..<blobs[0].0.size, on: loop))
            let heldHandle = try #require(Self.handle(of: held))

            for (index, (record, _)) in blobs.enumerated().dropFirst() {
                try #require(try await fixture.body(record, 0..<100, on: loop)).discard()
                // Blob 1 is used after each new file: never the least recently used, it is never evicted.
                if index > 1 { try #require(try await fixture.bodyIfOpen(blobs[1].0, 0..<1, on: loop)).discard() }
                #expect(try await fixture.cachedCount(on: loop) <= capacity)
                #expect(fixture.openNow <= capacity + 1, "the cache's files, plus the held one")
            }
            #expect(try await fixture.cachedCount(on: loop) == capacity)
            #expect(try await fixture.leases(of: blobs[0].0.digest, on: loop) == nil, "evicted")
            #expect(heldHandle.isOpen, "an evicted file in flight stays open")
            #expect(try await fixture.leases(of: blobs[1].0.digest, on: loop) == 0, "recently used: still cached")
            #expect(try await fixture.bodyIfOpen(blobs[2].0, 0..<1, on: loop) == nil, "least recently used: evicted")
            #expect(fixture.openNow == capacity + 1)

            #expect(try await Self.send([held], on: loop) == blobs[0].1)
            #expect(!heldHandle.isOpen, "closed with its last lease")
            #expect(fixture.openNow == capacity)
            #expect(fixture.opened == blobs.count)
        }
    }

    @Test func aRemovedBlobIsNotServedFromItsOpenFile() async throws {
        try await Fixture.run { fixture in
            let loop = fixture.loops[0]
            let (record, content) = try await fixture.rawBlob(50_000, seed: 1)
            let (other, _) = try await fixture.rawBlob(50_000, seed: 2)
            let (batched, _) = try await fixture.rawBlob(50_000, seed: 3)
            for blob in [record, other, batched] {
                try #require(try await fixture.body(blob, 0..<10, on: loop)).discard()
            }
            // In flight while the blob is removed: it is sent whole from the file it holds.
            let inFlight = try #require(try await fixture.bodyIfOpen(record, 0..<content.count, on: loop))
            let handle = try #require(Self.handle(of: inFlight))
            #expect(fixture.opened == 3)

            #expect(try await fixture.store.remove(record.digest))
            #expect(try await fixture.bodyIfOpen(record, 0..<10, on: loop) == nil)
            #expect(try await fixture.body(record, 0..<10, on: loop) == nil, "404, not stale bytes")
            #expect(try await fixture.leases(of: record.digest, on: loop) == nil)
            #expect(handle.isOpen)
            #expect(try await Self.send([inFlight], on: loop) == content)
            #expect(!handle.isOpen)

            // The expiry sweeper's batch removal too.
            #expect(try await fixture.store.remove([batched.digest]) == [batched.digest])
            #expect(try await fixture.bodyIfOpen(batched, 0..<10, on: loop) == nil)

            // A blob not removed survives the check the removals caused.
            let kept = try await fixture.bodyIfOpen(other, 0..<10, on: loop)
            #expect(kept != nil)
            kept?.discard()
            #expect(fixture.opened == 3, "the re-checks opened nothing")

            // Stored again, it is opened afresh and served.
            let again = try await fixture.store.put(content, mediaType: .png)
            let body = try #require(try await fixture.body(again, 0..<content.count, on: loop))
            #expect(try await Self.send([body], on: loop) == content)
            #expect(fixture.opened == 4)
            try await loop.submit {}.get()
            #expect(fixture.openNow == 2, "the removed blobs' files are closed")
        }
    }

    @Test func discardReturnsTheLeaseOnItsLoop() async throws {
        try await Fixture.run { fixture in
            let loop = fixture.loops[1]
            let (record, _) = try await fixture.rawBlob(10_000)
            let bodies = [
                try #require(try await fixture.body(record, 0..<10, on: loop)),
                try #require(try await fixture.body(record, 10..<20, on: loop)),
            ]
            #expect(try await fixture.leases(of: record.digest, on: loop) == 2)
            bodies[0].discard()  // off the loop
            try await loop.submit { bodies[1].discard() }.get()  // on it
            #expect(try await fixture.leases(of: record.digest, on: loop) == 0)
            #expect(Self.handle(of: bodies[0])?.isOpen == true, "cached for the next response")
        }
    }

    @Test func onlyRawOpenFilesInRangeAreFastPathBodies() async throws {
        try await Fixture.run { fixture in
            let loop = fixture.loops[0]
            let (record, _) = try await fixture.rawBlob(10_000)
            let json = Array(String(repeating: "{\"a\":1},", count: 2_000).utf8)
            let compressed = try await fixture.store.put(json, mediaType: .json)
            #expect(compressed.isCompressed)

            #expect(fixture.source.cachedRecord(record.digest, mediaType: .png) == nil)
            #expect(try await fixture.source.record(record.digest, mediaType: .png, eventLoop: loop).get() == record)
            #expect(fixture.source.cachedRecord(record.digest, mediaType: .png) == record)

            try #require(try await fixture.body(record, 0..<10, on: loop)).discard()
            let decompressed = try await fixture.body(compressed, 0..<10, on: loop)
            guard case .buffer? = decompressed else {
                Issue.record("an LZ4 blob is sent from memory, got \(String(describing: decompressed))")
                return
            }
            #expect(try await fixture.bodyIfOpen(compressed, 0..<10, on: loop) == nil)
            #expect(try await fixture.bodyIfOpen(record, 0..<10_001, on: loop) == nil)
            #expect(try await fixture.bodyIfOpen(record, 5..<5, on: loop) == nil)
            let last = try await fixture.bodyIfOpen(record, 9_999..<10_000, on: loop)
            #expect(last?.byteCount == 1)
            last?.discard()
        }
    }
}
