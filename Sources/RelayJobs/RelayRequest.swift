public import RelayCore

/// How a submission was served, as `x-relay-cache` says it.
public enum CacheOutcome: String, Sendable, Hashable, CaseIterable {
    case hit
    case coalesced
    case miss
    case bypass
}

/// What the client asked of the cache (`Cache-Control` request directives).
public struct CacheDirectives: Sendable, Hashable {
    /// Generate anew: neither the result cache nor a generation in flight is used.
    public var noCache: Bool
    /// Keep nothing of this request's generation.
    public var noStore: Bool

    public init(noCache: Bool = false, noStore: Bool = false) {
        self.noCache = noCache
        self.noStore = noStore
    }
}

/// One client submission: its own id, attached to a (possibly shared) job.
public struct RelayRequest: Sendable {
    public let id: String
    public let endpoint: EndpointID
    public let job: Job
    /// The API key id that submitted it (nil = anonymous); only that key sees it.
    public let ownerKeyID: String?
    public let createdAt: Timestamp
    public let cacheOutcome: CacheOutcome
    /// The RFC 9211 `Cache-Status` value for this request's responses.
    public let cacheStatus: String
    public internal(set) var cancelled: Bool
    /// Why it ended on its own when not by a cancel (its start deadline passed while its shared job was queued).
    public internal(set) var endedEarly: FalError? = nil
    /// Done once the request's record is durable: its id may be given to the client only then, or a crash could
    /// make the id unknown (404) after the restart. Already done when the table keeps no log.
    public let recorded: RecordCommit
    /// `?fal_webhook=` of the submission: in a fleet it is registered with the request, so that a live node delivers
    /// it if the node that took the request dies first.
    public var webhookURL: String? = nil
    /// The submission's valid `X-Fal-Tags`.
    public var tags: [PlatformHeaders.Tag] = []
    /// The input as keyed, kept for the request history: nil when the client asked that nothing be kept
    /// (`X-Fal-Store-IO: 0`) or its owner deleted it.
    public internal(set) var input: JSONObject? = nil
    /// Its owner deleted its input and output (`DELETE /v1/models/requests/{id}/payloads`): neither is shown or
    /// served again.
    public internal(set) var payloadsDeleted = false

    /// The request's own view: a cancelled request is over even while its shared job runs on for others.
    public var phase: JobPhase {
        earlyOutcome.map(JobPhase.completed) ?? job.phase
    }

    /// How the request ended on its own while its shared job runs on for others: cancelled, or its start deadline.
    public var earlyOutcome: JobOutcome? {
        guard cancelled else { return nil }
        return endedEarly.map(JobOutcome.failure) ?? .cancelled
    }
}

/// What a cancel achieved (PROTOCOL.md §3.4).
public enum CancelOutcome: Sendable, Hashable {
    case cancellationRequested
    case alreadyCompleted
    case notFound
}
