import NIOCore
import RelayCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The `results/` directory of the data directory: manifests, the index snapshot and quarantined files.
///
/// Layout under `root`:
/// - `<hex[0..2]>/<keyhex>`: one manifest per RequestKey, replaced whole by `rename(2)`;
/// - `<hex[0..2]>/<keyhex>.tmp.<pid>.<random>`: a manifest being written (debris after a crash, never read);
/// - `index.snapshot`: the compact index (`ResultManifestSnapshot`);
/// - `corrupt/<keyhex>`: manifests that failed to decode, kept for inspection and never served.
///
/// Every method blocks: call them on the thread pool.
struct ResultManifestFiles: Sendable {
    let root: String
    let corruptDirectory: String
    let snapshotPath: String

    /// A shard directory whose mtime is within this many seconds of the snapshot is rescanned: directory times are
    /// whole seconds here, and the kernel's file clock lags the wall clock by up to a tick.
    static let snapshotSlackSeconds = 2.0
    /// Temporary files older than this at load are debris of a crashed write and are removed.
    static let temporaryDebrisAgeSeconds = 60.0

    init(directory: String) {
        var directory = directory
        while directory.count > 1 && directory.hasSuffix("/") { directory.removeLast() }
        root = directory + "/results"
        corruptDirectory = root + "/corrupt"
        snapshotPath = root + "/index.snapshot"
    }

    func prepare() throws(StoreError) {
        try BlobFileIO.makeDirectories(root)
        try BlobFileIO.makeDirectory(corruptDirectory)
    }

    static func shardName(_ key: RequestKey) -> String { String(key.digest.hex.prefix(2)) }

    func shardPath(_ key: RequestKey) -> String { root + "/" + Self.shardName(key) }

    func path(for key: RequestKey) -> String { shardPath(key) + "/" + key.digest.hex }

    // MARK: - Writing

    /// What the index wants on disk for one key.
    enum Operation: Sendable {
        /// Write this manifest (tmp → fsync → rename → fsync(dir)); an unencodable one removes the key's file.
        case write(ResultManifest)
        case delete
        /// Move the key's file to `corrupt/`.
        case quarantine
    }

    enum Outcome: Sendable, Equatable {
        case written(size: Int)
        case removed
        case failed(StoreError)
    }

    /// Applies a batch in three passes so that one journal commit and one directory fsync serve many manifests:
    /// write and fsync every temporary file, rename them all (and unlink or quarantine), then fsync each directory
    /// that changed once. Operations on one key must not appear twice in a batch.
    func apply(_ batch: [(key: RequestKey, operation: Operation)]) -> [Outcome] {
        var outcomes = [Outcome](repeating: .removed, count: batch.count)
        var temporaries = [String?](repeating: nil, count: batch.count)
        var dirtyDirectories: [String: [Int]] = [:]
        var inNewShards: [Int] = []
        // Two `stat`s: writes may come before `load` made the directories; a failure shows up per operation below.
        try? prepare()

        for (index, item) in batch.enumerated() {
            guard case .write(let manifest) = item.operation, let bytes = manifest.encoded() else { continue }
            do throws(StoreError) {
                let shard = shardPath(item.key)
                if try BlobFileIO.makeDirectory(shard) { inNewShards.append(index) }
                temporaries[index] = try writeTemporaryFile(bytes, key: item.key, shard: shard)
                outcomes[index] = .written(size: bytes.readableBytes)
            } catch {
                outcomes[index] = .failed(error)
            }
        }

        for (index, item) in batch.enumerated() {
            let target = path(for: item.key)
            let shard = shardPath(item.key)
            do throws(StoreError) {
                switch item.operation {
                case .write:
                    if let temporary = temporaries[index] {
                        do throws(StoreError) {
                            try BlobFileIO.replace(target, with: temporary)
                        } catch {
                            _ = try? BlobFileIO.remove(temporary)
                            throw error
                        }
                        dirtyDirectories[shard, default: []].append(index)
                    } else if case .failed = outcomes[index] {
                        continue
                    } else if try BlobFileIO.remove(target) {
                        // Unencodable: whatever older manifest the key had must not outlive the newer answer.
                        dirtyDirectories[shard, default: []].append(index)
                    }
                case .delete:
                    if try BlobFileIO.remove(target) { dirtyDirectories[shard, default: []].append(index) }
                case .quarantine:
                    if try BlobFileIO.status(target) != nil {
                        try BlobFileIO.replace(corruptDirectory + "/" + item.key.digest.hex, with: target)
                        dirtyDirectories[shard, default: []].append(index)
                        dirtyDirectories[corruptDirectory, default: []].append(index)
                    }
                }
            } catch {
                outcomes[index] = .failed(error)
            }
        }

        if !inNewShards.isEmpty {
            // A new shard directory's own entry must be durable too.
            dirtyDirectories[root, default: []].append(contentsOf: inNewShards)
        }
        for (directory, indices) in dirtyDirectories {
            do throws(StoreError) {
                try BlobFileIO.syncDirectory(directory)
            } catch {
                for index in indices { outcomes[index] = .failed(error) }
            }
        }
        return outcomes
    }

