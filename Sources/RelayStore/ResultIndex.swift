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

/// A finished generation kept for reuse: what was asked (model + canonical input), what came back, until when.
public struct CachedResult: Sendable, Hashable {
    public enum Outcome: Sendable, Hashable {
        case success(result: JSONValue, inferenceSeconds: Double?)
        /// A deterministic validation failure (422), kept briefly so a client retrying it does not reach upstream.
        case rejected(FalError)
    }

    public let modelID: String
    public let canonicalInput: [UInt8]
    public let outcome: Outcome
    public let storedAt: Timestamp
    public let expiresAt: Timestamp

    public init(modelID: String, canonicalInput: [UInt8], outcome: Outcome, storedAt: Timestamp, expiresAt: Timestamp) {
        self.modelID = modelID
        self.canonicalInput = canonicalInput
        self.outcome = outcome
        self.storedAt = storedAt
        self.expiresAt = expiresAt
    }

    /// Seconds of freshness left at `now` (for `Cache-Status: …; ttl=`).
    public func ttl(at now: Timestamp) -> Int {
        max(0, Int((expiresAt.secondsSinceEpoch - now.secondsSinceEpoch).rounded(.down)))
    }
}

/// Completed results by RequestKey (DESIGN.md "Request path": `ResultIndex[key]`), in memory or durable on disk.
///
/// A hash is never trusted alone: `lookup` compares the stored model and canonical input byte for byte, so a
/// collision costs a miss, never a wrong answer. Expired entries are dropped when met and by `sweep`.
///
/// **Durable mode** (`init(directory:threadPool:)`, DESIGN.md "Storage"): every stored result is also a manifest file
/// `results/<hex[0..2]>/<keyhex>` (`ResultManifest`), written on the thread pool tmp → fsync → rename → fsync(dir),
/// so a crash leaves the old manifest or the new one. `store` only enqueues: writes for one key run in order and the
/// latest wins (intermediate versions may be skipped). In memory the index keeps per key only what it needs to
/// decide (times, blob digests, file size) and decodes a manifest on its first lookup, keeping at most
/// `decodedLimit` decoded entries; so `load()` at start-up reads one snapshot file plus the shard directories that
/// changed since, not every manifest.
///
/// The first lookup of a key after a restart (or after its decoded entry was dropped for the limit) reads its
/// manifest synchronously: one `open`/`read` of a few KB. `warm()` decodes the newest entries ahead of time.
public final class ResultIndex: Sendable {
    /// What `load()` found.
    public struct LoadReport: Sendable, Hashable {
        /// Entries in the index afterwards.
        public var entries = 0
        /// Whether a usable snapshot was read (otherwise every shard was scanned).
        public var usedSnapshot = false
        /// Why an existing snapshot was not used, when it was not.
        public var snapshotProblem: String?
        public var shards = 0
        public var scannedShards = 0
        /// Manifest headers read (files newer than the snapshot, or all without one).
        public var headersRead = 0
        public var expired = 0
        public var quarantined = 0
        public var orphansRemoved = 0
        public var temporaryFilesRemoved = 0
        /// Wall time of the load.
        public var duration: Duration = .zero
    }

    /// The data directory (its `results/` holds the manifests); nil for a memory-only index.
    public let directory: String?
    /// At most this many decoded entries are kept in memory in durable mode (the rest are read again on lookup).
    public let decodedLimit: Int
    /// Manifest writers running at once on the pool. fsync latency, not CPU, bounds a writer: concurrent fsyncs share
    /// journal commits (measured here: 8 ms per manifest with one writer, under 5 with two), but each writer holds a
    /// pool thread while it waits.
    public let writers: Int

    private let files: ResultManifestFiles?
    private let threadPool: NIOThreadPool?
    private let state = Mutex(State())

    /// Manifests written per thread-pool work item: one journal commit and one fsync per directory for all of them.
    private static let writeBatchSize = 64
    private static let scanParallelism = 4

    /// A memory-only index: nothing survives a restart.
    public init() {
        directory = nil
        decodedLimit = .max
        writers = 0
        files = nil
        threadPool = nil
    }

    /// A durable index in `directory/results`. Touches no file: call `load()` at start-up before serving (stores
    /// made before it are kept and win over what it finds). `threadPool` must be running. On a pool shared with media
    /// reads keep `writers` at 1; a pool of its own can take more.
    public init(directory: String, threadPool: NIOThreadPool, decodedLimit: Int = 20_000, writers: Int = 1) {
        self.directory = directory
        self.decodedLimit = max(1, decodedLimit)
        self.writers = max(1, writers)
        self.files = ResultManifestFiles(directory: directory)
        self.threadPool = threadPool
    }

    // MARK: - Lookup and store

