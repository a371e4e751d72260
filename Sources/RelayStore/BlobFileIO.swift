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

    /// A new file that did not exist before (`O_EXCL`); nil when the name is taken.
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
