/// Which origin log lines are new, so that each reaches the job once and in order.
///
/// Polls return the cumulative list (PROTOCOL.md §3.2); a status stream may send only the new lines of each event
/// (fal's JS client accumulates them) or the whole list again. A relay that falls back from the stream to polling
/// sees both, so the cursor remembers every line it passed on.
struct FalOriginLogCursor: Sendable {
    private var seen: [FalOriginStatus.Log] = []

    init() {}

    /// Lines passed on so far.
    var count: Int { seen.count }

    /// New lines of a poll: the list is cumulative, so everything past what was already passed on.
    mutating func newLines(cumulative logs: [FalOriginStatus.Log]) -> ArraySlice<FalOriginStatus.Log> {
        guard logs.count > seen.count else { return [] }
        let fresh = logs[seen.count...]
        seen.append(contentsOf: fresh)
        return fresh
    }

    /// New lines of a stream event, cumulative or incremental: a list that starts with every line already seen is
    /// cumulative; otherwise it is incremental, and lines it repeats from the end of what was seen are skipped.
    mutating func newLines(streamed logs: [FalOriginStatus.Log]) -> ArraySlice<FalOriginStatus.Log> {
        if !seen.isEmpty, logs.count >= seen.count, logs[..<seen.count].elementsEqual(seen) {
            return newLines(cumulative: logs)
        }
        var overlap = min(seen.count, logs.count)
        while overlap > 0, !seen[(seen.count - overlap)...].elementsEqual(logs[..<overlap]) {
            overlap -= 1
        }
        let fresh = logs[overlap...]
        seen.append(contentsOf: fresh)
        return fresh
    }
}