    /// The fresh entry for `key` when its model and canonical input are exactly these; nil otherwise. In durable mode
    /// the first lookup of an entry not in memory reads its manifest (see the type's documentation).
    public func lookup(
        _ key: RequestKey,
        modelID: String,
        canonicalInput: [UInt8],
        now: Timestamp = .now()
    ) -> CachedResult? {
        enum Step {
            case done(CachedResult?)
            case read(generation: UInt64)
        }
        var startWriter = false
        let step = state.withLock { state -> Step in
            guard let slot = state.entries.slots[key] else { return .done(nil) }
            guard slot.expiresAt > now.secondsSinceEpoch else {
                state.forget(key)
                startWriter = enqueue(.delete, for: key, in: &state)
                return .done(nil)
            }
            if let entry = slot.entry { return .done(entry) }
            return .read(generation: slot.generation)
        }
        if startWriter { startWriting() }

        let entry: CachedResult?
        switch step {
        case .done(let found):
            entry = found
        case .read(let generation):
            guard let files else { return nil }
            entry = install(files.read(key), for: key, generation: generation, now: now.secondsSinceEpoch)
        }
        guard let entry, entry.modelID == modelID, entry.canonicalInput == canonicalInput else { return nil }
        return entry
    }

    /// Stores (or replaces) the entry for `key`. Never blocks on I/O: in durable mode the manifest write is queued
    /// on the thread pool.
    public func store(_ key: RequestKey, _ result: CachedResult) {
        let digests: [Digest128]
        if case .success(let json, _) = result.outcome {
            digests = Self.referencedDigests(in: json)
        } else {
            digests = []
        }
        let durable = files != nil
        let startWriter = state.withLock { state -> Bool in
            state.generation &+= 1
            var slot = Slot(
                storedAt: result.storedAt.secondsSinceEpoch,
                expiresAt: result.expiresAt.secondsSinceEpoch,
                digests: digests,
                size: 0,
                entry: result,
                generation: state.generation,
                persisted: !durable
            )
            // Until this version is written, the file still holds the one before (if any): the snapshot lists that.
            if let old = state.entries.slots[key] { slot.previous = old.persisted ? old.record(key) : old.previous }
            state.entries.insert(slot, for: key)
            guard durable else { return false }
            noteDecoded(key, generation: slot.generation, in: &state)
            let manifest = ResultManifest(key: key, result: result, digests: digests)
            return enqueue(.write(manifest, generation: slot.generation), for: key, in: &state)
        }
        if startWriter { startWriting() }
    }

    /// Calls `completion` once the entry stored for `key` now is on disk: true when written, false when it never will
    /// be (its write failed, it was removed first, the pool stopped). At once, on the caller's stack, when there is
    /// nothing to wait for (memory-only index, no entry, entry already written); otherwise on a pool thread.
    ///
    /// A newer `store` of the key before the write satisfies it too: the key's file then holds the newer version.
    public func whenWritten(_ key: RequestKey, _ completion: @escaping @Sendable (Bool) -> Void) {
        let waiting = state.withLock { state -> Bool in
            guard files != nil, let slot = state.entries.slots[key], !slot.persisted else { return false }
            state.writeWaiters[key, default: []].append((slot.generation, completion))
            return true
        }
        if !waiting { completion(true) }
    }

    /// Removes the entry for `key` (and its file); false when there was none. During `load()` the key's file is
    /// removed even if the scan has not reached it yet.
    @discardableResult
    public func remove(_ key: RequestKey) -> Bool {
        var startWriter = false
        let removed = state.withLock { state -> Bool in
            let existed = state.forget(key) != nil
            if existed || state.loading { startWriter = enqueue(.delete, for: key, in: &state) }
            return existed
        }
        if startWriter { startWriting() }
        return removed
    }

    /// Removes every result of the model `modelID` (the admin API's purge); returns how many. Entries not decoded in
    /// memory are identified by reading their manifests on the thread pool.
    public func remove(modelID: String) async throws(StoreError) -> Int {
        let candidates = state.withLock { state in state.entries.slots.map { ($0.key, $0.value.entry?.modelID) } }
        var doomed = candidates.compactMap { $0.1 == modelID ? $0.0 : nil }
        let unknown = candidates.compactMap { $0.1 == nil ? $0.0 : nil }
        if !unknown.isEmpty, let files {
            doomed += try await onThreadPool { () throws(StoreError) -> [RequestKey] in
                unknown.filter { key in
                    if case .manifest(let manifest, _) = files.read(key) { return manifest.result.modelID == modelID }
                    return false
                }
            }
        }
        return doomed.reduce(0) { count, key in remove(key) ? count + 1 : count }
    }

