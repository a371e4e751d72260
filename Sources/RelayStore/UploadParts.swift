public import NIOCore
public import NIOPosix
public import RelayCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The files of multipart uploads (PROTOCOL.md §7.1 c, §7.2): each part is streamed into `tmp/` by a `BlobUpload`,
/// sealed there (fsynced, its digest known), and at completion the parts are copied in order into one new upload
/// that `BlobStore.finish` places like any other. Parts never reach `blobs/`, so they are never served, never
/// counted by expiry, and a restart's `removeTemporaryFiles` clears what an interrupted upload left.
///
/// Every method runs its file work on `threadPool`, never on the caller's event loop.
public final class UploadParts: Sendable {
    /// A part on disk: a complete, fsynced file in `tmp/` and the keyed digest of its bytes.
    public struct Sealed: Sendable, Hashable {
        public let path: String
        public let digest: Digest128
        public let size: Int

        public init(path: String, digest: Digest128, size: Int) {
            self.path = path
            self.digest = digest
            self.size = size
        }
    }

    public let store: BlobStore
    private let threadPool: NIOThreadPool

    public init(store: BlobStore, threadPool: NIOThreadPool) {
        self.store = store
        self.threadPool = threadPool
    }

    /// fsyncs and closes a part's file; the caller owns the file from then on (keep it in a table, or `remove` it).
    public func seal(_ upload: BlobUpload, eventLoop: any EventLoop) -> EventLoopFuture<Sealed> {
        run(eventLoop) { () throws(StoreError) -> Sealed in
            let (path, digest, size) = try upload.completeBlocking()
            return Sealed(path: path, digest: digest, size: size)
        }
    }

    /// Copies `parts` in order into a new upload (hashing as it goes) and places it as one raw blob. The part files
    /// are left as they are: the caller removes them once it has recorded the result.
    public func assemble(
        _ parts: [String],
        mediaType: MediaType,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<BlobRecord> {
        let upload = store.makeUpload()
        let store = self.store
        return run(eventLoop) { () throws(StoreError) in
            do throws(StoreError) {
                for path in parts { try Self.copy(path, into: upload) }
            } catch {
                upload.discardBlocking()
                throw error
            }
        }.flatMap { store.finish(upload, mediaType: mediaType, eventLoop: eventLoop) }
    }

    /// Removes files (absent ones are skipped); failures are ignored, as a restart clears `tmp/` anyway.
    @discardableResult
    public func remove(_ paths: [String], eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard !paths.isEmpty else { return eventLoop.makeSucceededVoidFuture() }
        return run(eventLoop) { () throws(StoreError) in
            for path in paths { _ = try? BlobFileIO.remove(path) }
        }
    }

    /// Streams one file into `upload`, 1 MiB at a time.
    private static func copy(_ path: String, into upload: BlobUpload) throws(StoreError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .posix("open", path: path, errno: errno) }
        defer { BlobFileIO.close(fd) }
        var buffer = ByteBufferAllocator().buffer(capacity: 1 << 20)
        while true {
            buffer.clear()
            var count = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1 << 20) { target in
                count = systemReadPart(fd, target.baseAddress!, target.count)
                return max(count, 0)
            }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .posix("read", path: path, errno: code)
            }
            if count == 0 { return }
            try upload.appendBlocking(buffer)
        }
    }

    private func run<T: Sendable>(
        _ eventLoop: any EventLoop,
        _ body: @escaping @Sendable () throws(StoreError) -> T
    ) -> EventLoopFuture<T> {
        threadPool.runIfActive(eventLoop: eventLoop) { () throws -> T in try body() }
            .flatMapErrorThrowing { error in throw (error as? StoreError) ?? .shutdown }
    }
}

// `BlobFileIO.read` shadows the C function inside the store's types.
private func systemReadPart(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}
