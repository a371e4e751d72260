public import NIOCore
import RelayCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Raw blob files kept open for `sendfile`, one bounded LRU cache per event loop, so that a hot file is sent with no
/// thread-pool trip and no `open`/`fstat`/`close`.
///
/// Per loop because a `NIOFileHandle` allows one user at a time (a second thread gets `EBUSY`) and NIO's sendfile of a
/// `FileRegion` is such a use: a handle is only ever written from the loop whose cache holds it, where writes are
/// serialized and every `FileRegion` carries its own offset, so any number of responses there share one descriptor.
/// Each loop's cache is found through a fixed table of slots filled once, without a lock; past `slotCount` loops
/// (never the case in a server) files are not cached: opened per response and closed after it, as before.
///
/// A cached file is closed only once it has left the cache (evicted past `capacityPerLoop`, replaced, or found
/// unlinked) and no `OpenBlobFileLease` of it is still out: a `FileRegion` in flight keeps its descriptor.
final class OpenBlobFiles: @unchecked Sendable {
    // @unchecked: `slots` is a fixed table of atomics, written once per slot by `storeIfNil`.

    /// More than any event loop group a relay runs.
    static let slotCount = 64

    /// Files each loop keeps open once no lease holds them; 0 keeps none.
    let capacityPerLoop: Int
    /// How many files were opened and closed, across loops: their difference is how many are open now.
    let counts = Counts()
    private let slots: UnsafeMutablePointer<AtomicLazyReference<LoopBlobFiles>>

    init(capacityPerLoop: Int) {
        self.capacityPerLoop = max(0, capacityPerLoop)
        slots = .allocate(capacity: Self.slotCount)
        for index in 0..<Self.slotCount {
            (slots + index).initialize(to: AtomicLazyReference())
        }
    }

    deinit {
        // The loops' caches go with their entries, which close their files (see `OpenBlobFile.deinit`).
        slots.deinitialize(count: Self.slotCount)
        slots.deallocate()
    }

    /// `eventLoop`'s cache, made on first use; nil when every slot belongs to another loop. Call it on `eventLoop`.
    func files(on eventLoop: any EventLoop) -> LoopBlobFiles? {
        eventLoop.assertInEventLoop()
        // Objects are 16-byte aligned: the address without its low bits spreads loops over the slots well enough.
        let start = Int(truncatingIfNeeded: UInt(bitPattern: ObjectIdentifier(eventLoop)) >> 4)
        for probe in 0..<Self.slotCount {
            let slot = slots + (start &+ probe) % Self.slotCount
            let files = slot.pointee.load() ?? slot.pointee.storeIfNil(LoopBlobFiles(eventLoop: eventLoop, owner: self))
            // The cache holds its loop, so no later loop can reuse the address and be taken for it.
            if files.eventLoop === eventLoop { return files }
        }
        return nil
    }

    /// A file opened for one response only (no slot for its loop): closed when the lease comes back.
    func uncached(
        _ handle: NIOFileHandle,
        digest: Digest128,
        size: Int,
        eventLoop: any EventLoop
    ) -> OpenBlobFileLease {
        let file = OpenBlobFile(digest: digest, handle: handle, size: size, generation: 0, counts: counts)
        let lease = file.lease(on: eventLoop)
        file.retire()
        return lease
    }

    /// Open and close counts, for tests and metrics.
    final class Counts: Sendable {
        let opened = Atomic<Int>(0)
        let closed = Atomic<Int>(0)

        /// Files open now: in a cache, or out of one but still leased.
        var open: Int { opened.load(ordering: .relaxed) - closed.load(ordering: .relaxed) }
    }
}

/// One event loop's open raw blob files, keyed by digest. Used only on that loop, so it needs no lock.
final class LoopBlobFiles {
    let eventLoop: any EventLoop
    private let capacity: Int
    private let counts: OpenBlobFiles.Counts
    private var files: [Digest128: OpenBlobFile] = [:]
    /// Advances on every use; the entry with the smallest `lastUse` is the least recently used.
    private var clock: UInt64 = 0

    init(eventLoop: any EventLoop, owner: OpenBlobFiles) {
        self.eventLoop = eventLoop
        self.capacity = owner.capacityPerLoop
        self.counts = owner.counts
    }

    /// How many files the cache holds (leased or not; retired files out of it are not counted).
    var count: Int { files.count }

    /// The cached file of `digest` as it is: no generation check, no use recorded. For tests.
    func peek(_ digest: Digest128) -> OpenBlobFile? { files[digest] }

