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

/// Durable records of finished uploads (`data/uploads/<id>`): which stored blob an upload's stable URL stands for.
///
/// fal's `POST /storage/upload/initiate` returns the file URL before the bytes exist, so that URL cannot be the
/// content-addressed one: it names an upload id, and this table maps the id to the blob digest once the PUT is done.
/// A record is written once (temp → fsync → rename → fsync(dir), like every durable write of the store) and kept
/// in memory, so lookups from the event loop cost a lock. Uploads through v3's `POST /files/upload` get a record
/// under their digest too: every digest here is *pinned* — kept by garbage collection although no result references
/// it (the byte budget may still evict it, least recently used first).
public final class UploadAliases: Sendable {
    /// One finished upload.
    public struct Alias: Sendable, Hashable {
        public let id: Digest128
        public let digest: Digest128
        public let mediaType: MediaType
        public let fileName: String
        /// Seconds since 1970.
        public let created: Int

        public init(id: Digest128, digest: Digest128, mediaType: MediaType, fileName: String, created: Int) {
            self.id = id
            self.digest = digest
            self.mediaType = mediaType
            self.fileName = fileName
            self.created = created
        }
    }

    /// `<data>/uploads`
    public let directory: String
    private let threadPool: NIOThreadPool
    private let table = Mutex<[Digest128: Alias]>([:])

    /// Creates `uploads/` when missing. Blocks on `mkdir`: call it at start-up.
    public init(dataDirectory: String, threadPool: NIOThreadPool) throws(StoreError) {
        var base = dataDirectory
        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
        directory = base + "/uploads"
        self.threadPool = threadPool
        try BlobFileIO.makeDirectories(directory)
    }

    /// Reads every record into memory (before serving). Unreadable or foreign files are skipped, and debris of an
    /// interrupted write (`.tmp.` names) removed. Returns how many aliases were loaded.
    @discardableResult
    public func load() async throws(StoreError) -> Int {
        let directory = self.directory
        let loaded: [Alias]
        do {
            loaded = try await threadPool.runIfActive { () throws -> [Alias] in
                var aliases: [Alias] = []
                for name in try BlobFileIO.list(directory) {
                    if name.contains(".tmp.") {
                        _ = try? BlobFileIO.remove(directory + "/" + name)
                        continue
                    }
                    guard let id = Digest128(hex: name), id.hex == name,
                        let bytes = try BlobFileIO.readAll(directory + "/" + name),
                        let alias = Self.decode(bytes, id: id)
                    else { continue }
                    aliases.append(alias)
                }
                return aliases
            }
        } catch {
            throw (error as? StoreError) ?? .shutdown
        }
        table.withLock { table in
            for alias in loaded { table[alias.id] = alias }
        }
        return loaded.count
    }

    /// The finished upload of `id`; nil while its bytes have not arrived (or for an unknown id).
    public func alias(_ id: Digest128) -> Alias? {
        table.withLock { $0[id] }
    }

    /// Digests of every recorded upload: not garbage, though no result references them.
    public var pinnedDigests: Set<Digest128> {
        table.withLock { Set($0.values.map(\.digest)) }
    }

    /// Makes `alias` durable, once: when `id` already has a record, that record is returned unchanged (a retried PUT
    /// of the same bytes is a no-op; the caller compares the digests to refuse other bytes).
    public func record(_ alias: Alias, eventLoop: any EventLoop) -> EventLoopFuture<Alias> {
        if let existing = self.alias(alias.id) {
            return eventLoop.makeSucceededFuture(existing)
        }
        let directory = self.directory
        return threadPool.runIfActive(eventLoop: eventLoop) { () throws -> Void in
            let target = directory + "/" + alias.id.hex
            let temporary = try BlobFileIO.writeTemporaryFile(prefix: target + ".tmp.") { fd, path throws(StoreError) in
                try BlobFileIO.writeAll(fd, Self.encode(alias), path: path)
            }
            do throws(StoreError) {
                try BlobFileIO.replace(target, with: temporary)
            } catch {
                _ = try? BlobFileIO.remove(temporary)
                throw error
            }
            try BlobFileIO.syncDirectory(directory)
        }.flatMapErrorThrowing { error in
            throw (error as? StoreError) ?? .shutdown
        }.map {
            self.table.withLock { table in
                if let existing = table[alias.id] { return existing }
                table[alias.id] = alias
                return alias
            }
        }
    }

    static func encode(_ alias: Alias) -> [UInt8] {
        JSONValue.object([
            "digest": .string(alias.digest.hex),
            "extension": .string(alias.mediaType.fileExtension),
            "content_type": .string(alias.mediaType.contentType),
            "file_name": .string(alias.fileName),
            "created": .number(Double(alias.created)),
        ]).serialized()
    }

    static func decode(_ bytes: [UInt8], id: Digest128) -> Alias? {
        guard let object = (try? JSONValue(parsing: bytes))?.objectValue,
            let digest = object["digest"]?.stringValue.flatMap({ Digest128(hex: $0) }),
            let ext = object["extension"]?.stringValue,
            let contentType = object["content_type"]?.stringValue
        else { return nil }
        return Alias(
            id: id,
            digest: digest,
            mediaType: MediaType(contentType: contentType, fileExtension: ext),
            fileName: object["file_name"]?.stringValue ?? "upload.bin",
            created: object["created"]?.intValue ?? 0
        )
    }
}
