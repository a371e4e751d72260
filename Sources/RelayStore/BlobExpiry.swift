public import RelayCore
import Synchronization

/// Keeps the blob store within its byte budget and free of garbage (DESIGN.md "Storage": TTL, LRU byte budget with
/// watermarks, unreferenced blobs collected). Run `run(every:on:)` as a service.
///
/// Each sweep: expires results past their TTL; scans `blobs/`; drops results whose blobs are gone; deletes blobs no
/// result references once idle for the grace period; and above the high watermark evicts referenced blobs least
/// recently used first down to the low watermark, removing the results that point at them *before* their files
/// (a result must never hand out a dead URL). See `BlobExpiryPlan` for the rules.
///
/// "Last used" is the later of a blob's file mtime (when it was stored) and the last `touch(_:)`: call `touch` when
/// serving a blob and after every `BlobStore.put` (a put of bytes already stored does not change the file's mtime,
/// and its new result is not stored yet). Access times live in memory only; after a restart they start from mtimes.
public final class BlobExpiry: Sendable {
    /// The budget and policy.
    public struct Configuration: Sendable, Hashable {
        public var budget: BlobExpiryPlan.Budget
        /// Remove results that reference a blob that is not on disk (deleted by hand, lost in a crash). A result
        /// pointing at another host's `/files/<hex>.` URL would be removed too: turn this off if results may keep
        /// foreign URLs of that shape.
        public var removeResultsWithMissingBlobs: Bool

        public init(budget: BlobExpiryPlan.Budget = .init(), removeResultsWithMissingBlobs: Bool = true) {
            self.budget = budget
            self.removeResultsWithMissingBlobs = removeResultsWithMissingBlobs
        }

        /// `--cache-max-bytes` with the default watermarks (95 % / 85 %) and a 10-minute grace period.
        public init(maxBytes: Int?) {
            self.init(budget: .init(maxBytes: maxBytes))
        }
    }

    /// What one sweep did.
    public struct SweepReport: Sendable, Hashable {
        public var blobs = 0
        public var bytesBefore = 0
        public var bytesAfter = 0
        public var collected = 0
        public var collectedBytes = 0
        public var evicted = 0
        public var evictedBytes = 0
        /// Results dropped because their TTL passed.
        public var resultsExpired = 0
        /// Results dropped because a blob they reference was evicted.
        public var resultsRemovedWithBlobs = 0
        /// Results dropped because a blob they reference is not on disk.
        public var resultsWithMissingBlobs = 0
        /// Blobs that could not be removed (the first error is in `error`).
        public var error: StoreError?
        /// Nothing was done: the result index has not finished `load()`, so every blob would look unreferenced.
        public var waitedForResults = false
        public var duration: Duration = .zero
    }

    public let store: BlobStore
    public let results: ResultIndex
    public let configuration: Configuration

    private struct State {
        /// Last `touch` per digest, seconds since 1970.
        var touched: [Digest128: Double] = [:]
        var bytes = 0
        var evictions = 0
        var collected = 0
        /// Blobs to delete at a time (seconds since 1970), as a request's media lifetime asked.
        var deadlines: [Digest128: Double] = [:]
    }

    private let state = Mutex(State())

    /// Digests kept although no result references them (finished uploads: `UploadAliases.pinnedDigests`).
    private let pinned: @Sendable () -> Set<Digest128>

    public init(
        store: BlobStore,
        results: ResultIndex,
        configuration: Configuration,
        pinned: @escaping @Sendable () -> Set<Digest128> = { [] }
    ) {
        self.store = store
        self.results = results
        self.configuration = configuration
        self.pinned = pinned
    }

    /// Marks the blob used now. Cheap (a lock and a dictionary write): call it on every file served and after each
    /// `put`.
    public func touch(_ digest: Digest128, now: Timestamp = .now()) {
        let seconds = now.secondsSinceEpoch
        state.withLock { state in
            if state.touched[digest].map({ $0 < seconds }) ?? true { state.touched[digest] = seconds }
        }
    }

    /// Deletes these blobs at `deadline` (a request's `X-Fal-Object-Lifecycle-Preference`): the first sweep after it
    /// removes each one no result points at any more, without the grace period, uploads' pins or not. A later deadline
    /// for the same blob wins. In memory only: after a restart such a blob goes as any unreferenced one does (its
    /// result's TTL ended at the same time).
    public func delete(_ digests: some Sequence<Digest128>, at deadline: Timestamp) {
        state.withLock { state in
            for digest in digests {
                state.deadlines[digest] = max(state.deadlines[digest] ?? 0, deadline.secondsSinceEpoch)
            }
        }
    }

    /// Bytes the blobs used on disk after the last sweep (publish as the `relay_store_bytes` gauge).
    public var bytes: Int { state.withLock { $0.bytes } }
    /// Blobs evicted for the byte budget since start (`relay_store_evictions_total`).
    public var evictions: Int { state.withLock { $0.evictions } }
    /// Unreferenced blobs collected since start.
    public var collected: Int { state.withLock { $0.collected } }

