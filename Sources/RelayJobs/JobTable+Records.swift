import RelayCore
import RelayStore

/// What the job table writes to the request log about a request and a job's end.
extension JobTable {
    static func creation(_ request: RelayRequest) -> RequestLogRecord.Creation {
        RequestLogRecord.Creation(
            id: request.id,
            jobID: request.job.id,
            endpoint: request.endpoint.description,
            key: request.job.key,
            ownerKeyID: request.ownerKeyID,
            createdAt: request.createdAt,
            cacheOutcome: request.cacheOutcome.rawValue,
            cacheStatus: request.cacheStatus,
            input: request.input,
            tags: PlatformHeaders.text(of: request.tags)
        )
    }

    static func logged(_ outcome: JobOutcome) -> RequestLogRecord.Outcome {
        switch outcome {
        case .success(let result, let seconds): .success(result: result, inferenceSeconds: seconds)
        case .failure(let error): .failure(error)
        case .cancelled: .cancelled
        }
    }
}
