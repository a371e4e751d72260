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

/// Requests by id that survive a crash (DESIGN.md "Storage": `data/requests/`): an append-only log of checksummed
/// records (`RequestLogRecord`) in numbered segment files.
///
/// - **Group commit.** `append` never blocks: records queue in memory and one writer on the thread pool takes
///   everything queued, writes it with one `write`, `fsync`s once and then calls every batch's completion. Under load
///   one fsync serves many requests; a record is durable exactly when its completion says so.
/// - **Torn tails.** A crash mid-append leaves a partial frame at the end of the active segment; `load` stops reading
///   that segment there. A whole frame whose checksum fails is skipped and reading goes on.
/// - **Rotation and compaction.** The active segment is sealed past `segmentBytes` or `segmentSeconds`; `sweep`
///   unlinks sealed segments whose every record is past retention. `load` rewrites what is still live into one new
///   segment (tmp → fsync → rename → fsync(dir)) before it unlinks the old ones, so a crash during compaction leaves
///   both (records are idempotent) or the new one.
public final class RequestLog: Sendable {
    /// A request found at load, with how it ended.
    public struct Restored: Sendable, Hashable {
        public var creation: RequestLogRecord.Creation
        /// How its job ended; for a request in flight at the crash, the `interrupted` outcome `load` was given.
        public var outcome: RequestLogRecord.Outcome
        /// The request itself was cancelled (its job may have run on for others).
        public var cancelled: Bool
        /// It was in flight when the process died.
        public var interrupted: Bool
        /// For a request in flight at the crash whose job an upstream had accepted under its own id: where to follow
        /// that job again. Its job then has no end in the log yet (`outcome` is only the fallback `interrupted`):
        /// whoever restores it records the end, by following it or by giving up.
        public var attachment: RequestLogRecord.Attachment?
        /// When its job's end was recorded (nil while in flight).
        public var endedAt: Timestamp?
        /// Its owner had its input and output deleted (`creation.input` is nil then).
        public var payloadsDeleted = false

        public init(
            creation: RequestLogRecord.Creation,
            outcome: RequestLogRecord.Outcome,
            cancelled: Bool,
            interrupted: Bool,
            attachment: RequestLogRecord.Attachment? = nil,
            endedAt: Timestamp? = nil,
            payloadsDeleted: Bool = false
        ) {
            self.creation = creation
            self.outcome = outcome
            self.cancelled = cancelled
            self.interrupted = interrupted
            self.attachment = attachment
            self.endedAt = endedAt
            self.payloadsDeleted = payloadsDeleted
        }
    }

    /// What `load()` found.
    public struct LoadReport: Sendable, Hashable {
        public var segments = 0
        public var records = 0
        /// Whole frames skipped for a bad checksum or contents.
        public var corruptRecords = 0
        /// Segments that ended in a partial frame (a crash during an append), and the bytes ignored there.
        public var tornSegments = 0
        public var tornBytes = 0
        /// Requests restored (within retention), of which `interrupted` were in flight at the crash.
        public var restored = 0
        public var interrupted = 0
        /// Of the interrupted requests, those whose job can be followed again at its upstream (`Restored.attachment`).
        public var reattachable = 0
        public var expired = 0
        public var duration: Duration = .zero
    }

    /// `data/requests`.
    public let directory: String
    public let retentionSeconds: Double
    public let segmentBytes: Int
    public let segmentSeconds: Double

    private let threadPool: NIOThreadPool
    private let state = Mutex(State())
    /// Touched only by the one running writer (and by `load` before any writer exists).
    private let active = Mutex(ActiveSegment())

    /// A sealed segment can go when its newest record is this much older than the oldest request still wanted:
    /// a job's end may be recorded a moment before a request that coalesced onto it while it was being written.
    static let sweepMarginSeconds = 60.0

    public init(
        dataDirectory: String,
        threadPool: NIOThreadPool,
        retentionSeconds: Double,
        segmentBytes: Int = 8 << 20,
        segmentSeconds: Double? = nil
    ) {
        self.directory = dataDirectory + "/requests"
        self.threadPool = threadPool
        self.retentionSeconds = retentionSeconds
        self.segmentBytes = max(4096, segmentBytes)
        self.segmentSeconds = segmentSeconds ?? max(60, retentionSeconds / 4)
    }

    // MARK: - Appending

    /// Queues `records` for the next group commit. `completion` runs on a pool thread once they are durable (true),
    /// or once writing them failed or the pool stopped (false): never on the caller's stack.
    public func append(_ records: [RequestLogRecord], completion: (@Sendable (Bool) -> Void)? = nil) {
        let startWriter = state.withLock { state -> Bool in
            state.pending.append(contentsOf: records)
            if let completion { state.completions.append(completion) }
            guard !state.writing else { return false }
            state.writing = true
            return true
        }
        guard startWriter else { return }
        threadPool.submit { work in
            switch work {
            case .active: self.drain()
            case .cancelled: self.abandon()
            }
        }
    }