    /// One sweep. Blocking work runs on the store's thread pool. Run one sweep at a time.
    ///
    /// - Throws: when the scan of `blobs/` fails. A blob that cannot be removed does not throw: the report's
    ///   `error` says so and the next sweep tries again.
    @discardableResult
    public func sweep(now: Timestamp = .now()) async throws(StoreError) -> SweepReport {
        let clock = ContinuousClock()
        let started = clock.now
        var report = SweepReport()
        guard results.isLoaded else {
            report.waitedForResults = true
            return report
        }
        report.resultsExpired = results.sweep(now: now)

        // Results stored before the scan began reference blobs put before it began: the scan sees those.
        let scanStarted = Timestamp.now()
        let entries = try await store.scan()
        report.blobs = entries.count

        var present: Set<Digest128> = []
        present.reserveCapacity(entries.count)
        for entry in entries { present.insert(entry.digest) }
        if configuration.removeResultsWithMissingBlobs {
            let missing = results.referencedDigests(notIn: present)
            report.resultsWithMissingBlobs = results.removeResults(referencing: missing, storedBefore: scanStarted)
        }

        let unreferenced = results.unreferenced(among: entries.map(\.digest)).subtracting(pinned())
        let blobs = state.withLock { state -> [BlobExpiryPlan.Blob] in
            // Forget touches of blobs that are gone (but not of one put since the scan began).
            state.touched = state.touched.filter {
                present.contains($0.key) || $0.value >= scanStarted.secondsSinceEpoch
            }
            return entries.map { entry in
                BlobExpiryPlan.Blob(
                    digest: entry.digest,
                    storedSize: entry.storedSize,
                    lastUsed: max(Double(entry.modified), state.touched[entry.digest] ?? 0),
                    referenced: !unreferenced.contains(entry.digest)
                )
            }
        }
        let plan = BlobExpiryPlan(blobs: blobs, budget: configuration.budget, now: now.secondsSinceEpoch)
        report.bytesBefore = plan.bytesBefore

        // Look again right before deleting: a result may have been stored, or the blob served, since the scan.
        let idleBefore = now.secondsSinceEpoch - configuration.budget.gracePeriodSeconds
        let stillUnreferenced = results.unreferenced(among: plan.garbage).subtracting(pinned())
        let due = state.withLock { state in
            state.deadlines.filter { $0.value <= now.secondsSinceEpoch && present.contains($0.key) }.map(\.key)
        }
        let dueUnreferenced = results.unreferenced(among: due)
        var garbage = state.withLock { state in
            plan.garbage.filter { stillUnreferenced.contains($0) && (state.touched[$0] ?? 0) < idleBefore }
        }
        let planned = Set(plan.evicted).union(garbage)
        garbage += due.filter { dueUnreferenced.contains($0) && !planned.contains($0) }

        // Results first, then files: between the two a lookup misses, it never gets a URL that 404s.
        report.resultsRemovedWithBlobs = results.removeResults(referencing: Set(plan.evicted))

        let sizes = Dictionary(entries.map { ($0.digest, $0.storedSize) }, uniquingKeysWith: { first, _ in first })
        var removed: Set<Digest128> = []
        do throws(StoreError) {
            removed = Set(try await store.remove(garbage + plan.evicted))
        } catch {
            report.error = error
            // Which ones went is unknown: count none as removed; the next sweep's scan sets it right.
        }
        for digest in garbage where removed.contains(digest) {
            report.collected += 1
            report.collectedBytes += sizes[digest] ?? 0
        }
        for digest in plan.evicted where removed.contains(digest) {
            report.evicted += 1
            report.evictedBytes += sizes[digest] ?? 0
        }
        report.bytesAfter = plan.bytesBefore - report.collectedBytes - report.evictedBytes

        state.withLock { state in
            state.bytes = report.bytesAfter
            state.evictions += report.evicted
            state.collected += report.collected
            for digest in removed { state.touched[digest] = nil }
            // A deadline is kept until its blob is gone (one a result still points at is tried again next sweep); a
            // blob put after the scan began is not in `present` yet, and keeps its deadline too.
            state.deadlines = state.deadlines.filter {
                !removed.contains($0.key) && (present.contains($0.key) || $0.value > now.secondsSinceEpoch)
            }
        }
        report.duration = clock.now - started
        return report
    }

    /// Sweeps now and then every `interval` of `clock` until the task is cancelled (wrap it in a `Service` and cancel
    /// it on graceful shutdown). `onSweep` sees each outcome, for logging and metrics.
    public func run<C: Clock>(
        every interval: C.Duration,
        on clock: C = ContinuousClock(),
        onSweep: @Sendable (Result<SweepReport, StoreError>) -> Void = { _ in }
    ) async {
        while !Task.isCancelled {
            do throws(StoreError) {
                onSweep(.success(try await sweep()))
            } catch {
                if error == .cancelled { return }
                onSweep(.failure(error))
            }
            do {
                try await clock.sleep(for: interval)
            } catch {
                return
            }
        }
    }
}