    /// Drops expired entries (and, in durable mode, their files); returns how many.
    @discardableResult
    public func sweep(now: Timestamp = .now()) -> Int {
        removeAll { _, slot in slot.expiresAt <= now.secondsSinceEpoch }
    }

    /// Entries in the index (decoded or not).
    public var count: Int { state.withLock { $0.entries.slots.count } }

    /// Whether `load()` has finished (always true for a memory-only index). Until then the index may lack results
    /// that are on disk, so nothing may conclude from it that a blob is unreferenced.
    public var isLoaded: Bool {
        files == nil || state.withLock { $0.loaded }
    }

    // MARK: - Blob references

    /// The blobs a result points at: every `/files/<32 hex>.` in its strings, in order of first mention, once each.
    public static func referencedDigests(in value: JSONValue) -> [Digest128] {
        var found: [Digest128] = []
        var seen: Set<Digest128> = []
        collectDigests(in: value, into: &found, seen: &seen)
        return found
    }

    /// Whether any result in the index points at `digest`.
    public func references(_ digest: Digest128) -> Bool {
        state.withLock { $0.entries.references[digest] != nil }
    }

    /// Every blob some result in the index points at.
    public func referencedDigests() -> Set<Digest128> {
        state.withLock { Set($0.entries.references.keys) }
    }

    /// Removes every result that points at one of `digests` (a blob being evicted must take its results with it, or
    /// the cache would hand out dead URLs). `storedBefore` limits it to results stored earlier. Returns how many.
    @discardableResult
    public func removeResults(referencing digests: Set<Digest128>, storedBefore: Timestamp? = nil) -> Int {
        guard !digests.isEmpty else { return 0 }
        let cutoff = storedBefore?.secondsSinceEpoch ?? .infinity
        return removeAll { _, slot in
            slot.storedAt < cutoff && slot.digests.contains { digests.contains($0) }
        }
    }

    /// Of `digests`, those no result points at. Takes the lock per chunk so lookups are not held up by a big sweep.
    func unreferenced(among digests: [Digest128]) -> Set<Digest128> {
        var result: Set<Digest128> = []
        var start = 0
        while start < digests.count {
            let end = min(start + 4096, digests.count)
            state.withLock { state in
                for digest in digests[start..<end] where state.entries.references[digest] == nil {
                    result.insert(digest)
                }
            }
            start = end
        }
        return result
    }

    /// Digests results point at that are not in `present` (blobs gone from disk).
    func referencedDigests(notIn present: Set<Digest128>) -> Set<Digest128> {
        state.withLock { state in
            Set(state.entries.references.keys.lazy.filter { !present.contains($0) })
        }
    }

    // MARK: - Durability

    /// Manifest writes queued or running.
    public var pendingWrites: Int {
        state.withLock { $0.pending.count + $0.busy.count }
    }

    /// Manifest operations that failed (disk full, I/O error, pool stopped) since start; the entries stay served
    /// from memory but would not survive a restart.
    public var writeFailures: Int {
        state.withLock { $0.writeFailures }
    }