    /// The open file of `digest`, when this loop has it and it is still linked; nil otherwise.
    ///
    /// `removalGeneration` is the store's now: while it equals the one the entry remembers, no blob was removed since
    /// the file was last known linked, and this costs no system call. When it moved, one `fstat` says whether this
    /// blob was among the removed (`st_nlink == 0`, or a size it never had): then the entry leaves the cache.
    func file(_ digest: Digest128, removalGeneration: Int) -> OpenBlobFile? {
        eventLoop.assertInEventLoop()
        guard let file = files[digest] else { return nil }
        if file.generation != removalGeneration {
            guard file.isStillLinked() else {
                files[digest] = nil
                file.retire()
                return nil
            }
            file.generation = removalGeneration
        }
        clock &+= 1
        file.lastUse = clock
        return file
    }

    /// Takes a file just opened into the cache, and its first lease.
    ///
    /// `generation` is the store's removal generation read before the file was opened, so a removal racing with the
    /// open is seen on the next use. A file of the digest already cached (a concurrent first request) is replaced: the
    /// new one is at least as current. Past `capacity`, the least recently used file leaves the cache, and closes
    /// once it is not leased.
    func adopt(_ handle: NIOFileHandle, digest: Digest128, size: Int, generation: Int) -> OpenBlobFileLease {
        eventLoop.assertInEventLoop()
        let file = OpenBlobFile(digest: digest, handle: handle, size: size, generation: generation, counts: counts)
        let lease = file.lease(on: eventLoop)
        guard capacity > 0 else {
            file.retire()
            return lease
        }
        clock &+= 1
        file.lastUse = clock
        files.updateValue(file, forKey: digest)?.retire()
        while files.count > capacity {
            // O(capacity), only when a new file comes in; a hit costs no list upkeep.
            guard let oldest = files.values.min(by: { $0.lastUse < $1.lastUse }) else { break }
            files[oldest.digest] = nil
            oldest.retire()
        }
        return lease
    }
}

@available(*, unavailable)
extension LoopBlobFiles: Sendable {}

/// One raw blob file open on one event loop, shared by every `.fileRegion` of the blob there.
final class OpenBlobFile {
    let digest: Digest128
    let handle: NIOFileHandle
    /// From `fstat` when opened.
    let size: Int
    /// The store's removal generation at which the file was last known linked.
    var generation: Int
    var lastUse: UInt64 = 0
    /// Leases out: `FileRegion`s written or about to be.
    private(set) var leases = 0
    /// Out of the cache: closes when `leases` reaches 0.
    private(set) var isRetired = false
    private let counts: OpenBlobFiles.Counts

    init(digest: Digest128, handle: NIOFileHandle, size: Int, generation: Int, counts: OpenBlobFiles.Counts) {
        self.digest = digest
        self.handle = handle
        self.size = size
        self.generation = generation
        self.counts = counts
    }

    /// Only when the cache itself goes (a `MediaFileSource` dropped): nothing can use the file any more.
    deinit {
        if handle.isOpen { close() }
    }

    func lease(on eventLoop: any EventLoop) -> OpenBlobFileLease {
        leases += 1
        return OpenBlobFileLease(file: NIOLoopBound(self, eventLoop: eventLoop), fileHandle: handle)
    }

    func release() {
        assert(leases > 0, "a MediaBody was given up twice")
        leases -= 1
        if leases == 0 && isRetired { close() }
    }

    func retire() {
        isRetired = true
        if leases == 0 { close() }
    }

    /// Whether the file still has a name (the blob was not removed) and its size. Errors count as removed: the entry is
    /// dropped and the next request opens the path afresh.
    func isStillLinked() -> Bool {
        var info = stat()
        let found = try? handle.withUnsafeFileDescriptor { descriptor in fstat(descriptor, &info) == 0 }
        return found == true && info.st_nlink > 0 && Int(info.st_size) == size
    }

    private func close() {
        // Not leased, so not in a write: close cannot meet EBUSY here.
        _ = try? handle.close()
        counts.closed.add(1, ordering: .relaxed)
    }
}

@available(*, unavailable)
extension OpenBlobFile: Sendable {}

/// A `.fileRegion` body's hold on a cached open blob file (see `MediaBody`): the file stays open until every lease is
/// back. Given back by `MediaBody.write(on:_:)` once the write is done, or by `MediaBody.discard()`.
public struct OpenBlobFileLease: Sendable {
    private let file: NIOLoopBound<OpenBlobFile>
    /// The open file, shared with every other lease of the blob on this loop. Only that loop may use it (a `FileRegion`
    /// written to a channel of the loop); never close it.
    public let fileHandle: NIOFileHandle

    init(file: NIOLoopBound<OpenBlobFile>, fileHandle: NIOFileHandle) {
        self.file = file
        self.fileHandle = fileHandle
    }

    /// The loop whose cache the file is in: the only one that may write it.
    public var eventLoop: any EventLoop { file.eventLoop }

    /// Gives the lease back, on its loop (at once when called there).
    func release() {
        if file.eventLoop.inEventLoop {
            file.value.release()
        } else {
            let file = self.file
            file.eventLoop.execute { file.value.release() }
        }
    }
}
