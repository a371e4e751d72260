import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The blocking POSIX calls of the blob store, each turning errno into a `StoreError`.
///
/// Every function blocks: call them only from the store's thread pool (or at start-up, before serving).
enum BlobFileIO {
    /// What `stat` says about an existing file.
    struct Status {
        var size: Int
        var modified: Int
        var isRegularFile: Bool
        var isDirectory: Bool
    }

    static func status(_ path: String) throws(StoreError) -> Status? {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT || code == ENOTDIR { return nil }
            throw .posix("stat", path: path, errno: code)
        }
        return Status(info)
    }

    /// `mkdir`; false when the directory already exists.
    @discardableResult
    static func makeDirectory(_ path: String) throws(StoreError) -> Bool {
        guard mkdir(path, 0o755) == 0 else {
            let code = errno
            if code == EEXIST, try status(path)?.isDirectory == true { return false }
            throw .posix("mkdir", path: path, errno: code)
        }
        return true
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String) throws(StoreError) {
        if try status(path)?.isDirectory == true { return }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if try status(prefix)?.isDirectory != true { try makeDirectory(prefix) }
            prefix += "/"
        }
    }

    /// The whole file; nil when it does not exist.
    static func readAll(_ path: String) throws(StoreError) -> [UInt8]? {
        try read(path, upTo: nil)
    }

    /// At most `limit` bytes from the start (the whole file when nil); nil when the file does not exist.
    static func read(_ path: String, upTo limit: Int?) throws(StoreError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT || code == ENOTDIR { return nil }
            throw .posix("open", path: path, errno: code)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .posix("fstat", path: path, errno: errno) }
        let fileSize = Int(info.st_size)
        let capacity = min(limit ?? fileSize, fileSize)
        var bytes = [UInt8](repeating: 0, count: capacity)
        var filled = 0
        while filled < capacity {
            let count = bytes.withUnsafeMutableBytes { buffer in
                systemRead(fd, buffer.baseAddress! + filled, capacity - filled)
            }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .posix("read", path: path, errno: code)
            }
            if count == 0 { break }  // shorter than fstat said: blobs are immutable, so someone truncated it
            filled += count
        }
        if filled < capacity { bytes.removeSubrange(filled...) }
        return bytes
    }

    /// Creates a new file named `prefix` + a random suffix (O_EXCL, retried on a name clash), lets `write` fill
    /// it, fsyncs and closes it. On any failure the file is removed again, so no half-written file is left behind.
    /// The step every durable write starts with: the caller then renames or links the returned path into place.
    static func writeTemporaryFile(
        prefix: String,
        _ write: (Int32, String) throws(StoreError) -> Void
    ) throws(StoreError) -> String {
        let (fd, path) = try createTemporaryFile(prefix: prefix)
        do throws(StoreError) {
            try write(fd, path)
        } catch {
            close(fd)
            _ = try? remove(path)
            throw error
        }
        try completeTemporaryFile(fd, path: path)
        return path
    }

    /// The first half of `writeTemporaryFile`, for a file filled by many calls (an upload streamed to disk): a new
    /// file `prefix` + a random suffix, opened for writing. Finish it with `completeTemporaryFile`, or close and
    /// remove it.
    static func createTemporaryFile(prefix: String) throws(StoreError) -> (fd: Int32, path: String) {
        var path = prefix + String(UInt64.random(in: .min ... .max), radix: 16)
        var descriptor = try createExclusive(path)
        while descriptor == nil {
            path = prefix + String(UInt64.random(in: .min ... .max), radix: 16)
            descriptor = try createExclusive(path)
        }
        guard let fd = descriptor else { throw .io(path: path, errno: EEXIST) }
        return (fd, path)
    }

    /// The second half of `writeTemporaryFile`: fsync and close (both reported: some filesystems say ENOSPC only
    /// there). On failure the file is removed, so nothing half-written stays behind.
    static func completeTemporaryFile(_ fd: Int32, path: String) throws(StoreError) {
        do throws(StoreError) {
            try sync(fd, path: path)
        } catch {
            close(fd)
            _ = try? remove(path)
            throw error
        }
        do throws(StoreError) {
            try close(fd, path: path)
        } catch {
            _ = try? remove(path)
            throw error
        }
    }

    static func createExclusive(_ path: String) throws(StoreError) -> Int32? {
        while true {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 { return fd }
            let code = errno
            if code == EINTR { continue }
            if code == EEXIST { return nil }
            throw .posix("open", path: path, errno: code)
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(StoreError) {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                systemWrite(fd, buffer.baseAddress! + written, buffer.count - written)
            }
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .posix("write", path: path, errno: code)
            }
            written += count
        }
    }

    static func sync(_ fd: Int32, path: String) throws(StoreError) {
        while fsync(fd) != 0 {
            let code = errno
            if code == EINTR { continue }
            // Some filesystems cannot fsync a directory; there is nothing more durable to do there.
            if code == EINVAL || code == ENOTSUP { return }
            throw .posix("fsync", path: path, errno: code)
        }
    }

    /// `close`, reporting its error: on some filesystems delayed allocation reports ENOSPC only here.
    static func close(_ fd: Int32, path: String) throws(StoreError) {
        // Linux closes the descriptor even when close fails with EINTR: never retry.
        guard systemClose(fd) != 0 else { return }
        let code = errno
        if code != EINTR { throw .posix("close", path: path, errno: code) }
    }

    static func close(_ fd: Int32) {
        _ = systemClose(fd)
    }

    /// Makes the directory's entries (a rename, link or unlink in it) durable.
    static func syncDirectory(_ path: String) throws(StoreError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .posix("open", path: path, errno: errno) }
        defer { close(fd) }
        try sync(fd, path: path)
    }

    /// Places `source` at `destination` unless `destination` exists: false when it does. `link(2)` is atomic and never
    /// replaces, so two writers (or a collision) can't overwrite each other; filesystems without hard links fall back
    /// to `rename(2)` after a check.
    static func linkIfAbsent(_ source: String, _ destination: String) throws(StoreError) -> Bool {
        if link(source, destination) == 0 { return true }
        let code = errno
        if code == EEXIST { return false }
        if code == EPERM || code == ENOTSUP || code == ENOSYS || code == EMLINK {
            if try status(destination) != nil { return false }
            guard rename(source, destination) == 0 else {
                throw .posix("rename", path: destination, errno: errno)
            }
            return true
        }
        throw .posix("link", path: destination, errno: code)
    }

    /// `unlink`; false when there was nothing to remove.
    @discardableResult
    static func remove(_ path: String) throws(StoreError) -> Bool {
        guard unlink(path) == 0 else {
            let code = errno
            if code == ENOENT { return false }
            throw .posix("unlink", path: path, errno: code)
        }
        return true
    }

    /// Entry names of a directory, without `.` and `..`.
    static func list(_ path: String) throws(StoreError) -> [String] {
        guard let directory = opendir(path) else {
            let code = errno
            if code == ENOENT { return [] }
            throw .posix("opendir", path: path, errno: code)
        }
        defer { closedir(directory) }
        return try entryNames(directory, path: path)
    }

    /// Reads an open directory stream to its end: entry names without `.` and `..`.
    fileprivate static func entryNames(_ directory: OpaquePointer, path: String) throws(StoreError) -> [String] {
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(directory) else {
                if errno != 0 { throw .posix("readdir", path: path, errno: errno) }
                return names
            }
            let name = withUnsafePointer(to: &entry.pointee.d_name) { pointer in
                String(cString: UnsafeRawPointer(pointer).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
    }
}

// MARK: - Additions for result manifests and snapshots

extension BlobFileIO {
    /// `rename(2)`: atomically replaces `destination` when it exists (a manifest's newer version wins).
    static func replace(_ destination: String, with source: String) throws(StoreError) {
        guard systemRename(source, destination) == 0 else {
            throw .posix("rename", path: destination, errno: errno)
        }
    }

    /// Writes the readable bytes of `buffer` (without consuming them).
    static func writeAll(_ fd: Int32, _ buffer: ByteBuffer, path: String) throws(StoreError) {
        let failure: Int32? = buffer.withUnsafeReadableBytes { bytes -> Int32? in
            var written = 0
            while written < bytes.count {
                let count = systemWrite(fd, bytes.baseAddress! + written, bytes.count - written)
                if count < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    return code
                }
                written += count
            }
            return nil
        }
        if let failure { throw .posix("write", path: path, errno: failure) }
    }

    /// At most `limit` bytes from the start (the whole file when nil) as a `ByteBuffer`; nil when the file does not
    /// exist.
    static func readBuffer(_ path: String, upTo limit: Int? = nil) throws(StoreError) -> ByteBuffer? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT || code == ENOTDIR { return nil }
            throw .posix("open", path: path, errno: code)
        }
        defer { close(fd) }
        return try readBuffer(fd, path: path, upTo: limit)
    }

    private static func readBuffer(_ fd: Int32, path: String, upTo limit: Int?) throws(StoreError) -> ByteBuffer {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .posix("fstat", path: path, errno: errno) }
        let capacity = min(limit ?? Int(info.st_size), Int(info.st_size))
        var buffer = ByteBufferAllocator().buffer(capacity: capacity)
        var failure: Int32?
        while buffer.readableBytes < capacity {
            let wanted = capacity - buffer.readableBytes
            var result = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { target -> Int in
                result = systemRead(fd, target.baseAddress!, wanted)
                return max(result, 0)
            }
            if result < 0 {
                let code = errno
                if code == EINTR { continue }
                failure = code
                break
            }
            if result == 0 { break }  // shorter than fstat said: the caller sees the short buffer
        }
        if let failure { throw .posix("read", path: path, errno: failure) }
        return buffer
    }

    /// An open directory whose entries are listed, stat'ed, read and unlinked relative to it: each call resolves one
    /// path component instead of the whole path (a start-up scan makes one such call per file).
    final class OpenDirectory {
        let path: String
        private let fd: Int32

        /// nil when the directory does not exist.
        init?(_ path: String) throws(StoreError) {
            let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else {
                let code = errno
                if code == ENOENT || code == ENOTDIR { return nil }
                throw .posix("open", path: path, errno: code)
            }
            self.path = path
            self.fd = fd
        }

        deinit { BlobFileIO.close(fd) }

        /// Entry names, without `.` and `..`.
        func names() throws(StoreError) -> [String] {
            let copy = dup(fd)
            guard copy >= 0 else { throw .posix("dup", path: path, errno: errno) }
            guard let directory = fdopendir(copy) else {
                let code = errno
                BlobFileIO.close(copy)
                throw .posix("fdopendir", path: path, errno: code)
            }
            defer { closedir(directory) }
            rewinddir(directory)
            return try BlobFileIO.entryNames(directory, path: path)
        }

        /// `fstatat` without following a final symlink; nil when the entry does not exist.
        func status(_ name: String) throws(StoreError) -> Status? {
            var info = stat()
            guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                let code = errno
                if code == ENOENT || code == ENOTDIR { return nil }
                throw .posix("fstatat", path: path + "/" + name, errno: code)
            }
            return Status(info)
        }

        /// At most `limit` bytes from the start of the entry; nil when it does not exist.
        func read(_ name: String, upTo limit: Int? = nil) throws(StoreError) -> ByteBuffer? {
            let file = openat(fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard file >= 0 else {
                let code = errno
                if code == ENOENT || code == ENOTDIR { return nil }
                throw .posix("openat", path: path + "/" + name, errno: code)
            }
            defer { BlobFileIO.close(file) }
            return try BlobFileIO.readBuffer(file, path: path + "/" + name, upTo: limit)
        }

        /// `unlinkat`; false when there was nothing to remove.
        func remove(_ name: String) throws(StoreError) -> Bool {
            guard unlinkat(fd, name, 0) == 0 else {
                let code = errno
                if code == ENOENT { return false }
                throw .posix("unlinkat", path: path + "/" + name, errno: code)
            }
            return true
        }
    }
}

extension BlobFileIO.Status {
    init(_ info: stat) {
        size = Int(info.st_size)
        #if canImport(Darwin)
        modified = Int(info.st_mtimespec.tv_sec)
        #else
        modified = Int(info.st_mtim.tv_sec)
        #endif
        isRegularFile = info.st_mode & S_IFMT == S_IFREG
        isDirectory = info.st_mode & S_IFMT == S_IFDIR
    }
}

// The enum's own `read`, `write` and `close` shadow the C functions inside it.
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}

private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

private func systemClose(_ fd: Int32) -> Int32 {
    close(fd)
}

private func systemRename(_ source: String, _ destination: String) -> Int32 {
    rename(source, destination)
}