    private func writeTemporaryFile(_ bytes: ByteBuffer, key: RequestKey, shard: String) throws(StoreError) -> String {
        try BlobFileIO.writeTemporaryFile(prefix: "\(shard)/\(key.digest.hex).tmp.\(getpid()).") {
            fd,
            path throws(StoreError) in
            try BlobFileIO.writeAll(fd, bytes, path: path)
        }
    }

    // MARK: - Reading

    enum ReadOutcome: Sendable {
        case manifest(ResultManifest, size: Int)
        case missing
        case corrupt(ResultManifestError)
        case failed(StoreError)
    }

    /// The key's manifest, fully decoded and checksum-verified.
    func read(_ key: RequestKey) -> ReadOutcome {
        let file: ByteBuffer?
        do throws(StoreError) {
            file = try BlobFileIO.readBuffer(path(for: key))
        } catch {
            return .failed(error)
        }
        guard let file else { return .missing }
        do throws(ResultManifestError) {
            return .manifest(try ResultManifest.decode(file, expectedKey: key), size: file.readableBytes)
        } catch {
            return .corrupt(error)
        }
    }

    // MARK: - Snapshot

    /// The snapshot, or nil when there is none; `problem` says why an existing one was not usable.
    func readSnapshot() throws(StoreError) -> (snapshot: ResultManifestSnapshot?, problem: String?) {
        guard let file = try BlobFileIO.readBuffer(snapshotPath) else { return (nil, nil) }
        do throws(ResultManifestError) {
            return (try ResultManifestSnapshot(decoding: file), nil)
        } catch {
            return (nil, error.description)
        }
    }

    func writeSnapshot(_ snapshot: ResultManifestSnapshot) throws(StoreError) {
        let bytes = snapshot.encoded()
        let path = try BlobFileIO.writeTemporaryFile(prefix: "\(snapshotPath).tmp.\(getpid()).") {
            fd,
            path throws(StoreError) in
            try BlobFileIO.writeAll(fd, bytes, path: path)
        }
        do throws(StoreError) {
            try BlobFileIO.replace(snapshotPath, with: path)
        } catch {
            _ = try? BlobFileIO.remove(path)
            throw error
        }
        try BlobFileIO.syncDirectory(root)
    }

    // MARK: - Scanning

    /// One shard directory and when it last changed (an entry added, replaced or removed).
    struct Shard: Sendable {
        var name: String
        /// The key's first byte, as in `ResultManifestSnapshot.Record.shard`.
        var index: Int
        var modified: Int
    }

    func listShards() throws(StoreError) -> [Shard] {
        var shards: [Shard] = []
        for name in try BlobFileIO.list(root) {
            let digits = Array(name.utf8)
            guard digits.count == 2, digits.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
                let high = Hex.value(digits[0]), let low = Hex.value(digits[1]),
                let status = try BlobFileIO.status(root + "/" + name), status.isDirectory
            else { continue }
            shards.append(Shard(name: name, index: Int(high) << 4 | Int(low), modified: status.modified))
        }
        return shards
    }

    /// What a rescan of some shards found.
    struct ScanResult: Sendable {
        var records: [ResultManifestSnapshot.Record] = []
        var corrupt: [RequestKey] = []
        /// Files older than the snapshot that it does not list: results removed before it was taken whose unlink
        /// did not happen (a crash). Serving them could hand out URLs of evicted blobs.
        var orphans: [RequestKey] = []
        var headersRead = 0
        var filesSeen = 0
        var temporaryRemoved = 0
    }

