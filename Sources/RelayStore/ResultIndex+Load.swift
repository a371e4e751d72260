public import RelayCore
import Synchronization

// Start-up: rebuilding the index from the snapshot and a scan of the shards changed since.
extension ResultIndex {
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

    private static let scanParallelism = 4

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
}
