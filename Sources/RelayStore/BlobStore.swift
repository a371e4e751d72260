public import NIOCore
public import NIOPosix
public import RelayCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Content-addressed media bytes on disk (`data/blobs/ab/cd/<digest>`): write → fsync → link → fsync(dir); never a
/// torn file.
///
/// Layout under `directory`:
/// - `blobs/<hex[0..2]>/<hex[2..4]>/<hex>`: a blob stored raw (served with sendfile);
/// - `blobs/<hex[0..2]>/<hex[2..4]>/<hex>.lz4`: a compressible blob stored as one LZ4 frame, when that saves at
///   least 1/16 of its size (less is not worth losing zero-copy serving);
/// - `tmp/`: files being written. They reach `blobs/` only complete and fsynced, so a crash leaves debris in
///   `tmp/` (see `removeTemporaryFiles`) and never a partial blob.
///
/// The digest is `hasher.digest` of the uncompressed content, and the media type is not part of it: the same bytes
/// stored as `.wav` and as `.bin` are one file. A file is never replaced: storing bytes whose digest is taken by
/// other bytes throws `.collision` (see `put`).
///
/// All blocking work (hashing, compression, every system call) runs on `threadPool`, never on the caller's event
/// loop; only `init` (at start-up) blocks its caller.
public final class BlobStore: Sendable {
    /// The data directory this store lives in.
    public let directory: String
    /// `<directory>/blobs`
    public let blobsDirectory: String
    /// `<directory>/tmp`
    public let temporaryDirectory: String

    private let hasher: KeyedHasher
    private let threadPool: NIOThreadPool
    private let removals = Atomic<Int>(0)

    /// Changes after every blob file is unlinked (bumped once the unlink is done, never before it), so that a holder
    /// of an open blob file checks for removal only when this moved: a file held open since an earlier value may be
    /// unlinked now (`fstat`'s `st_nlink == 0`); while it is unchanged, no blob was removed since then.
    public var removalGeneration: Int { removals.load(ordering: .acquiring) }

    private func noteRemoval() {
        removals.wrappingAdd(1, ordering: .releasing)
    }

    /// Creates `directory`, `blobs/` and `tmp/` when missing. Blocks on `mkdir`: call it at start-up.
    public init(directory: String, hasher: KeyedHasher, threadPool: NIOThreadPool) throws(StoreError) {
        var directory = directory
        while directory.count > 1 && directory.hasSuffix("/") { directory.removeLast() }
        self.directory = directory
        self.blobsDirectory = directory + "/blobs"
        self.temporaryDirectory = directory + "/tmp"
        self.hasher = hasher
        self.threadPool = threadPool
        try BlobFileIO.makeDirectories(directory)
        try BlobFileIO.makeDirectory(blobsDirectory)
        try BlobFileIO.makeDirectory(temporaryDirectory)
    }

    // MARK: - Storing

    /// Stores bytes and returns their record. Idempotent: the same bytes give the same digest, and an existing
    /// identical blob is returned as it is, not rewritten (whatever `mediaType` it was first stored with).
    ///
    /// - Throws: `.collision(digest)` when the digest's file holds other bytes: an XXH3 collision or a damaged
    ///   file. The existing file is kept either way (DESIGN: a collision costs a miss, never a wrong answer); the
    ///   caller may serve the bytes without caching them, or `remove` the digest if `read` reports it corrupt.
    ///   `.diskFull` on ENOSPC/EDQUOT, with nothing left behind.
    public func put(_ bytes: [UInt8], mediaType: MediaType) async throws(StoreError) -> BlobRecord {
        try await onThreadPool { () throws(StoreError) -> BlobRecord in
            try self.putBlocking(bytes, mediaType: mediaType)
        }
    }

