import NIOCore
import NIOHTTP1
public import RelayCore

#if canImport(Glibc)
import Glibc
#endif

/// The browser UI's files, read once at start-up from a directory and served from memory with strong ETags.
///
/// Only plain file names (no paths) are served; the router already refuses anything else.
public struct StaticSite: Sendable {
    public struct Asset: Sendable {
        public let bytes: [UInt8]
        public let contentType: String
        /// `"<xxh3-128 hex>"` of the bytes.
        public let etag: String
    }

    public let assets: [String: Asset]

    public init(assets: [String: Asset]) {
        self.assets = assets
    }

    /// Reads every regular file directly in `directory` (not its subfolders).
    public init(directory: String, hasher: KeyedHasher) throws(StaticSiteError) {
        var assets: [String: Asset] = [:]
        for name in try StaticSiteFiles.list(directory) {
            guard let contentType = Self.contentType(for: name),
                let bytes = StaticSiteFiles.contents(directory + "/" + name)
            else { continue }
            assets[name] = Asset(bytes: bytes, contentType: contentType, etag: "\"\(hasher.digest(bytes).hex)\"")
        }
        self.assets = assets
    }

    public subscript(name: String) -> Asset? { assets[name] }

    static func contentType(for name: String) -> String? {
        guard let dot = name.lastIndex(of: ".") else { return nil }
        switch name[name.index(after: dot)...] {
        case "html": return "text/html; charset=utf-8"
        case "js": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "ico": return "image/x-icon"
        case "json": return "application/json"
        default: return nil
        }
    }
}

public struct StaticSiteError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// Directory listing and whole-file reads for start-up (never on an event loop).
enum StaticSiteFiles {
    static func list(_ directory: String) throws(StaticSiteError) -> [String] {
        guard let dir = opendir(directory) else {
            throw StaticSiteError(description: "cannot open UI directory \(directory)")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if !name.hasPrefix(".") { names.append(name) }
        }
        return names.sorted()
    }

    static func contents(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            done += n
        }
        return bytes
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }
}
