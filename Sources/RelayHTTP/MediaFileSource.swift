public import NIOCore
public import NIOPosix
public import RelayCore
public import RelayStore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How the bytes of a media response reach the wire. Every case that holds a file holds it until the caller gives the
/// body up, exactly once: by `write(on:_:)` (which lets the file go when the last write is done, whether it succeeded
/// or not) or by `discard()` (when the response is abandoned before its body is written).
public enum MediaBody: Sendable {
    /// A raw blob on a plain-HTTP/1.1 connection: written as `.fileRegion`, which NIO sends with `sendfile(2)`.
    /// Only for pipelines in which no handler needs the bytes (no TLS, no compression, not HTTP/2), and only on the
    /// event loop `lease.eventLoop`: the file is one its cache keeps open (shared with other responses there), and
    /// the lease, not the body, decides when it is closed.
    case fileRegion(FileRegion, lease: OpenBlobFileLease)
    /// The range in memory: a slice of a decompressed LZ4 blob, or a raw range of at most one chunk.
    case buffer(ByteBuffer)
    /// A raw range larger than one chunk where zero-copy is not possible (TLS): read and written chunk by chunk.
    case fileChunks(MediaFileChunks)

    /// How many bytes the body holds: what `Content-Length` says.
    public var byteCount: Int {
        switch self {
        case .fileRegion(let region, _): region.readableBytes
        case .buffer(let buffer): buffer.readableBytes
        case .fileChunks(let chunks): chunks.range.count
        }
    }

    /// Writes the body as one or more parts through `writePart`, then closes the file it holds (or returns its lease).
    ///
    /// Call it on `eventLoop` (the channel's); `writePart` is called there too, typically as
    /// `context.writeAndFlush(wrapOutboundOut(.body(part)))`. For `.fileChunks` the next chunk is read only once the
    /// previous part's future has succeeded, so a slow client holds at most one chunk in memory; a failed part write
    /// (the client left) stops the reading. The returned future succeeds when the last part is written; when it
    /// fails the body was cut short, so the response must not be ended normally: close the connection.
    public func write(
        on eventLoop: any EventLoop,
        _ writePart: @escaping @Sendable (IOData) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Void> {
        switch self {
        case .buffer(let buffer):
            return writePart(.byteBuffer(buffer))
        case .fileRegion(let region, let lease):
            return writePart(.fileRegion(region)).always { _ in
                lease.release()
            }
        case .fileChunks(let chunks):
            let digest = chunks.digest
            // The file ending early (truncated under us) shows as an empty chunk, or as a short last one.
            let sent = NIOLoopBoundBox(0, eventLoop: eventLoop)
            return chunks.fileIO.readChunked(
                fileHandle: chunks.handle,
                fromOffset: Int64(chunks.range.lowerBound),
                byteCount: chunks.range.count,
                chunkSize: chunks.chunkSize,
                allocator: chunks.allocator,
                eventLoop: eventLoop
            ) { chunk in
                guard chunk.readableBytes > 0 else { return eventLoop.makeFailedFuture(StoreError.corrupt(digest)) }
                sent.value += chunk.readableBytes
                return writePart(.byteBuffer(chunk))
            }.flatMapThrowing {
                guard sent.value == chunks.range.count else { throw StoreError.corrupt(digest) }
            }.always { _ in
                _ = try? chunks.handle.close()
            }
        }
    }

    /// Closes the file (or gives back its lease) without writing: for a response abandoned after the body was loaded
    /// (the client left, or the exchange is over). May be called off the loop: a lease then goes back on its loop.
    public func discard() {
        switch self {
        case .buffer:
            break
        case .fileRegion(_, let lease):
            lease.release()
        case .fileChunks(let chunks):
            _ = try? chunks.handle.close()
        }
    }
}

/// An open raw blob and the range of it to send in chunks (see `MediaBody.write(on:_:)`).
public struct MediaFileChunks: Sendable {
    /// Open on the blob's file; closed by `MediaBody.write(on:_:)` or `MediaBody.discard()`.
    public let handle: NIOFileHandle
    /// Bytes of the file to send.
    public let range: Range<Int>
    public let chunkSize: Int
    let digest: Digest128
    let fileIO: NonBlockingFileIO
    let allocator: ByteBufferAllocator
}

/// Loads the body a `MediaResponsePlan` calls for from the blob store, with every blocking call on the thread pool and
/// none on the event loop.
///
/// A request takes two steps around the plan: `record` (a `stat`, plus the frame header of an LZ4 blob) gives the
/// length the plan needs; then, only when the plan has a body, `body(of:range:zeroCopy:allocator:eventLoop:)`:
/// - a raw blob with `zeroCopy` (plain HTTP/1.1): sent as a `FileRegion` (sendfile) of a file the event loop keeps
///   open (`OpenBlobFiles`): a hot file costs no pool trip and no system call; a cold one is opened on the pool first;
/// - a raw blob without it (TLS): opened and, for a range of up to `chunkSize` bytes, read in the same pool job into
///   one `ByteBuffer`; a longer range is read and written `chunkSize` bytes at a time, each read waiting for the
///   previous write (`MediaBody.fileChunks`), so a multi-megabyte video under TLS never sits in memory whole;
/// - an LZ4 blob: `BlobStore.read` (decompressed and checked against its digest), then the range copied out.
///
/// Sizes are checked against the record: a raw file whose size differs from it, or ends early while being read,
/// fails with `StoreError.corrupt` rather than sending fewer bytes than `Content-Length` promised.
///
/// A byte-level fast path on the event loop can skip both futures: `cachedRecord` and `zeroCopyBodyIfOpen` answer at
/// once, from memory, or nil when the async path is needed.
public struct MediaFileSource: Sendable {
    /// 256 KiB: large enough that the pool round trip is noise next to the TLS work, small enough to stay in cache.
    public static let defaultChunkSize = 256 * 1024
    /// Raw blob files each event loop keeps open for sendfile once no response is sending them.
    public static let defaultOpenFilesPerLoop = 64