    private func putBlocking(_ bytes: [UInt8], mediaType: MediaType) throws(StoreError) -> BlobRecord {
        let digest = hasher.digest(bytes)
        if let existing = try existingRecord(digest, matching: .bytes(bytes), mediaType: mediaType) {
            return existing
        }

        var payload = bytes
        var compressed = false
        if mediaType.isCompressible {
            let frame = LZ4FrameCodec.compress(bytes)
            if Self.isWorthStoringCompressed(frameSize: frame.count, contentSize: bytes.count) {
                payload = frame
                compressed = true
            }
        }

        let temporary = try writeTemporaryFile(payload, digest: digest)
        let record = BlobRecord(digest: digest, size: bytes.count, storedSize: payload.count, mediaType: mediaType)
        return try place(temporary, as: record, compressed: compressed, content: .bytes(bytes))
    }

    /// What is being stored, for comparing with a blob already on disk: bytes in memory, or an upload's file.
    private enum Content {
        case bytes([UInt8])
        case file(path: String, size: Int)

        var size: Int {
            switch self {
            case .bytes(let bytes): bytes.count
            case .file(_, let size): size
            }
        }
    }

    /// Links a complete, fsynced temporary file into place as `record`'s blob and removes its temporary name — the
    /// one placement step of every write. When another writer placed the digest first, compares with its file.
    private func place(
        _ temporary: String,
        as record: BlobRecord,
        compressed: Bool,
        content: Content
    ) throws(StoreError) -> BlobRecord {
        let digest = record.digest
        let shard: String
        let placed: Bool
        let target = path(for: digest, compressed: compressed)
        do throws(StoreError) {
            shard = try makeShard(digest)
            placed = try BlobFileIO.linkIfAbsent(temporary, target)
        } catch {
            _ = try? BlobFileIO.remove(temporary)
            throw error
        }
        guard placed else {
            // Another put of this digest won the race between our check and our link. Its file is complete (it
            // was fsynced before it was linked): compare with it like any existing blob.
            defer { _ = try? BlobFileIO.remove(temporary) }
            if let existing = try existingRecord(digest, matching: content, mediaType: record.mediaType) {
                return existing
            }
            throw .io(path: target, errno: EEXIST)  // linked by someone and removed again at once
        }
        // Once linked, the temporary name is only debris; a failed unlink is swept at the next start.
        _ = try? BlobFileIO.remove(temporary)
        try BlobFileIO.syncDirectory(shard)
        return record
    }

    /// The record of an existing blob of `digest` when it holds exactly `content`; nil when there is none.
    private func existingRecord(
        _ digest: Digest128,
        matching content: Content,
        mediaType: MediaType
    ) throws(StoreError) -> BlobRecord? {
        let rawPath = path(for: digest, compressed: false)
        if let status = try BlobFileIO.status(rawPath) {
            guard status.size == content.size else { throw .collision(digest) }
            switch content {
            case .bytes(let bytes):
                if let stored = try BlobFileIO.readAll(rawPath) {
                    guard Self.equal(stored, bytes) else { throw .collision(digest) }
                    return BlobRecord(digest: digest, size: bytes.count, storedSize: stored.count, mediaType: mediaType)
                }
            case .file(let path, let size):
                if let same = try BlobFileIO.contentsEqual(rawPath, path) {
                    guard same else { throw .collision(digest) }
                    return BlobRecord(digest: digest, size: size, storedSize: size, mediaType: mediaType)
                }
            }
        }
        let framePath = path(for: digest, compressed: true)
        if let frame = try BlobFileIO.readAll(framePath) {
            let header = Array(frame.prefix(LZ4FrameCodec.maximumHeaderSize))
            guard LZ4FrameCodec.contentSize(ofFrameHeader: header) == content.size,
                let stored = try? LZ4FrameCodec.decompress(frame)
            else { throw .collision(digest) }
            let same: Bool
            switch content {
            case .bytes(let bytes): same = Self.equal(stored, bytes)
            case .file(let path, _): same = try BlobFileIO.contentsEqual(path, bytes: stored)
            }
            guard same else { throw .collision(digest) }
            return BlobRecord(digest: digest, size: content.size, storedSize: frame.count, mediaType: mediaType)
        }
        return nil
    }