    /// Returns once everything appended so far is durable (or failed).
    public func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            append([]) { _ in continuation.resume() }
        }
    }

    /// Group commits made, records in them, and failures since start (for metrics and the measurements in tests).
    public var statistics: (commits: Int, records: Int, failures: Int) {
        state.withLock { ($0.commits, $0.committedRecords, $0.failures) }
    }

    private func drain() {
        while true {
            let (records, completions) = state.withLock { state -> ([RequestLogRecord], [@Sendable (Bool) -> Void]) in
                if state.pending.isEmpty && state.completions.isEmpty {
                    state.writing = false
                    return ([], [])
                }
                defer {
                    state.pending.removeAll(keepingCapacity: true)
                    state.completions.removeAll(keepingCapacity: true)
                }
                return (state.pending, state.completions)
            }
            guard !records.isEmpty || !completions.isEmpty else { return }
            var ok = true
            if !records.isEmpty {
                var buffer = ByteBufferAllocator().buffer(capacity: 256 * records.count)
                var newest = 0.0
                for record in records where record.frame(into: &buffer) {
                    newest = max(newest, record.time.secondsSinceEpoch)
                }
                do throws(StoreError) {
                    try commit(buffer, newest: newest)
                } catch {
                    ok = false
                }
                state.withLock { state in
                    if ok {
                        state.commits += 1
                        state.committedRecords += records.count
                    } else {
                        state.failures += 1
                    }
                }
            }
            for completion in completions { completion(ok) }
        }
    }

    /// Writes one batch to the active segment (opening one first if needed), fsyncs, and seals the segment when it
    /// is full or old. On a failed write the segment is sealed at once: a later batch must not follow a torn frame.
    private func commit(_ buffer: ByteBuffer, newest: Double) throws(StoreError) {
        try active.withLock { (segment: inout ActiveSegment) throws(StoreError) in
            if segment.descriptor == nil { try open(&segment) }
            guard let fd = segment.descriptor else { throw .shutdown }
            let path = segmentPath(segment.sequence)
            do throws(StoreError) {
                try BlobFileIO.writeAll(fd, buffer, path: path)
                try BlobFileIO.sync(fd, path: path)
            } catch {
                seal(&segment)
                throw error
            }
            segment.bytes += buffer.readableBytes
            segment.newest = max(segment.newest, newest)
            if segment.bytes >= segmentBytes || Timestamp.now().secondsSinceEpoch - segment.openedAt >= segmentSeconds {
                seal(&segment)
            }
        }
    }

    private func open(_ segment: inout ActiveSegment) throws(StoreError) {
        try BlobFileIO.makeDirectories(directory)
        var path = segmentPath(segment.sequence)
        var descriptor = try BlobFileIO.createExclusive(path)
        while descriptor == nil {
            // A file under our number (never expected: load numbers past every segment): take the next number.
            segment.sequence += 1
            path = segmentPath(segment.sequence)
            descriptor = try BlobFileIO.createExclusive(path)
        }
        guard let fd = descriptor else { throw .io(path: path, errno: EEXIST) }
        do throws(StoreError) {
            var header = ByteBufferAllocator().buffer(capacity: 8)
            header.writeBytes(RequestLogRecord.segmentMagic)
            try BlobFileIO.writeAll(fd, header, path: path)
            try BlobFileIO.syncDirectory(directory)
        } catch {
            BlobFileIO.close(fd)
            throw error
        }
        segment.descriptor = fd
        segment.bytes = RequestLogRecord.segmentMagic.count
        segment.openedAt = Timestamp.now().secondsSinceEpoch
        segment.newest = 0
    }

    private func seal(_ segment: inout ActiveSegment) {
        if let fd = segment.descriptor {
            BlobFileIO.close(fd)
            let sealed = Sealed(sequence: segment.sequence, newest: segment.newest)
            state.withLock { $0.sealed.append(sealed) }
        }
        segment.descriptor = nil
        segment.sequence += 1
    }

    private func abandon() {
        let completions = state.withLock { state -> [@Sendable (Bool) -> Void] in
            state.failures += 1
            state.pending.removeAll()
            state.writing = false
            defer { state.completions.removeAll() }
            return state.completions
        }
        for completion in completions { completion(false) }
    }

    // MARK: - Retention

    /// Unlinks sealed segments whose newest record is older than both the retention cutoff and `oldestWanted` (the
    /// oldest request the caller still serves), less a margin. Returns how many.
    @discardableResult
    public func sweep(now: Timestamp = .now(), oldestWanted: Timestamp? = nil) async -> Int {
        var cutoff = now.secondsSinceEpoch - retentionSeconds
        if let oldestWanted { cutoff = min(cutoff, oldestWanted.secondsSinceEpoch) }
        cutoff -= Self.sweepMarginSeconds
        let doomed = state.withLock { state -> [Sealed] in
            let doomed = state.sealed.filter { $0.newest < cutoff }
            state.sealed.removeAll { $0.newest < cutoff }
            return doomed
        }
        guard !doomed.isEmpty else { return 0 }
        let paths = doomed.map { segmentPath($0.sequence) }
        let directory = self.directory
        let removed = try? await threadPool.runIfActive { () -> Int in
            var removed = 0
            for path in paths where (try? BlobFileIO.remove(path)) == true { removed += 1 }
            try? BlobFileIO.syncDirectory(directory)
            return removed
        }
        return removed ?? 0
    }

    // MARK: - Loading

    /// Reads every segment, returns the requests created within retention with how each ended (`interrupted` for
    /// those in flight at the crash), and compacts: the live requests, with `interrupted` recorded as their end, go
    /// into one new segment; then the old segments are removed. A job in flight that an upstream keeps by id
    /// (`Restored.attachment`) keeps its attachment instead of an end. Call once at start-up, before any `append`.
    public func load(
        now: Timestamp = .now(),
        interrupted: RequestLogRecord.Outcome
    ) async throws(StoreError) -> (requests: [Restored], report: LoadReport) {
        let clock = ContinuousClock()
        let started = clock.now
        let directory = self.directory
        let retention = retentionSeconds
        let result: Result<([Restored], LoadReport, Int), StoreError>
        do {
            result = try await threadPool.runIfActive { () -> Result<([Restored], LoadReport, Int), StoreError> in
                do throws(StoreError) {
                    return .success(
                        try Self.loadBlocking(
                            directory: directory,
                            now: now,
                            retention: retention,
                            interrupted: interrupted
                        )
                    )
                } catch {
                    return .failure(error)
                }
            }
        } catch {
            throw .shutdown
        }
        var (requests, report, nextSequence) = try result.get()
        active.withLock { $0.sequence = nextSequence }
        if !requests.isEmpty {
            // The compacted segment: sealed from the start, swept like any other once its requests are past retention.
            state.withLock { $0.sealed.append(Sealed(sequence: nextSequence - 1, newest: now.secondsSinceEpoch)) }
        }
        report.duration = clock.now - started
        requests.sort { $0.creation.createdAt < $1.creation.createdAt }
        return (requests, report)
    }

    private static func loadBlocking(
        directory: String,
        now: Timestamp,
        retention: Double,
        interrupted: RequestLogRecord.Outcome
    ) throws(StoreError) -> ([Restored], LoadReport, Int) {
        var report = LoadReport()
        try BlobFileIO.makeDirectories(directory)
        var segments: [(sequence: Int, name: String)] = []
        for name in try BlobFileIO.list(directory) {
            if name.hasPrefix(".tmp-") {
                _ = try? BlobFileIO.remove(directory + "/" + name)
            } else if let sequence = sequence(fromName: name) {
                segments.append((sequence, name))
            }
        }
        segments.sort { $0.sequence < $1.sequence }
        report.segments = segments.count

        var creations: [String: RequestLogRecord.Creation] = [:]
        var finished: [UInt64: (at: Timestamp, outcome: RequestLogRecord.Outcome)] = [:]
        var attachments: [UInt64: RequestLogRecord.Attachment] = [:]
        var cancelled: Set<String> = []
        var deleted: [String: Timestamp] = [:]
        for segment in segments {
            guard var buffer = try BlobFileIO.readBuffer(directory + "/" + segment.name) else { continue }
            guard buffer.readBytes(length: RequestLogRecord.segmentMagic.count) == RequestLogRecord.segmentMagic else {
                // Created but its header never reached the disk, or not ours: nothing in it to trust.
                report.tornSegments += 1
                report.tornBytes += buffer.readableBytes
                continue
            }
            reading: while true {
                switch RequestLogRecord.readFrame(&buffer) {
                case .record(let record):
                    report.records += 1
                    switch record {
                    case .created(let creation):
                        if creations[creation.id] == nil { creations[creation.id] = creation }
                    case .attached(let attachment):
                        attachments[attachment.jobID] = attachment
                    case .finished(let jobID, let at, let outcome):
                        if finished[jobID] == nil { finished[jobID] = (at, outcome) }
                    case .cancelled(let id, _):
                        cancelled.insert(id)
                    case .payloadsDeleted(let id, let at):
                        deleted[id] = at
                    }
                case .corrupt:
                    report.corruptRecords += 1
                case .torn:
                    report.tornSegments += 1
                    report.tornBytes += buffer.readableBytes
                    break reading
                case .end:
                    break reading
                }
            }
        }

        let cutoff = now.secondsSinceEpoch - retention
        var restored: [Restored] = []
        var compacted = ByteBufferAllocator().buffer(capacity: 4096)
        compacted.writeBytes(RequestLogRecord.segmentMagic)
        var jobsWritten: Set<UInt64> = []
        for var creation in creations.values.sorted(by: { $0.createdAt < $1.createdAt }) {
            guard creation.createdAt.secondsSinceEpoch >= cutoff else {
                report.expired += 1
                continue
            }
            let deletedAt = deleted[creation.id]
            // Deleted payloads leave the disk here: the compacted segment replaces every one that held them.
            if deletedAt != nil { creation.input = nil }
            let outcome = finished[creation.jobID]?.outcome
            let wasCancelled = cancelled.contains(creation.id)
            let inFlight = outcome == nil && !wasCancelled
            // A job still open at its upstream stays open in the log: its end is recorded when it is followed again.
            let attachment = outcome == nil ? attachments[creation.jobID] : nil
            if inFlight {
                report.interrupted += 1
                if attachment != nil { report.reattachable += 1 }
            }
            let ended = wasCancelled ? .cancelled : (outcome ?? interrupted)
            restored.append(
                Restored(
                    creation: creation,
                    outcome: ended,
                    cancelled: wasCancelled,
                    interrupted: inFlight,
                    attachment: inFlight ? attachment : nil,
                    endedAt: finished[creation.jobID]?.at,
                    payloadsDeleted: deletedAt != nil
                )
            )
            RequestLogRecord.created(creation).frame(into: &compacted)
            if wasCancelled {
                RequestLogRecord.cancelled(requestID: creation.id, at: now).frame(into: &compacted)
            }
            if let deletedAt {
                RequestLogRecord.payloadsDeleted(requestID: creation.id, at: deletedAt).frame(into: &compacted)
            }
            if let attachment {
                if jobsWritten.insert(creation.jobID).inserted {
                    RequestLogRecord.attached(attachment).frame(into: &compacted)
                }
            } else if jobsWritten.insert(creation.jobID).inserted,
                let record = outcome ?? (wasCancelled ? nil : interrupted)
            {
                let at = finished[creation.jobID]?.at ?? now
                RequestLogRecord.finished(jobID: creation.jobID, at: at, outcome: record).frame(into: &compacted)
            }
        }
        report.restored = restored.count

        var next = (segments.last?.sequence ?? 0) + 1
        if !restored.isEmpty {
            let temporary = try BlobFileIO.writeTemporaryFile(prefix: directory + "/.tmp-") {
                fd,
                path throws(StoreError) in
                try BlobFileIO.writeAll(fd, compacted, path: path)
            }
            do throws(StoreError) {
                try BlobFileIO.replace(directory + "/" + name(forSequence: next), with: temporary)
            } catch {
                _ = try? BlobFileIO.remove(temporary)
                throw error
            }
            try BlobFileIO.syncDirectory(directory)
            next += 1
        }
        // Only now, with the compacted segment durable, may the old ones go.
        for segment in segments {
            try BlobFileIO.remove(directory + "/" + segment.name)
        }
        if !segments.isEmpty { try BlobFileIO.syncDirectory(directory) }
        return (restored, report, next)
    }

    // MARK: - Names

    private func segmentPath(_ sequence: Int) -> String {
        directory + "/" + Self.name(forSequence: sequence)
    }

    static func name(forSequence sequence: Int) -> String {
        let hex = String(UInt64(sequence), radix: 16)
        return String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".log"
    }

    static func sequence(fromName name: String) -> Int? {
        guard name.hasSuffix(".log"), name.utf8.count == 20 else { return nil }
        return UInt64(name.dropLast(4), radix: 16).flatMap { Int(exactly: $0) }
    }

    // MARK: - State

    private struct Sealed {
        var sequence: Int
        var newest: Double
    }

    private struct ActiveSegment {
        var sequence = 1
        var descriptor: Int32?
        var bytes = 0
        var openedAt = 0.0
        var newest = 0.0
    }

    private struct State {
        var pending: [RequestLogRecord] = []
        var completions: [@Sendable (Bool) -> Void] = []
        var writing = false
        var sealed: [Sealed] = []
        var commits = 0
        var committedRecords = 0
        var failures = 0
    }
}