    /// Returns when the writer is idle: nothing queued, nothing being written (for shutdown and tests; under a steady
    /// stream of stores it waits for a gap).
    public func flush() async {
        guard files != nil else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { state -> Bool in
                if state.isIdle { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    /// Rebuilds the index from disk: the snapshot, plus a scan of the shard directories changed since it was taken
    /// (every shard when there is none). Expired entries are dropped and their files removed; manifests whose
    /// header does not decode are moved to `results/corrupt/`; files the snapshot does not list although older
    /// than it (results removed whose unlink a crash lost) are removed. Call once at start-up; a memory-only index
    /// returns at once.
    ///
    /// The snapshot's entries are served as soon as it is read, before the scan finishes: every entry is checked
    /// against its file when first looked up, so an entry changed or removed since the snapshot is never served
    /// wrong. What the scan adds (results stored after the snapshot, exact times and digests) lands when it ends.
    /// Results stored and removed meanwhile are kept and stay removed. Until it returns, `isLoaded` is false.
    @discardableResult
    public func load(now: Timestamp = .now()) async throws(StoreError) -> LoadReport {
        var report = LoadReport()
        guard let files else { return report }
        let clock = ContinuousClock()
        let started = clock.now

        let (snapshot, problem, shards) = try await onThreadPool { () throws(StoreError) in
            try files.prepare()
            let (snapshot, problem) = try files.readSnapshot()
            return (snapshot, problem, try files.listShards())
        }
        report.usedSnapshot = snapshot != nil
        report.snapshotProblem = problem
        report.shards = shards.count

        var known = [[ResultManifestSnapshot.Record]](repeating: [], count: 256)
        for record in snapshot?.records ?? [] { known[record.shard].append(record) }
        let settled = snapshot.map { $0.createdAt - ResultManifestFiles.snapshotSlackSeconds }
        var records: [ResultManifestSnapshot.Record] = []
        records.reserveCapacity(snapshot?.records.count ?? 0)
        var changed: [ResultManifestFiles.Shard] = []
        for shard in shards {
            if let settled, Double(shard.modified) < settled {
                records.append(contentsOf: known[shard.index])
            } else {
                changed.append(shard)
            }
        }
        report.scannedShards = changed.count

        if !changed.isEmpty, snapshot != nil {
            // Serve the snapshot while the changed shards are rescanned.
            var provisional = Self.entries(from: records, now: now.secondsSinceEpoch).entries
            for shard in changed {
                for record in known[shard.index] where record.expiresAt > now.secondsSinceEpoch {
                    provisional.insert(Self.slot(record), for: record.key)
                }
            }
            state.withLock { state in
                for (key, slot) in state.entries.slots where slot.generation > 0 { provisional.insert(slot, for: key) }
                state.entries = provisional
                state.loading = true
            }
        }

        let scan: ResultManifestFiles.ScanResult
        do throws(StoreError) {
            scan = try await self.scan(
                changed,
                known: known,
                snapshotTime: snapshot?.createdAt,
                now: now.secondsSinceEpoch
            )
        } catch {
            state.withLock { state in
                state.loading = false
                state.removedDuringLoad = []
            }
            throw error
        }
        records.append(contentsOf: scan.records)
        report.headersRead = scan.headersRead
        report.temporaryFilesRemoved = scan.temporaryRemoved

        // Build the new index outside the lock.
        let built = Self.entries(from: records, now: now.secondsSinceEpoch)
        var loaded = built.entries
        let expired = built.expired
        var startWriter = false
        state.withLock { state in
            // Entries stored since start are newer than anything on disk: their own writes replace the files.
            var storedSinceStart: Set<RequestKey> = []
            for (key, slot) in state.entries.slots where slot.generation > 0 {
                loaded.insert(slot, for: key)
                storedSinceStart.insert(key)
            }
            for key in state.removedDuringLoad where !storedSinceStart.contains(key) {
                loaded.remove(key)
            }
            state.entries = loaded
            state.loading = false
            state.removedDuringLoad = []
            for key in expired where !storedSinceStart.contains(key) {
                startWriter = enqueue(.delete, for: key, in: &state) || startWriter
            }
            for key in scan.orphans where !storedSinceStart.contains(key) {
                startWriter = enqueue(.delete, for: key, in: &state) || startWriter
            }
            for key in scan.corrupt where !storedSinceStart.contains(key) {
                startWriter = enqueue(.quarantine, for: key, in: &state) || startWriter
            }
            state.loaded = true
            report.entries = state.entries.slots.count
        }
        if startWriter { startWriting() }
        report.expired = expired.count
        report.orphansRemoved = scan.orphans.count
        report.quarantined = scan.corrupt.count
        report.duration = clock.now - started
        return report
    }

    /// Slots for records found on disk, and the keys of those already expired.
    private static func entries(
        from records: [ResultManifestSnapshot.Record],
        now: Double
    ) -> (entries: Entries, expired: [RequestKey]) {
        var entries = Entries()
        entries.slots.reserveCapacity(records.count)
        var expired: [RequestKey] = []
        for record in records {
            if record.expiresAt > now {
                entries.insert(slot(record), for: record.key)
            } else {
                expired.append(record.key)
            }
        }
        return (entries, expired)
    }

    /// A slot for a manifest on disk: generation 0, not decoded.
    private static func slot(_ record: ResultManifestSnapshot.Record) -> Slot {
        Slot(
            storedAt: record.storedAt,
            expiresAt: record.expiresAt,
            digests: record.digests,
            size: record.size,
            entry: nil,
            generation: 0,
            persisted: true
        )
    }

    /// Writes `results/index.snapshot` (tmp → fsync → rename → fsync(dir)) from the index as it is now: call it
    /// periodically and at clean shutdown (after `flush()`), so the next `load()` scans little. Returns false without
    /// writing for a memory-only index or before `load()` has run (a snapshot of a half-loaded index would make the
    /// next start drop the rest as orphans).
    ///
    /// The snapshot lists what is *on disk*, not what is wanted: the writer is paused while it is collected (waiting
    /// for at most the batch in flight), so for each key the last finished write is known. A key whose newer version
    /// is still queued is listed with the version its file holds; a removed key whose file is not unlinked yet is
    /// left out (its file is an orphan at the next load). Anything written after the snapshot's instant changes its
    /// shard's mtime and is rescanned.
    @discardableResult
    public func writeSnapshot() async throws(StoreError) -> Bool {
        guard let files else { return false }
        let paused = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let ready = state.withLock { state -> Bool? in
                guard state.loaded else { return false }
                state.paused += 1
                if state.busy.isEmpty { return true }
                state.quiesceWaiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
        guard paused else { return false }
        let (snapshot, restart) = state.withLock { state -> (ResultManifestSnapshot, Int) in
            // Taken before reading the index: a shard changed after this instant is rescanned at the next load.
            let createdAt = Timestamp.now().secondsSinceEpoch
            var records: [ResultManifestSnapshot.Record] = []
            records.reserveCapacity(state.entries.slots.count)
            for (key, slot) in state.entries.slots {
                if slot.persisted {
                    records.append(slot.record(key))
                } else if let previous = slot.previous {
                    records.append(previous)
                }
            }
            state.paused -= 1
            return (ResultManifestSnapshot(createdAt: createdAt, records: records), resumeWriters(&state))
        }
        for _ in 0..<restart { startWriting() }
        try await onThreadPool { () throws(StoreError) in try files.writeSnapshot(snapshot) }
        return true
    }

    /// Decodes up to `limit` (default: what `decodedLimit` leaves room for) not-yet-decoded entries, newest first, on
    /// the thread pool, so that lookups after a restart do not read files. Returns how many were decoded.
    @discardableResult
    public func warm(limit: Int? = nil) async -> Int {
        guard let files else { return 0 }
        let candidates = state.withLock { state -> [(RequestKey, UInt64, Double)] in
            let room = min(limit ?? .max, decodedLimit - state.entries.decodedCount)
            guard room > 0 else { return [] }
            let cold = state.entries.slots.lazy.filter { $0.value.entry == nil }.map {
                ($0.key, $0.value.generation, $0.value.storedAt)
            }
            return Array(cold.sorted { $0.2 > $1.2 }.prefix(room))
        }
        var decoded = 0
        var start = 0
        while start < candidates.count {
            let chunk = Array(candidates[start..<min(start + 256, candidates.count)])
            start += chunk.count
            let reads = try? await onThreadPool { () throws(StoreError) in
                chunk.map { ($0.0, $0.1, files.read($0.0)) }
            }
            guard let reads else { break }
            let now = Timestamp.now().secondsSinceEpoch
            for (key, generation, outcome) in reads
            where install(outcome, for: key, generation: generation, now: now) != nil {
                decoded += 1
            }
        }
        return decoded
    }

    // MARK: - Internals

    /// What the index holds per key.
    private struct Slot {
        var storedAt: Double
        var expiresAt: Double
        var digests: [Digest128]
        /// The manifest's size on disk (0 until written).
        var size: Int
        /// The decoded entry; nil until a lookup reads the manifest (durable mode only).
        var entry: CachedResult?
        /// Bumped by every `store`, so a read that raced a newer store does not install stale data.
        var generation: UInt64
        /// The file holds this generation, so `entry` may be dropped and read again.
        var persisted: Bool
        /// While not `persisted`: the version the file still holds, if known (what a snapshot lists meanwhile).
        var previous: ResultManifestSnapshot.Record? = nil

        func record(_ key: RequestKey) -> ResultManifestSnapshot.Record {
            ResultManifestSnapshot.Record(
                key: key,
                storedAt: storedAt,
                expiresAt: expiresAt,
                size: size,
                digests: digests
            )
        }
    }

    /// The slots with the reference counts and decoded count kept in step with them.
    private struct Entries {
        var slots: [RequestKey: Slot] = [:]
        var references: [Digest128: Int] = [:]
        var decodedCount = 0

        mutating func insert(_ slot: Slot, for key: RequestKey) {
            if let old = slots.updateValue(slot, forKey: key) { release(old) }
            for digest in slot.digests { references[digest, default: 0] += 1 }
            if slot.entry != nil { decodedCount += 1 }
        }

        @discardableResult
        mutating func remove(_ key: RequestKey) -> Slot? {
            guard let old = slots.removeValue(forKey: key) else { return nil }
            release(old)
            return old
        }

        mutating func dropEntry(_ key: RequestKey) {
            guard slots[key]?.entry != nil else { return }
            slots[key]?.entry = nil
            decodedCount -= 1
        }

        private mutating func release(_ slot: Slot) {
            for digest in slot.digests {
                let count = (references[digest] ?? 1) - 1
                references[digest] = count > 0 ? count : nil
            }
            if slot.entry != nil { decodedCount -= 1 }
        }
    }

    private enum Operation {
        case write(ResultManifest, generation: UInt64)
        case delete
        case quarantine

        var onDisk: ResultManifestFiles.Operation {
            switch self {
            case .write(let manifest, _): .write(manifest)
            case .delete: .delete
            case .quarantine: .quarantine
            }
        }
    }

    private struct State {
        var entries = Entries()
        var generation: UInt64 = 0
        /// Keys whose entries were decoded, oldest first, for `decodedLimit` (stale pairs are skipped).
        var decodedOrder = FIFO<(RequestKey, UInt64)>()
        var loaded = false

        /// The latest wanted disk state per key; a key is in `queue` exactly when it is here and not `busy`.
        var pending: [RequestKey: Operation] = [:]
        var queue = FIFO<RequestKey>()
        var busy: Set<RequestKey> = []
        var writers = 0
        var writeFailures = 0
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        /// Snapshots being collected: writers take no new batch meanwhile.
        var paused = 0
        var quiesceWaiters: [CheckedContinuation<Bool, Never>] = []

        var isIdle: Bool { writers == 0 && pending.isEmpty && busy.isEmpty }

        /// `whenWritten` callers per key, with the generation each waits for.
        var writeWaiters: [RequestKey: [(generation: UInt64, callback: @Sendable (Bool) -> Void)]] = [:]

        /// The waiters an operation on `key` just settled: a written version satisfies those waiting for it or an
        /// older one; a removal, quarantine or failure ends every wait (false: that version will not be on disk).
        mutating func takeWriteWaiters(
            _ key: RequestKey,
            after operation: Operation,
            outcome: ResultManifestFiles.Outcome
        ) -> [(@Sendable (Bool) -> Void, Bool)] {
            guard let waiting = writeWaiters[key] else { return [] }
            switch (operation, outcome) {
            case (.write(_, let generation), .written):
                let (done, left) = (
                    waiting.filter { $0.generation <= generation }, waiting.filter { $0.generation > generation }
                )
                writeWaiters[key] = left.isEmpty ? nil : left
                return done.map { ($0.callback, true) }
            default:
                writeWaiters[key] = nil
                return waiting.map { ($0.callback, false) }
            }
        }

        /// Between a load's snapshot and its scan: what was removed meanwhile stays removed when the scan lands.
        var loading = false
        var removedDuringLoad: Set<RequestKey> = []

        @discardableResult
        mutating func forget(_ key: RequestKey) -> Slot? {
            if loading { removedDuringLoad.insert(key) }
            return entries.remove(key)
        }
    }

    /// Queues `operation` for `key`, replacing a queued one; true when a writer must be started.
    private func enqueue(_ operation: Operation, for key: RequestKey, in state: inout State) -> Bool {
        guard files != nil else { return false }
        if state.pending.updateValue(operation, forKey: key) == nil && !state.busy.contains(key) {
            state.queue.append(key)
        }
        guard state.paused == 0, state.writers < writers else { return false }
        state.writers += 1
        return true
    }

    /// After a pause: how many writers to start for what queued up meanwhile.
    private func resumeWriters(_ state: inout State) -> Int {
        guard state.paused == 0 else { return 0 }
        let wanted = min(writers, state.queue.count) - state.writers
        guard wanted > 0 else { return 0 }
        state.writers += wanted
        return wanted
    }

    private func startWriting() {
        guard let threadPool else { return }
        threadPool.submit { work in
            switch work {
            case .active: self.drainWrites()
            case .cancelled: self.abandonWrites()
            }
        }
    }

    /// A writer: takes batches of queued keys until none is left.
    private func drainWrites() {
        guard let files else { return }
        while true {
            var waiters: [CheckedContinuation<Void, Never>] = []
            var quiesced: [CheckedContinuation<Bool, Never>] = []
            let batch = state.withLock { state -> [(key: RequestKey, operation: Operation)] in
                var batch: [(key: RequestKey, operation: Operation)] = []
                guard state.paused == 0 else {
                    state.writers -= 1
                    if state.busy.isEmpty { swap(&quiesced, &state.quiesceWaiters) }
                    return batch
                }
                // Share a burst between the writers rather than one taking it all.
                let size = min(Self.writeBatchSize, max(1, (state.queue.count + writers - 1) / writers))
                while batch.count < size, let key = state.queue.popFirst() {
                    guard let operation = state.pending.removeValue(forKey: key) else { continue }
                    state.busy.insert(key)
                    batch.append((key, operation))
                }
                if batch.isEmpty {
                    state.writers -= 1
                    if state.isIdle { swap(&waiters, &state.idleWaiters) }
                }
                return batch
            }
            guard !batch.isEmpty else {
                for waiter in waiters { waiter.resume() }
                for waiter in quiesced { waiter.resume(returning: true) }
                return
            }

            let outcomes = files.apply(batch.map { ($0.key, $0.operation.onDisk) })

            var written: [(@Sendable (Bool) -> Void, Bool)] = []
            state.withLock { state in
                for (item, outcome) in zip(batch, outcomes) {
                    state.busy.remove(item.key)
                    if state.pending[item.key] != nil { state.queue.append(item.key) }
                    written += state.takeWriteWaiters(item.key, after: item.operation, outcome: outcome)
                    switch outcome {
                    case .failed:
                        state.writeFailures += 1
                    case .written(let size):
                        guard case .write(let manifest, let generation) = item.operation,
                            let slot = state.entries.slots[item.key]
                        else { continue }
                        if slot.generation == generation {
                            state.entries.slots[item.key]?.persisted = true
                            state.entries.slots[item.key]?.size = size
                            state.entries.slots[item.key]?.previous = nil
                        } else if !slot.persisted {
                            // A newer version is queued; until it lands, the file holds this one.
                            state.entries.slots[item.key]?.previous = ResultManifestSnapshot.Record(
                                key: item.key,
                                storedAt: manifest.result.storedAt.secondsSinceEpoch,
                                expiresAt: manifest.result.expiresAt.secondsSinceEpoch,
                                size: size,
                                digests: manifest.digests
                            )
                        }
                    case .removed:
                        if let slot = state.entries.slots[item.key], !slot.persisted {
                            state.entries.slots[item.key]?.previous = nil
                        }
                    }
                }
                if state.paused > 0 && state.busy.isEmpty { swap(&quiesced, &state.quiesceWaiters) }
            }
            for (waiter, ok) in written { waiter(ok) }
            for waiter in quiesced { waiter.resume(returning: true) }
        }
    }

    /// The pool is not running: what is queued will not be written.
    private func abandonWrites() {
        let (waiters, written) = state.withLock {
            state -> ([CheckedContinuation<Void, Never>], [@Sendable (Bool) -> Void]) in
            state.writeFailures += state.pending.count
            let written = state.pending.keys.flatMap {
                state.writeWaiters.removeValue(forKey: $0)?.map(\.callback) ?? []
            }
            state.pending.removeAll()
            state.queue.removeAll()
            state.writers -= 1
            guard state.isIdle else { return ([], written) }
            defer { state.idleWaiters.removeAll() }
            return (state.idleWaiters, written)
        }
        for waiter in written { waiter(false) }
        for waiter in waiters { waiter.resume() }
    }

    /// Puts a manifest read from disk into its slot, unless a newer store replaced the slot meanwhile (then the
    /// slot's own entry is the answer). Returns the entry to compare, nil for a miss.
    private func install(
        _ outcome: ResultManifestFiles.ReadOutcome,
        for key: RequestKey,
        generation: UInt64,
        now: Double
    ) -> CachedResult? {
        var startWriter = false
        let entry = state.withLock { state -> CachedResult? in
            guard let slot = state.entries.slots[key] else { return nil }
            guard slot.generation == generation, slot.entry == nil else { return slot.entry }
            switch outcome {
            case .manifest(let manifest, let size):
                guard manifest.result.expiresAt.secondsSinceEpoch > now else {
                    state.forget(key)
                    startWriter = enqueue(.delete, for: key, in: &state)
                    return nil
                }
                // The file is the truth: its times and digests replace what the snapshot said.
                state.entries.insert(
                    Slot(
                        storedAt: manifest.result.storedAt.secondsSinceEpoch,
                        expiresAt: manifest.result.expiresAt.secondsSinceEpoch,
                        digests: manifest.digests,
                        size: size,
                        entry: manifest.result,
                        generation: generation,
                        persisted: true
                    ),
                    for: key
                )
                noteDecoded(key, generation: generation, in: &state)
                return manifest.result
            case .missing:
                state.forget(key)
                return nil
            case .corrupt:
                state.forget(key)
                startWriter = enqueue(.quarantine, for: key, in: &state)
                return nil
            case .failed:
                return nil  // perhaps transient: the entry stays, this request misses
            }
        }
        if startWriter { startWriting() }
        return entry
    }

    /// Records a decoded entry and drops the oldest decoded ones beyond `decodedLimit` (only those whose manifest is
    /// written: the rest are the only copy).
    private func noteDecoded(_ key: RequestKey, generation: UInt64, in state: inout State) {
        state.decodedOrder.append((key, generation))
        var attempts = 0
        while state.entries.decodedCount > decodedLimit, attempts < 16,
            let (oldKey, oldGeneration) = state.decodedOrder.popFirst()
        {
            attempts += 1
            guard let slot = state.entries.slots[oldKey], slot.generation == oldGeneration, slot.entry != nil else {
                continue  // stale: replaced, removed or already dropped
            }
            if slot.persisted {
                state.entries.dropEntry(oldKey)
            } else {
                state.decodedOrder.append((oldKey, oldGeneration))
            }
        }
        // Stale pairs accumulate when entries churn without exceeding the limit: rebuild now and then.
        if state.decodedOrder.count > 2 * min(decodedLimit, state.entries.slots.count) + 1024 {
            var order = FIFO<(RequestKey, UInt64)>()
            for (key, slot) in state.entries.slots where slot.entry != nil { order.append((key, slot.generation)) }
            state.decodedOrder = order
        }
    }

    /// Removes every entry `predicate` selects, and its file; returns how many.
    private func removeAll(where predicate: (RequestKey, Slot) -> Bool) -> Int {
        var startWriter = false
        let removed = state.withLock { state -> Int in
            let keys = state.entries.slots.compactMap { predicate($0.key, $0.value) ? $0.key : nil }
            for key in keys {
                state.forget(key)
                startWriter = enqueue(.delete, for: key, in: &state) || startWriter
            }
            return keys.count
        }
        if startWriter { startWriting() }
        return removed
    }

    /// Rescans the changed shards, spread over a few thread-pool work items.
    private func scan(
        _ shards: [ResultManifestFiles.Shard],
        known: [[ResultManifestSnapshot.Record]],
        snapshotTime: Double?,
        now: Double
    ) async throws(StoreError) -> ResultManifestFiles.ScanResult {
        guard let files, !shards.isEmpty else { return ResultManifestFiles.ScanResult() }
        let parts = min(Self.scanParallelism, shards.count)
        let outcomes = await withTaskGroup(of: Result<ResultManifestFiles.ScanResult, StoreError>.self) { group in
            for part in 0..<parts {
                let mine = stride(from: part, to: shards.count, by: parts).map { shards[$0] }
                let knownForMine = mine.map { known[$0.index] }
                group.addTask {
                    do throws(StoreError) {
                        return .success(
                            try await self.onThreadPool { () throws(StoreError) in
                                var result = ResultManifestFiles.ScanResult()
                                for (shard, known) in zip(mine, knownForMine) {
                                    try files.scan(
                                        shard,
                                        known: known,
                                        snapshotTime: snapshotTime,
                                        now: now,
                                        into: &result
                                    )
                                }
                                return result
                            }
                        )
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var outcomes: [Result<ResultManifestFiles.ScanResult, StoreError>] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        var total = ResultManifestFiles.ScanResult()
        for outcome in outcomes {
            let part = try outcome.get()
            total.records.append(contentsOf: part.records)
            total.corrupt.append(contentsOf: part.corrupt)
            total.orphans.append(contentsOf: part.orphans)
            total.headersRead += part.headersRead
            total.filesSeen += part.filesSeen
            total.temporaryRemoved += part.temporaryRemoved
        }
        return total
    }

    /// Runs blocking work on the thread pool and brings its typed error back.
    private func onThreadPool<T: Sendable>(
        _ body: @escaping @Sendable () throws(StoreError) -> T
    ) async throws(StoreError) -> T {
        guard let threadPool else { throw .shutdown }
        return try await threadPool.runStoreWork(body)
    }

    private static let filesMarker: [UInt8] = Array("/files/".utf8)

    private static func collectDigests(in value: JSONValue, into found: inout [Digest128], seen: inout Set<Digest128>) {
        switch value {
        case .string(let text):
            var text = text
            text.withUTF8 { bytes in
                let marker = filesMarker
                guard bytes.count >= marker.count + 33 else { return }
                var index = 0
                while index + marker.count + 33 <= bytes.count {
                    guard bytes[index] == marker[0], (1..<marker.count).allSatisfy({ bytes[index + $0] == marker[$0] })
                    else {
                        index += 1
                        continue
                    }
                    let start = index + marker.count
                    if bytes[start + 32] == UInt8(ascii: "."),
                        let digest = Digest128(
                            hex: String(
                                decoding: UnsafeBufferPointer(rebasing: bytes[start..<start + 32]),
                                as: UTF8.self
                            )
                        ),
                        seen.insert(digest).inserted
                    {
                        found.append(digest)
                    }
                    index = start
                }
            }
        case .array(let values):
            for element in values { collectDigests(in: element, into: &found, seen: &seen) }
        case .object(let object):
            for member in object { collectDigests(in: member.value, into: &found, seen: &seen) }
        case .null, .bool, .number:
            break
        }
    }
}

/// A first-in first-out queue over an array with a moving head (amortised O(1) both ends).
private struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ element: Element) {
        storage.append(element)
    }

    mutating func popFirst() -> Element? {
        guard head < storage.count else { return nil }
        let element = storage[head]
        head += 1
        if head >= 1024 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    mutating func removeAll() {
        storage.removeAll()
        head = 0
    }
}