    /// `blobs/ab/cd`, created when missing; a new directory's entry is made durable in its parent.
    private func makeShard(_ digest: Digest128) throws(StoreError) -> String {
        let hex = digest.hex
        let first = blobsDirectory + "/" + hex.prefix(2)
        let second = first + "/" + hex.dropFirst(2).prefix(2)
        if try BlobFileIO.status(second)?.isDirectory == true { return second }
        if try BlobFileIO.makeDirectory(first) { try BlobFileIO.syncDirectory(blobsDirectory) }
        if try BlobFileIO.makeDirectory(second) { try BlobFileIO.syncDirectory(first) }
        return second
    }

    /// Writes and fsyncs `payload` under a new unique name in `tmp/`; on any failure removes it again.
    private func writeTemporaryFile(_ payload: [UInt8], digest: Digest128) throws(StoreError) -> String {
        // <digest>.<pid>.<random>: unique across processes sharing the directory; O_EXCL settles the rest.
        try BlobFileIO.writeTemporaryFile(prefix: "\(temporaryDirectory)/\(digest.hex).\(getpid()).") {
            fd,
            path throws(StoreError) in
            try BlobFileIO.writeAll(fd, payload, path: path)
        }
    }

    /// Compression has to pay for losing sendfile and for decoding on every read: at least 1/16 smaller.
    static func isWorthStoringCompressed(frameSize: Int, contentSize: Int) -> Bool {
        frameSize <= contentSize - contentSize / 16 && frameSize < contentSize
    }

    // MARK: - Uploads

    /// A new upload: bytes appended to a file in `tmp/` as they arrive, then placed by `finish`. No I/O yet.
    public func makeUpload() -> BlobUpload {
        BlobUpload(prefix: "\(temporaryDirectory)/upload.\(getpid()).", hasher: hasher)
    }

    /// Appends the readable bytes of `buffer` on the thread pool. Wait for each append before the next.
    /// Fails with `StoreError` (`.diskFull` on ENOSPC/EDQUOT); the upload's file is gone after a failure.
    public func append(_ buffer: ByteBuffer, to upload: BlobUpload, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        onThreadPool(eventLoop: eventLoop) { () throws(StoreError) in try upload.appendBlocking(buffer) }
    }

