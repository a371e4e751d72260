public import RelayCore
public import RelayJobs
public import RelayStore

/// What the HTTP layer asks of the fleet this relay belongs to (cluster mode; nil on a single node). Every call that
/// reaches the database or a peer is asynchronous and bounded in time; none runs on an event loop.
public protocol FleetAccess: Sendable {
    /// Whether the fleet's database answered last time: submissions are refused (503) while it does not.
    var isAvailable: Bool { get }
    /// Whether the node with this id is a live member of the fleet.
    func isLive(node: String) -> Bool
    /// What peers present (`x-relay-cluster-token`) on node-to-node calls.
    var peerToken: String { get }
    /// The registry's entry for a request id another node may have taken.
    func request(_ id: String) async throws -> FleetRequest?
    /// A fresh result some node stored for `key` (the fleet's result index), and whether another node runs the key's
    /// job now.
    func lookup(_ key: RequestKey) async throws -> (result: CachedResult?, runningElsewhere: Bool)
    /// As `lookup`, and when there is no result, claims the key for this node unless another node holds it: a
    /// submission is labelled a miss on exactly one node of the fleet. `registering`: the submission's request,
    /// registered in the same statement (one round trip on the submission's path instead of two).
    func lookupOrClaim(
        _ key: RequestKey,
        registering: FleetRequest?
    ) async throws -> (result: CachedResult?, runningElsewhere: Bool)
    /// Takes back a registration the submission did not become (refused after its key's lookup registered it), and
    /// the key's claim won with it when no job took that claim.
    func withdraw(_ registered: FleetRequest)
    /// This node's id in the fleet.
    var nodeID: String { get }
    /// Copies a blob this node lacks from a node that holds it into the blob store (verified by its digest); true when
    /// it is here now. Concurrent calls for one digest share one copy.
    func fetchBlob(_ digest: Digest128, mediaType: MediaType) async -> Bool
    /// `/admin/cluster` and `/readyz`: this node, the fleet as it sees it, its own generations.
    func status() -> JSONValue
}

/// The fleet's result index as the tier beneath this node's own (PostgreSQL): asked with a claim, so that a submission
/// nobody has a result for is labelled a miss on exactly one node of the fleet, and with the submission's
/// registration, so that its answer waits for one round trip to the database, not two.
struct FleetResultTier: ResultTier {
    let fleet: any FleetAccess
    /// The submission's request, to register with the lookup.
    let registering: FleetRequest?

    func fill(_ key: RequestKey, input: ModelInput, into results: ResultIndex) async -> ResultTierAnswer {
        // A database that does not answer is no reason to fail here: the submission goes on as a local miss, under
        // the id the failed statement may have registered all the same, registered again (idempotent).
        guard let (found, elsewhere) = try? await fleet.lookupOrClaim(key, registering: registering) else {
            var inDoubt = registering
            inDoubt?.registrationInDoubt = true
            return ResultTierAnswer(found: false, registered: inDoubt)
        }
        if let found, found.modelID == input.model.id, found.canonicalInput == input.canonicalBytes {
            results.store(key, found)
            return ResultTierAnswer(found: true, registered: registering)
        }
        return ResultTierAnswer(found: false, runningElsewhere: elsewhere, registered: registering)
    }
}
