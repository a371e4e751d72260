public import RelayCore

/// The request history: the retained requests as the Platform API lists them, and their payloads deleted on request.
extension JobTable {
    /// Retained requests `keyID` may list (nil: every request, for an admin), oldest first: a keyed caller sees the
    /// requests it submitted, an anonymous one the anonymous requests. A snapshot: copying the values is all the work
    /// done under the table's lock.
    public func history(keyID: String??) -> [RelayRequest] {
        let (live, finished) = state.withLock { state in state.requests.snapshot(owner: keyID) }
        var found = live + finished.map { $0.request.request(id: $0.id) }
        found.sort { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        return found
    }

    /// What `deletePayloads` did.
    public enum PayloadDeletion: Sendable {
        /// Deleted now: the request as it was before (its result names the media to delete).
        case deleted(RelayRequest)
        case alreadyDeleted
        /// Its job has not ended: what it will make cannot be deleted yet.
        case inProgress
        case notFound
    }

    /// Forgets a request's input and output (its result is no longer served by its id), and returns once that is
    /// durable. `keyID` as for `history`.
    public func deletePayloads(_ id: String, keyID: String??, at now: Timestamp = .now()) async -> PayloadDeletion {
        let outcome = state.withLock { state -> PayloadDeletion in
            guard var request = state.requests[id] else { return .notFound }
            if let keyID, request.ownerKeyID != keyID { return .notFound }
            if request.payloadsDeleted { return .alreadyDeleted }
            guard request.phase.isCompleted else { return .inProgress }
            let before = request
            request.input = nil
            request.payloadsDeleted = true
            state.requests[id] = request
            // Answers memoised for finished requests are stale now.
            removalCount.add(1, ordering: .releasing)
            return .deleted(before)
        }
        guard case .deleted = outcome, let log else { return outcome }
        await withCheckedContinuation { continuation in
            log.append([.payloadsDeleted(requestID: id, at: now)]) { _ in continuation.resume() }
        }
        return outcome
    }
}