    /// fsyncs the upload's file and links it into place as a raw blob (uploads are stored raw: served back with
    /// sendfile, and never copied again to compress them). The same bytes already stored — raw or LZ4 — give that
    /// blob's record and the upload's file is removed. Fails with `StoreError` (`.diskFull`, `.collision`); nothing
    /// is left in `tmp/` either way.
    public func finish(
        _ upload: BlobUpload,
        mediaType: MediaType,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<BlobRecord> {
        onThreadPool(eventLoop: eventLoop) { () throws(StoreError) -> BlobRecord in
            let (temporary, digest, size) = try upload.completeBlocking()
            let content = Content.file(path: temporary, size: size)
            let existing: BlobRecord?
            do throws(StoreError) {
                existing = try self.existingRecord(digest, matching: content, mediaType: mediaType)
            } catch {
                _ = try? BlobFileIO.remove(temporary)
                throw error
            }
            if let existing {
                _ = try? BlobFileIO.remove(temporary)
                return existing
            }
            let record = BlobRecord(digest: digest, size: size, storedSize: size, mediaType: mediaType)
            return try self.place(temporary, as: record, compressed: false, content: content)
        }
    }

    /// Drops an upload that will not be finished (the client left, or the body broke a limit): its file is removed.
    public func discard(_ upload: BlobUpload) {
        threadPool.submit { _ in upload.discardBlocking() }
    }

    // MARK: - Reading

    /// The whole blob, decompressed, after checking that it still hashes to `digest`. nil when absent.
    ///
    /// - Throws: `.corrupt(digest)` when an LZ4 frame fails to decode or its checksum, or the content does not hash
    ///   to its digest (a damaged raw file).
    public func read(_ digest: Digest128) async throws(StoreError) -> [UInt8]? {
        try await onThreadPool { () throws(StoreError) -> [UInt8]? in
            try self.readBlocking(digest)
        }
    }

    private func readBlocking(_ digest: Digest128) throws(StoreError) -> [UInt8]? {
        let content: [UInt8]
        if let raw = try BlobFileIO.readAll(path(for: digest, compressed: false)) {
            content = raw
        } else if let frame = try BlobFileIO.readAll(path(for: digest, compressed: true)) {
            do throws(StoreError) {
                content = try LZ4FrameCodec.decompress(frame)
            } catch {
                throw error.about(digest)
            }
        } else {
            return nil
        }
        guard hasher.digest(content) == digest else {
            throw .corrupt(digest, reason: "content does not hash to its digest")
        }
        return content
    }

    /// Size and metadata without reading the content (a `stat`, and the frame header of a compressed blob).
    /// nil when absent.
    public func record(_ digest: Digest128, mediaType: MediaType) async throws(StoreError) -> BlobRecord? {
        try await onThreadPool { () throws(StoreError) -> BlobRecord? in
            try self.recordBlocking(digest, mediaType: mediaType)
        }
    }

    private func recordBlocking(_ digest: Digest128, mediaType: MediaType) throws(StoreError) -> BlobRecord? {
        if let status = try BlobFileIO.status(path(for: digest, compressed: false)) {
            return BlobRecord(digest: digest, size: status.size, storedSize: status.size, mediaType: mediaType)
        }
        let framePath = path(for: digest, compressed: true)
        guard let status = try BlobFileIO.status(framePath),
            let header = try BlobFileIO.read(framePath, upTo: LZ4FrameCodec.maximumHeaderSize)
        else { return nil }
        guard let size = LZ4FrameCodec.contentSize(ofFrameHeader: header) else {
            throw .corrupt(digest, reason: "LZ4 frame header without a content size")
        }
        return BlobRecord(digest: digest, size: size, storedSize: status.size, mediaType: mediaType)
    }

    /// Where the blob of `digest` is (or would be) stored; no I/O. `record(_:mediaType:).isCompressed` says which.
    public func path(for digest: Digest128, compressed: Bool) -> String {
        let hex = digest.hex
        let shard = "\(blobsDirectory)/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))/\(hex)"
        return compressed ? shard + ".lz4" : shard
    }

    // MARK: - Removing

    /// Removes the blob (both forms, should both exist); absent is not an error. Returns whether a file was removed.
    @discardableResult
    public func remove(_ digest: Digest128) async throws(StoreError) -> Bool {
        try await onThreadPool { () throws(StoreError) -> Bool in
            let removedRaw = try BlobFileIO.remove(self.path(for: digest, compressed: false))
            if removedRaw { self.noteRemoval() }  // before the slow directory fsync: cached fds drop it at once
            let removedFrame = try BlobFileIO.remove(self.path(for: digest, compressed: true))
            if removedFrame { self.noteRemoval() }
            guard removedRaw || removedFrame else { return false }
            let hex = digest.hex
            try BlobFileIO.syncDirectory("\(self.blobsDirectory)/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))")
            return true
        }
    }

    /// Removes many blobs (both forms each) with one directory fsync per shard instead of one per blob; absent ones
    /// are skipped. Returns the digests whose files were removed. On a failure, what was removed before it stays
    /// removed and the first error is thrown after every digest was tried.
    @discardableResult
    public func remove(_ digests: [Digest128]) async throws(StoreError) -> [Digest128] {
        try await onThreadPool { () throws(StoreError) -> [Digest128] in
            var removed: [Digest128] = []
            var shards: Set<String> = []
            var firstError: StoreError?
            for digest in digests {
                do throws(StoreError) {
                    let removedRaw = try BlobFileIO.remove(self.path(for: digest, compressed: false))
                    if removedRaw { self.noteRemoval() }
                    let removedFrame = try BlobFileIO.remove(self.path(for: digest, compressed: true))
                    if removedFrame { self.noteRemoval() }
                    guard removedRaw || removedFrame else { continue }
                    removed.append(digest)
                    let hex = digest.hex
                    shards.insert("\(self.blobsDirectory)/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))")
                } catch {
                    if firstError == nil { firstError = error }
                }
            }
            for shard in shards {
                do throws(StoreError) {
                    try BlobFileIO.syncDirectory(shard)
                } catch {
                    if firstError == nil { firstError = error }
                }
            }
            if let firstError { throw firstError }
            return removed
        }
    }

    /// At start, before any `put`: deletes what is left in `tmp/` (debris of writes a crash interrupted). A `put`
    /// running meanwhile would lose its temporary file and fail. Returns how many files were removed.
    @discardableResult
    public func removeTemporaryFiles() async throws(StoreError) -> Int {
        try await onThreadPool { () throws(StoreError) -> Int in
            var removed = 0
            for name in try BlobFileIO.list(self.temporaryDirectory) {
                if try BlobFileIO.remove("\(self.temporaryDirectory)/\(name)") { removed += 1 }
            }
            return removed
        }
    }

    // MARK: - Scanning

    /// Every blob file on disk, for rebuilding the index, expiry and garbage collection. Names that are not
    /// `<32 hex>` or `<32 hex>.lz4` in their right shard are skipped.
    public func scan() async throws(StoreError) -> [BlobEntry] {
        try await onThreadPool { () throws(StoreError) -> [BlobEntry] in
            try self.scanBlocking()
        }
    }

    private func scanBlocking() throws(StoreError) -> [BlobEntry] {
        var entries: [BlobEntry] = []
        for first in try BlobFileIO.list(blobsDirectory) where Self.isShardName(first) {
            let firstPath = blobsDirectory + "/" + first
            for second in try BlobFileIO.list(firstPath) where Self.isShardName(second) {
                let shardPath = firstPath + "/" + second
                for name in try BlobFileIO.list(shardPath) {
                    let compressed = name.hasSuffix(".lz4")
                    let hex = compressed ? name.dropLast(4) : Substring(name)
                    guard let digest = Digest128(hex: hex), digest.hex == hex,
                        hex.hasPrefix(first + second),
                        let status = try BlobFileIO.status(shardPath + "/" + name), status.isRegularFile
                    else { continue }
                    entries.append(
                        BlobEntry(
                            digest: digest,
                            storedSize: status.size,
                            isCompressed: compressed,
                            modified: status.modified
                        )
                    )
                }
            }
        }
        return entries
    }

    private static func isShardName(_ name: String) -> Bool {
        name.utf8.count == 2 && name.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    // MARK: - Thread pool

    /// Runs blocking work on the thread pool and brings its typed error back.
    private func onThreadPool<T: Sendable>(
        _ body: @escaping @Sendable () throws(StoreError) -> T
    ) async throws(StoreError) -> T {
        try await threadPool.runStoreWork(body)
    }

    /// `onThreadPool` for callers on an event loop (the HTTP handler): the failure is a `StoreError`.
    private func onThreadPool<T: Sendable>(
        eventLoop: any EventLoop,
        _ body: @escaping @Sendable () throws(StoreError) -> T
    ) -> EventLoopFuture<T> {
        threadPool.runIfActive(eventLoop: eventLoop) { () throws -> T in try body() }
            .flatMapErrorThrowing { error in throw (error as? StoreError) ?? .shutdown }
    }

    private static func equal(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        return lhs.withUnsafeBytes { left in
            rhs.withUnsafeBytes { right in
                left.count == 0 || memcmp(left.baseAddress!, right.baseAddress!, left.count) == 0
            }
        }
    }
}

extension NIOThreadPool {
    /// Runs blocking store work on the pool and brings its typed error back. A stopped pool is `.shutdown`; a
    /// cancelled task `.cancelled` (runIfActive reports both as CancellationError).
    func runStoreWork<T: Sendable>(_ body: @escaping @Sendable () throws(StoreError) -> T) async throws(StoreError) -> T
    {
        let result: Result<T, StoreError>
        do {
            result = try await runIfActive { () -> Result<T, StoreError> in
                do throws(StoreError) {
                    return .success(try body())
                } catch {
                    return .failure(error)
                }
            }
        } catch {
            throw Task.isCancelled ? .cancelled : .shutdown
        }
        return try result.get()
    }
}
