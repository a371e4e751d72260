import RelayCore

/// The job table's requests by id. Live ones are kept as they are. Requests restored from the request log that had
/// finished with a result are kept compact (`FinishedRequest`: ids, times and the raw bytes of input and result,
/// about a fifth of a live request and job with their parsed JSON) and made live again when first asked for, so a
/// relay restarted on 100,000 finished requests does not hold 100,000 parsed results it may never serve again.
struct RequestTable: Sendable {
    private var live: [String: RelayRequest] = [:]
    /// Boxed: the dictionary's storage, sized to a power of two, then holds a reference per slot, not the record.
    private var finished: [String: Boxed] = [:]

    private final class Boxed: Sendable {
        let request: FinishedRequest
        init(_ request: FinishedRequest) { self.request = request }
    }

    var count: Int { live.count + finished.count }

    /// Requests kept live (tests: compact ones become live only when asked for).
    var liveCount: Int { live.count }

    /// The request, made from its compact form when it is one (not kept: `promote` keeps it).
    subscript(id: String) -> RelayRequest? {
        get { live[id] ?? finished[id]?.request.request(id: id) }
        set {
            finished[id] = nil
            live[id] = newValue
        }
    }

    func contains(_ id: String) -> Bool {
        live[id] != nil || finished[id] != nil
    }

    /// The request, kept live from now on when it was compact: what a client's reads of it go through.
    mutating func promote(_ id: String) -> RelayRequest? {
        if let request = live[id] { return request }
        guard let request = finished.removeValue(forKey: id)?.request.request(id: id) else { return nil }
        live[id] = request
        return request
    }

    /// Live requests only (a compact one has ended with a result).
    var liveValues: Dictionary<String, RelayRequest>.Values { live.values }

    /// The requests `owner` may list (nil: all): the live ones, and the compact ones as they are, to be made live
    /// (`FinishedRequest.request(id:)`) outside the table's lock.
    func snapshot(owner: String?? = nil) -> (live: [RelayRequest], finished: [(id: String, request: FinishedRequest)]) {
        let live = live.values.filter { owner == nil || $0.ownerKeyID == owner! }
        let finished = finished.filter { owner == nil || $0.value.request.ownerKeyID == owner! }
        return (live, finished.map { (id: $0.key, request: $0.value.request) })
    }

    /// Whether the request has ended (a compact one has); false when there is none.
    func hasEnded(_ id: String) -> Bool {
        if finished[id] != nil { return true }
        guard let request = live[id] else { return false }
        return request.cancelled || request.job.isTerminal
    }

    /// Removes the ended requests created before `cutoff` (seconds since the epoch); returns how many.
    mutating func removeEnded(createdBefore cutoff: Double) -> Int {
        let expired = live.values.filter { request in
            request.createdAt.secondsSinceEpoch < cutoff && (request.cancelled || request.job.isTerminal)
        }
        for request in expired { live[request.id] = nil }
        let before = finished.count
        finished = finished.filter { $0.value.request.createdAt.secondsSinceEpoch >= cutoff }
        return expired.count + before - finished.count
    }

    /// When the oldest request kept was created.
    var oldestCreatedAt: Timestamp? {
        let oldest = [live.values.lazy.map(\.createdAt).min(), finished.values.lazy.map(\.request.createdAt).min()]
        return oldest.compactMap { $0 }.min()
    }

    /// Keeps a restored request that finished with a result in its compact form (unless the id is held already).
    mutating func keepFinished(_ request: FinishedRequest, id: String) {
        guard live[id] == nil else { return }
        finished[id] = Boxed(request)
    }
}

/// A restored request that finished with a result, as `RequestTable` keeps it until asked for.
struct FinishedRequest: Sendable {
    /// What every restored request of an endpoint shares.
    final class Shared: Sendable {
        let endpoint: EndpointID
        let input: ModelInput
        let maxEvents: Int

        init(endpoint: EndpointID, input: ModelInput, maxEvents: Int) {
            self.endpoint = endpoint
            self.input = input
            self.maxEvents = maxEvents
        }
    }

    let shared: Shared
    let jobID: UInt64
    let key: RequestKey
    let ownerKeyID: String?
    let createdAt: Timestamp
    let endedAt: Timestamp?
    let cacheOutcome: CacheOutcome
    let cacheStatus: String
    let tags: [PlatformHeaders.Tag]
    /// The input as keyed, serialised (nil: not kept).
    let input: [UInt8]?
    /// The result, serialised.
    let result: [UInt8]
    let inferenceSeconds: Double?
    let payloadsDeleted: Bool

    /// The live request and its ended job. A result that no longer parses (it did when it was written) serves as
    /// an empty object rather than failing a read.
    func request(id: String) -> RelayRequest {
        let parsed = (try? JSONValue(parsing: result, maxDepth: 512)) ?? .object([:])
        let job = Job(
            restoredID: jobID,
            key: key,
            input: shared.input,
            outcome: .success(result: parsed, inferenceSeconds: inferenceSeconds),
            createdAt: createdAt,
            endedAt: endedAt,
            maxEvents: shared.maxEvents
        )
        return RelayRequest(
            id: id,
            endpoint: shared.endpoint,
            job: job,
            ownerKeyID: ownerKeyID,
            createdAt: createdAt,
            cacheOutcome: cacheOutcome,
            cacheStatus: cacheStatus,
            cancelled: false,
            recorded: RecordCommit(pending: 0),
            tags: tags,
            input: input.flatMap { try? JSONValue(parsing: $0, maxDepth: 512) }?.objectValue,
            payloadsDeleted: payloadsDeleted
        )
    }
}
