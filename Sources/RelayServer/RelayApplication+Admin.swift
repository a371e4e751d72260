import RelayCore
import RelayHTTP
import RelayJobs
import RelayStore

/// What the admin API reaches beyond the HTTP layer: purges, and the request log's statistics.
extension RelayApplication {
    /// The admin API's purge: results by key or model; for a digest, the blob and every result pointing at it.
    static func purge(
        _ target: AdminOperations.PurgeTarget,
        results: ResultIndex,
        store: BlobStore
    ) async -> Result<JSONValue, FalError> {
        switch target {
        case .key(let digest):
            let removed = results.remove(RequestKey(digest: digest))
            return .success(["purged": ["results": .number(removed ? 1 : 0)]])
        case .model(let id):
            do {
                let removed = try await results.remove(modelID: id)
                return .success(["purged": ["results": .number(Double(removed))]])
            } catch {
                return .failure(.internalError("purge failed: \(error)"))
            }
        case .digest(let digest):
            let removed = results.removeResults(referencing: [digest])
            do {
                let blob = try await store.remove(digest)
                return .success(["purged": ["results": .number(Double(removed)), "blobs": .number(blob ? 1 : 0)]])
            } catch {
                return .failure(.internalError("purge failed: \(error)"))
            }
        }
    }

    /// Group commits of the request log and what durability adds to submissions and to a job's end.
    static func requestLogStatistics(_ jobs: JobTable) -> JSONValue {
        guard let log = jobs.log else { return .null }
        let (commits, records, failures) = log.statistics
        let (submissions, ends) = jobs.commitLatency
        func milliseconds(_ duration: Duration) -> JSONValue {
            .number(Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15)
        }
        return [
            "commits": .number(Double(commits)),
            "records": .number(Double(records)),
            "failures": .number(Double(failures)),
            "submit_commits": .number(Double(submissions.count)),
            "submit_commit_ms_mean": milliseconds(submissions.mean),
            "submit_commit_ms_max": milliseconds(submissions.maximum),
            "end_commits": .number(Double(ends.count)),
            "end_commit_ms_mean": milliseconds(ends.mean),
            "end_commit_ms_max": milliseconds(ends.maximum),
        ]
    }
}
