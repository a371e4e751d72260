import NIOPosix
import RelayCore
import Synchronization

// The write-behind queue: stores return at once, writers on the thread pool put manifests on disk.
extension ResultIndex {
    /// Manifests written per thread-pool work item: one journal commit and one fsync per directory for all of them.
    private static let writeBatchSize = 64

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

    /// Queues `operation` for `key`, replacing a queued one; true when a writer must be started.
    func enqueue(_ operation: Operation, for key: RequestKey, in state: inout State) -> Bool {
        guard files != nil else { return false }
        if state.pending.updateValue(operation, forKey: key) == nil && !state.busy.contains(key) {
            state.queue.append(key)
        }
        guard state.paused == 0, state.writers < writers else { return false }
        state.writers += 1
        return true
    }

    /// After a pause: how many writers to start for what queued up meanwhile.
    func resumeWriters(_ state: inout State) -> Int {
        guard state.paused == 0 else { return 0 }
        let wanted = min(writers, state.queue.count) - state.writers
        guard wanted > 0 else { return 0 }
        state.writers += wanted
        return wanted
    }

    func startWriting() {
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
}
