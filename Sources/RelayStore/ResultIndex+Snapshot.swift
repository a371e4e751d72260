import RelayCore
import Synchronization

// The snapshot that lets the next start scan only the shards changed since.
extension ResultIndex {
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
}
