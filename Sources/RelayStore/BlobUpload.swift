import NIOCore
import RelayCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes of one upload on their way into the blob store: appended to a file in `tmp/` and hashed as they arrive,
/// so an upload of any size never sits in memory; `BlobStore.finish(_:mediaType:eventLoop:)` then links that very
/// file into `blobs/` (no second copy).
///
/// Calls are made one at a time by the connection that receives the body (each `append` waits for the previous
/// one); the lock only orders them with a `discard` from a connection that went away meanwhile.
public final class BlobUpload: Sendable {
    private struct State {
        var fd: Int32?
        var path: String?
        var stream: KeyedHasher.Stream
        var size = 0
        /// Finished or discarded: the file is no longer this upload's.
        var closed = false
    }

    private let state: Mutex<State>
    private let prefix: String

    init(prefix: String, hasher: KeyedHasher) {
        self.prefix = prefix
        self.state = Mutex(State(stream: KeyedHasher.Stream(hasher)))
    }

    /// Bytes appended so far.
    public var size: Int { state.withLock { $0.size } }

    /// Opens the file at the first call. Blocks: thread pool only.
    func appendBlocking(_ buffer: ByteBuffer) throws(StoreError) {
        try state.withLock { (state: inout State) throws(StoreError) in
            guard !state.closed else { throw StoreError.cancelled }
            let fd: Int32
            let path: String
            if let open = state.fd, let openPath = state.path {
                fd = open
                path = openPath
            } else {
                (fd, path) = try BlobFileIO.createTemporaryFile(prefix: prefix)
                state.fd = fd
                state.path = path
            }
            do throws(StoreError) {
                try BlobFileIO.writeAll(fd, buffer, path: path)
            } catch {
                // A failed write leaves an unknown prefix on disk: the upload is over, and so is its file.
                BlobFileIO.close(fd)
                _ = try? BlobFileIO.remove(path)
                state.fd = nil
                state.closed = true
                throw error
            }
            buffer.withUnsafeReadableBytes { state.stream.update($0) }
            state.size += buffer.readableBytes
        }
    }

    /// fsyncs and closes the file (creating it for an empty upload) and hands it over: the caller places or removes
    /// it. Blocks: thread pool only.
    func completeBlocking() throws(StoreError) -> (path: String, digest: Digest128, size: Int) {
        try state.withLock { (state: inout State) throws(StoreError) -> (path: String, digest: Digest128, size: Int) in
            guard !state.closed else { throw StoreError.cancelled }
            state.closed = true
            let fd: Int32
            let path: String
            if let open = state.fd, let openPath = state.path {
                fd = open
                path = openPath
            } else {
                (fd, path) = try BlobFileIO.createTemporaryFile(prefix: prefix)
            }
            state.fd = nil
            try BlobFileIO.completeTemporaryFile(fd, path: path)
            return (path, state.stream.digest(), state.size)
        }
    }

    /// Closes and removes the file, if any; later calls fail. Blocks: thread pool only.
    func discardBlocking() {
        state.withLock { state in
            state.closed = true
            if let fd = state.fd { BlobFileIO.close(fd) }
            if let path = state.path, state.fd != nil { _ = try? BlobFileIO.remove(path) }
            state.fd = nil
        }
    }
}

extension BlobFileIO {
    /// Whether two files hold the same bytes, read 1 MiB at a time; nil when `path` does not exist.
    static func contentsEqual(_ path: String, _ other: String) throws(StoreError) -> Bool? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT || code == ENOTDIR { return nil }
            throw .posix("open", path: path, errno: code)
        }
        defer { close(fd) }
        let otherFD = open(other, O_RDONLY | O_CLOEXEC)
        guard otherFD >= 0 else { throw .posix("open", path: other, errno: errno) }
        defer { close(otherFD) }
        let chunk = 1 << 20
        var left = [UInt8](repeating: 0, count: chunk)
        var right = [UInt8](repeating: 0, count: chunk)
        while true {
            let leftCount = try fill(fd, &left, path: path)
            let rightCount = try fill(otherFD, &right, path: other)
            guard leftCount == rightCount else { return false }
            if leftCount == 0 { return true }
            let same = left.withUnsafeBytes { l in
                right.withUnsafeBytes { r in memcmp(l.baseAddress!, r.baseAddress!, leftCount) == 0 }
            }
            guard same else { return false }
        }
    }

    /// Whether the file holds exactly `bytes`.
    static func contentsEqual(_ path: String, bytes: [UInt8]) throws(StoreError) -> Bool {
        guard let stored = try readAll(path) else { return false }
        guard stored.count == bytes.count else { return false }
        return stored.withUnsafeBytes { l in
            bytes.withUnsafeBytes { r in l.count == 0 || memcmp(l.baseAddress!, r.baseAddress!, l.count) == 0 }
        }
    }

    /// Reads until `buffer` is full or the file ends; returns the count.
    private static func fill(_ fd: Int32, _ buffer: inout [UInt8], path: String) throws(StoreError) -> Int {
        var filled = 0
        while filled < buffer.count {
            let count = buffer.withUnsafeMutableBytes { target in
                systemReadForUpload(fd, target.baseAddress! + filled, target.count - filled)
            }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .posix("read", path: path, errno: code)
            }
            if count == 0 { break }
            filled += count
        }
        return filled
    }
}

// `BlobFileIO.read` shadows the C function inside the enum.
private func systemReadForUpload(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}