    public let store: BlobStore
    /// Bytes per read for raw blobs sent without zero-copy; also the largest range read into one buffer.
    public let chunkSize: Int
    private let threadPool: NIOThreadPool
    private let fileIO: NonBlockingFileIO
    let openFiles: OpenBlobFiles

    /// - Parameters:
    ///   - threadPool: where files are opened and read; the store's own pool is a good choice.
    ///   - openFilesPerLoop: raw blob files each event loop keeps open for zero-copy responses (LRU); 0 opens and
    ///     closes the file for every response.
    public init(
        store: BlobStore,
        threadPool: NIOThreadPool,
        chunkSize: Int = MediaFileSource.defaultChunkSize,
        openFilesPerLoop: Int = MediaFileSource.defaultOpenFilesPerLoop
    ) {
        self.store = store
        self.threadPool = threadPool
        self.fileIO = NonBlockingFileIO(threadPool: threadPool)
        self.chunkSize = max(1, chunkSize)
        self.openFiles = OpenBlobFiles(capacityPerLoop: openFilesPerLoop)
    }

    /// The blob's record (length, and whether it is stored compressed), or nil when it is not stored. Completes on
    /// `eventLoop`; fails with the store's `StoreError`.
    public func record(
        _ digest: Digest128,
        mediaType: MediaType,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<BlobRecord?> {
        // Blobs are immutable (content-addressed), so a record found once stays true until the blob is removed, and
        // then `body` finds the file gone (the open fails, or the loop's open file is found unlinked) and answers
        // 404: a hot file costs no trip to the thread pool here.
        let key = RecordKey(digest: digest, mediaType: mediaType)
        if let cached = recent.records.withLock({ $0[key] }) {
            return eventLoop.makeSucceededFuture(cached)
        }
        let store = self.store
        let recent = self.recent
        let promise = eventLoop.makePromise(of: BlobRecord?.self)
        promise.completeWithTask {
            let found = try await store.record(digest, mediaType: mediaType)
            if let found {
                recent.records.withLock { cache in
                    if cache.count >= Self.recentRecordLimit { cache.removeAll(keepingCapacity: true) }
                    cache[key] = found
                }
            }
            return found
        }
        return promise.futureResult
    }

    /// The record `record` remembers for the blob, or nil: no I/O, callable anywhere. A remembered record may be of a
    /// blob removed since; its body then is nil (404).
    public func cachedRecord(_ digest: Digest128, mediaType: MediaType) -> BlobRecord? {
        recent.records.withLock { $0[RecordKey(digest: digest, mediaType: mediaType)] }
    }

    private struct RecordKey: Hashable, Sendable {
        let digest: Digest128
        let mediaType: MediaType
    }

    /// Records kept for hot files (negative answers are never kept: an upload may add the blob any moment).
    static let recentRecordLimit = 8192
    private let recent = RecentRecords()

    private final class RecentRecords: Sendable {
        let records = Mutex<[RecordKey: BlobRecord]>([:])
    }

    public func body(
        of record: BlobRecord,
        range: Range<Int>,
        zeroCopy: Bool,
        allocator: ByteBufferAllocator,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<MediaBody?> {
        guard range.lowerBound >= 0, range.upperBound <= record.size else {
            return eventLoop.makeFailedFuture(StoreError.corrupt(record.digest))
        }
        if range.isEmpty {
            return eventLoop.makeSucceededFuture(.buffer(allocator.buffer(capacity: 0)))
        }
        if record.isCompressed {
            return decompressedBody(of: record, range: range, allocator: allocator, eventLoop: eventLoop)
        }
        if zeroCopy {
            if eventLoop.inEventLoop { return zeroCopyBody(of: record, range: range, eventLoop: eventLoop) }
            return eventLoop.flatSubmit { self.zeroCopyBody(of: record, range: range, eventLoop: eventLoop) }
        }
        let path = store.path(for: record.digest, compressed: false)
        let chunkSize = self.chunkSize
        let fileIO = self.fileIO
        return threadPool.runIfActive(eventLoop: eventLoop) { () throws -> MediaBody? in
            guard let handle = try Self.open(path) else { return nil }
            do {
                guard try Self.size(of: handle) == record.size else { throw StoreError.corrupt(record.digest) }
                if range.count <= chunkSize {
                    var buffer = allocator.buffer(capacity: range.count)
                    try Self.read(handle, range: range, into: &buffer, digest: record.digest)
                    try handle.close()
                    return .buffer(buffer)
                }
                let chunks = MediaFileChunks(
                    handle: handle,
                    range: range,
                    chunkSize: chunkSize,
                    digest: record.digest,
                    fileIO: fileIO,
                    allocator: allocator
                )
                return .fileChunks(chunks)
            } catch {
                _ = try? handle.close()
                throw error
            }
        }
    }

    /// A `.fileRegion` body of a raw blob whose file this loop already keeps open and which was not removed since;
    /// nil otherwise (compressed, not open here, removed, or `range` not inside the blob): then the async `body`
    /// opens it (and keeps it open for the next time), or answers nil (404) or fails. No I/O except, right after a
    /// blob removal anywhere in the store, one `fstat`. Call it on `eventLoop`, the channel's.
    public func zeroCopyBodyIfOpen(of record: BlobRecord, range: Range<Int>, eventLoop: any EventLoop) -> MediaBody? {
        eventLoop.preconditionInEventLoop()
        guard !record.isCompressed, !range.isEmpty, range.lowerBound >= 0, range.upperBound <= record.size,
            let file = openFiles.files(on: eventLoop)?.file(record.digest, removalGeneration: store.removalGeneration),
            file.size == record.size
        else { return nil }
        return Self.regionBody(file.lease(on: eventLoop), range: range)
    }

    /// `body` for a raw blob with `zeroCopy`, on `eventLoop`: from the loop's open files, or opened on the pool and
    /// added to them.
    private func zeroCopyBody(
        of record: BlobRecord,
        range: Range<Int>,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<MediaBody?> {
        // Read before the open: a removal after this point bumps it past what the new entry remembers.
        let generation = store.removalGeneration
        if let file = openFiles.files(on: eventLoop)?.file(record.digest, removalGeneration: generation) {
            guard file.size == record.size else { return eventLoop.makeFailedFuture(StoreError.corrupt(record.digest)) }
            return eventLoop.makeSucceededFuture(Self.regionBody(file.lease(on: eventLoop), range: range))
        }
        let path = store.path(for: record.digest, compressed: false)
        let openFiles = self.openFiles
        return threadPool.runIfActive(eventLoop: eventLoop) { () throws -> NIOFileHandle? in
            guard let handle = try Self.open(path) else { return nil }
            openFiles.counts.opened.add(1, ordering: .relaxed)
            do {
                guard try Self.size(of: handle) == record.size else { throw StoreError.corrupt(record.digest) }
                return handle
            } catch {
                _ = try? handle.close()
                openFiles.counts.closed.add(1, ordering: .relaxed)
                throw error
            }
        }.map { opened -> MediaBody? in
            guard let handle = opened else { return nil }
            let digest = record.digest
            let lease =
                openFiles.files(on: eventLoop)?.adopt(handle, digest: digest, size: record.size, generation: generation)
                ?? openFiles.uncached(handle, digest: digest, size: record.size, eventLoop: eventLoop)
            return Self.regionBody(lease, range: range)
        }
    }

    private static func regionBody(_ lease: OpenBlobFileLease, range: Range<Int>) -> MediaBody {
        let region = FileRegion(fileHandle: lease.fileHandle, readerIndex: range.lowerBound, endIndex: range.upperBound)
        return .fileRegion(region, lease: lease)
    }

    private func decompressedBody(
        of record: BlobRecord,
        range: Range<Int>,
        allocator: ByteBufferAllocator,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<MediaBody?> {
        let store = self.store
        let promise = eventLoop.makePromise(of: MediaBody?.self)
        promise.completeWithTask {
            guard let content = try await store.read(record.digest) else { return nil }
            guard content.count == record.size else { throw StoreError.corrupt(record.digest) }
            return .buffer(allocator.buffer(bytes: content[range]))
        }
        return promise.futureResult
    }

    // MARK: - Blocking, on the thread pool

    /// The open file; nil when it does not exist.
    private static func open(_ path: String) throws -> NIOFileHandle? {
        do {
            return try NIOFileHandle(_deprecatedPath: path)
        } catch let error as IOError where error.errnoCode == ENOENT || error.errnoCode == ENOTDIR {
            return nil
        }
    }

    private static func size(of handle: NIOFileHandle) throws -> Int {
        try handle.withUnsafeFileDescriptor { descriptor in
            var info = stat()
            guard fstat(descriptor, &info) == 0 else { throw IOError(errnoCode: errno, reason: "fstat") }
            return Int(info.st_size)
        }
    }

    /// Appends exactly `range` of the file to `buffer` with `pread` (the shared seek pointer is never used).
    private static func read(
        _ handle: NIOFileHandle,
        range: Range<Int>,
        into buffer: inout ByteBuffer,
        digest: Digest128
    ) throws {
        try handle.withUnsafeFileDescriptor { descriptor in
            var offset = range.lowerBound
            while offset < range.upperBound {
                let wanted = range.upperBound - offset
                var result = 0
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { pointer in
                    result = pread(descriptor, pointer.baseAddress, wanted, off_t(offset))
                    return max(result, 0)
                }
                if result < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    throw IOError(errnoCode: code, reason: "pread")
                }
                // End of file inside the range: the file is shorter than its record said.
                guard result > 0 else { throw StoreError.corrupt(digest) }
                offset += result
            }
        }
    }
}
