import NIOCore
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
    /// The data directory (its `results/` holds the manifests); nil for a memory-only index.
    public let directory: String?
    /// At most this many decoded entries are kept in memory in durable mode (the rest are read again on lookup).
    public let decodedLimit: Int
    /// Manifest writers running at once on the pool. fsync latency, not CPU, bounds a writer: concurrent fsyncs share
    /// journal commits (measured here: 8 ms per manifest with one writer, under 5 with two), but each writer holds a
    /// pool thread while it waits.
    public let writers: Int

    let files: ResultManifestFiles?
    let threadPool: NIOThreadPool?
    let state = Mutex(State())

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

    /// What memory alone knows of a key (`probe`): it never reads a file, so an event loop may ask.
    public enum Probe: Sendable, Equatable {
        /// The fresh entry, for exactly this model and canonical input.
        case hit(CachedResult)
        case miss
        /// The index has a fresh entry for the key whose manifest is not decoded in memory: `read` it (off the event
        /// loop) and probe again.
        case onDisk
    }

    /// What memory says of `key` for this model and canonical input, without touching a file.
    public func probe(_ key: RequestKey, modelID: String, canonicalInput: [UInt8], now: Timestamp = .now()) -> Probe {
        switch step(key, now: now) {
        case .done(let entry?) where entry.modelID == modelID && entry.canonicalInput == canonicalInput:
            return .hit(entry)
        case .done:
            return .miss
        case .read:
            return .onDisk
        }
    }

    /// Reads `key`'s manifest into memory on the thread pool, when the index has one not decoded. Returns the entry
    /// (nil: none, expired, unreadable).
    @discardableResult
    public func read(_ key: RequestKey, now: Timestamp = .now()) async -> CachedResult? {
        guard let files else { return nil }
        switch step(key, now: now) {
        case .done(let entry):
            return entry
        case .read(let generation):
            guard let outcome = try? await onThreadPool({ () throws(StoreError) in files.read(key) }) else {
                return nil
            }
            return install(outcome, for: key, generation: generation, now: now.secondsSinceEpoch)
        }
    }

    /// The fresh entry for `key` when its model and canonical input are exactly these; nil otherwise. In durable mode
    /// an entry not decoded in memory is read from its manifest here, synchronously: for callers off the event loop
    /// (start-up, tests, tools). An event loop uses `probe` and has `read` run first.
    public func lookup(
        _ key: RequestKey,
        modelID: String,
        canonicalInput: [UInt8],
        now: Timestamp = .now()
    ) -> CachedResult? {
        let entry: CachedResult?
        switch step(key, now: now) {
        case .done(let found):
            entry = found
        case .read(let generation):
            guard let files else { return nil }
            entry = install(files.read(key), for: key, generation: generation, now: now.secondsSinceEpoch)
        }
        guard let entry, entry.modelID == modelID, entry.canonicalInput == canonicalInput else { return nil }
        return entry
    }

    private enum Step {
        case done(CachedResult?)
        case read(generation: UInt64)
    }

    /// The entry in memory, or the generation of the slot whose manifest must be read; drops an expired slot.
    private func step(_ key: RequestKey, now: Timestamp) -> Step {
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
        return step
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

    // MARK: - Internals

    /// Puts a manifest read from disk into its slot, unless a newer store replaced the slot meanwhile (then the
    /// slot's own entry is the answer). Returns the entry to compare, nil for a miss.
    func install(
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
            var order = CircularBuffer<(RequestKey, UInt64)>()
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

    /// Runs blocking work on the thread pool and brings its typed error back.
    func onThreadPool<T: Sendable>(
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
