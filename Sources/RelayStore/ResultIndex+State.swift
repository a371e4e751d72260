import NIOCore
import RelayCore

// What the index keeps under its lock: the entries, and the write-behind queue's bookkeeping.
extension ResultIndex {
    /// What the index holds per key.
    struct Slot {
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
    struct Entries {
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

    enum Operation {
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

    struct State {
        var entries = Entries()
        var generation: UInt64 = 0
        /// Keys whose entries were decoded, oldest first, for `decodedLimit` (stale pairs are skipped).
        var decodedOrder = CircularBuffer<(RequestKey, UInt64)>()
        var loaded = false

        /// The latest wanted disk state per key; a key is in `queue` exactly when it is here and not `busy`.
        var pending: [RequestKey: Operation] = [:]
        var queue = CircularBuffer<RequestKey>()
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

}
