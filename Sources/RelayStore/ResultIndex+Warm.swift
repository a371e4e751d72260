import RelayCore
import Synchronization

// Decoding entries ahead of their first lookup after a restart.
extension ResultIndex {
    /// Decodes up to `limit` (default: what `decodedLimit` leaves room for) not-yet-decoded entries, newest first, on
    /// the thread pool, so that lookups after a restart do not read files. Returns how many were decoded.
    @discardableResult
    public func warm(limit: Int? = nil) async -> Int {
        guard let files else { return 0 }
        let candidates = state.withLock { state -> [(RequestKey, UInt64, Double)] in
            let room = min(limit ?? .max, decodedLimit - state.entries.decodedCount)
            guard room > 0 else { return [] }
            let cold = state.entries.slots.lazy.filter { $0.value.entry == nil }.map {
                ($0.key, $0.value.generation, $0.value.storedAt)
            }
            return Array(cold.sorted { $0.2 > $1.2 }.prefix(room))
        }
        var decoded = 0
        var start = 0
        while start < candidates.count {
            let chunk = Array(candidates[start..<min(start + 256, candidates.count)])
            start += chunk.count
            let reads = try? await onThreadPool { () throws(StoreError) in
                chunk.map { ($0.0, $0.1, files.read($0.0)) }
            }
            guard let reads else { break }
            let now = Timestamp.now().secondsSinceEpoch
            for (key, generation, outcome) in reads
            where install(outcome, for: key, generation: generation, now: now) != nil {
                decoded += 1
            }
        }
        return decoded
    }
}