    /// Lists one changed shard: a manifest the snapshot lists and that is older than it keeps the snapshot's record
    /// (one `fstatat`, no read); a newer or unlisted one has its header read.
    func scan(
        _ shard: Shard,
        known: [ResultManifestSnapshot.Record],
        snapshotTime: Double?,
        now: Double,
        into result: inout ScanResult
    )
        throws(StoreError)
    {
        guard let directory = try BlobFileIO.OpenDirectory(root + "/" + shard.name) else { return }
        var knownByKey: [RequestKey: ResultManifestSnapshot.Record] = [:]
        knownByKey.reserveCapacity(known.count)
        for record in known { knownByKey[record.key] = record }
        let settled = snapshotTime.map { $0 - Self.snapshotSlackSeconds }

        for name in try directory.names() {
            if let digest = Self.digest(lowercaseHex: name), digest.high >> 56 == UInt64(shard.index) {
                guard let status = try directory.status(name), status.isRegularFile else { continue }
                result.filesSeen += 1
                let key = RequestKey(digest: digest)
                if let settled, Double(status.modified) < settled {
                    if var record = knownByKey[key] {
                        record.size = status.size
                        result.records.append(record)
                    } else {
                        result.orphans.append(key)
                    }
                    continue
                }
                result.headersRead += 1
                switch readHeader(name, in: directory, size: status.size) {
                case .success(let header) where header.key == key:
                    result.records.append(
                        ResultManifestSnapshot.Record(
                            key: key,
                            storedAt: header.storedAt,
                            expiresAt: header.expiresAt,
                            size: status.size,
                            digests: header.digests
                        )
                    )
                case .success, .failure(.corrupt):
                    result.corrupt.append(key)
                case .failure(.failed(let error)):
                    throw error
                }
            } else if name.contains(".tmp.") {
                guard let status = try directory.status(name), status.isRegularFile,
                    Double(status.modified) < now - Self.temporaryDebrisAgeSeconds
                else { continue }
                if try directory.remove(name) { result.temporaryRemoved += 1 }
            }
        }
    }

    /// The digest a manifest's file name spells: exactly 32 lower-case hex digits (its one spelling), else nil.
    /// Parsed here rather than with the generic `Digest128(hex:)`, which costs more than the `fstatat` per file.
    static func digest(lowercaseHex name: String) -> Digest128? {
        var name = name
        return name.withUTF8 { bytes -> Digest128? in
            guard bytes.count == 32 else { return nil }
            var halves: (UInt64, UInt64) = (0, 0)
            for index in 0..<32 {
                let byte = bytes[index]
                let nibble: UInt8
                switch byte {
                case 0x30...0x39: nibble = byte &- 0x30
                case 0x61...0x66: nibble = byte &- 0x61 &+ 10
                default: return nil
                }
                if index < 16 {
                    halves.0 = halves.0 << 4 | UInt64(nibble)
                } else {
                    halves.1 = halves.1 << 4 | UInt64(nibble)
                }
            }
            return Digest128(high: halves.0, low: halves.1)
        }
    }

    private enum HeaderFailure: Error {
        case corrupt(ResultManifestError)
        case failed(StoreError)
    }

    private func readHeader(
        _ name: String,
        in directory: BlobFileIO.OpenDirectory,
        size: Int
    ) -> Result<ResultManifest.Header, HeaderFailure> {
        do throws(StoreError) {
            guard let prefix = try directory.read(name, upTo: ResultManifest.headerReadSize) else {
                return .failure(.corrupt(.init("vanished while scanning")))
            }
            do throws(ResultManifestError) {
                return .success(try ResultManifest.decodeHeader(prefix, fileSize: size))
            } catch {
                // A header with more digests than the prefix holds: read it all.
                guard prefix.readableBytes < size, let whole = try directory.read(name) else {
                    return .failure(.corrupt(error))
                }
                do throws(ResultManifestError) {
                    return .success(try ResultManifest.decodeHeader(whole, fileSize: size))
                } catch {
                    return .failure(.corrupt(error))
                }
            }
        } catch {
            return .failure(.failed(error))
        }
    }
}
