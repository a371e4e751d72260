import RelayCore
import RelayStore
import Synchronization

/// The multipart uploads in progress, by upload id: each a `MultipartUpload` state machine, changed under one lock.
/// In memory only: part files live in `tmp/`, which a restart clears, so an upload interrupted by a restart is
/// unknown afterwards (404) and the client starts again.
final class MultipartUploadTable: Sendable {
    private struct State {
        var uploads: [Digest128: MultipartUpload] = [:]
        /// A sweep is scheduled (see `UploadService.armMultipartSweep`).
        var sweepArmed = false
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.uploads.count } }

    func insert(_ upload: MultipartUpload) {
        state.withLock { $0.uploads[upload.id] = upload }
    }

    func upload(_ id: Digest128) -> MultipartUpload? {
        state.withLock { $0.uploads[id] }
    }

    /// Runs `body` on the upload `id`; nil for an unknown id.
    func update<T>(_ id: Digest128, _ body: (inout MultipartUpload) -> T) -> T? {
        state.withLock { state in
            guard var upload = state.uploads[id] else { return nil }
            let result = body(&upload)
            state.uploads[id] = upload
            return result
        }
    }

    /// Removes every upload past its deadline; returns their part files, and whether uploads remain (so whether the
    /// next sweep is needed: when none remain the sweep is disarmed under the same lock).
    func sweep(now: Timestamp) -> (paths: [String], remaining: Int) {
        state.withLock { state in
            var paths: [String] = []
            for (id, upload) in state.uploads where upload.isAbandoned(now: now) {
                paths += upload.partPaths
                state.uploads[id] = nil
            }
            if state.uploads.isEmpty { state.sweepArmed = false }
            return (paths, state.uploads.count)
        }
    }

    /// True when the caller must schedule a sweep (none was armed).
    func armSweep() -> Bool {
        state.withLock { state in
            guard !state.sweepArmed else { return false }
            state.sweepArmed = true
            return true
        }
    }

    /// A scheduled sweep could not run (the loop is shutting down): the next upload arms one again.
    func disarmSweep() {
        state.withLock { $0.sweepArmed = false }
    }
}

extension MultipartUploadTable {
    static let unknown = FalError.notFound(
        "Unknown multipart upload (it was completed long ago, abandoned, or never made)"
    )
}
