import PostgresNIO
public import RelayCore
public import RelayJobs
public import RelayStore

/// Claims: which node runs the job of a key, under a lease its heartbeat renews (`relay_claims`).
extension ClusterNode {
    /// Whether `job` runs for a request another node of the fleet took (adopted from the registry): it follows its
    /// own job there first, and never starts with a claim this node's lookup won.
    func tookElsewhere(_ job: Job) -> Bool {
        job.adoptedFrom.map { $0.nodeID != configuration.nodeID } ?? false
    }

    /// The claim `lookupOrClaim` won for `key` a moment ago, taken once: the job it was won for starts with it
    /// instead of two more round trips (a result lookup and a claim that would find the same). nil when there is
    /// none, or it is older than a fifth of the lease (then the job asks the database again).
    func takeFreshClaim(_ key: RequestKey) -> Claim? {
        let limit = configuration.lease / 5
        return freshClaims.withLock { $0.take(key, newerThan: .now - limit) }
    }

    struct ClaimedRow: Sendable {
        let handle: String?
        let numberFrom: Int
    }

    /// Who does the work for `key`: this node (the claim is new, expired, or already its own) or a live peer.
    public enum Claim: Sendable, Hashable {
        /// This node does the work; `handle` names the job an upstream already accepted for the key under a node that
        /// held the claim before (it is followed there, not submitted again). `numberFrom`: where the run's event
        /// numbers start, from the database's clock, so that a run under a later claim (a lapsed lease taken over, a
        /// row released or dropped on a drain and claimed again, a node restarted) numbers past every number an
        /// earlier run gave out, which other nodes' watchers may have seen.
        case won(handle: UpstreamHandle?, numberFrom: Int)
        case heldBy(nodeID: String, nodeURL: String)
    }

    /// A claim statement's `number_from` column: the database's clock in microseconds (the time of the statement,
    /// not of its transaction's start). A run would have to log more than one event per microsecond to reach the
    /// numbers of a claim taken after it, and the numbers stay below 2^53 until the 23rd century (SSE and JSON carry
    /// them as numbers).
    static let numbering = "floor(extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS number_from"

    /// The database's clock as `numbering` reads it: where a run that holds no claim starts its event numbers.
    func eventNumberClock() async throws(ClusterError) -> Int {
        try await database.perform("clock", soft: true) { client -> Int in
            for try await value in try await client.query(
                PostgresQuery(unsafeSQL: "SELECT \(Self.numbering)")
            ).decode(Int.self) {
                return value
            }
            throw ClusterError.unavailable("the clock query returned no row")
        }
    }

    /// Claims `key` for this node unless a live claim of another node holds it.
    public func claim(_ key: RequestKey) async throws(ClusterError) -> Claim {
        let (hex, node) = (key.digest.hex, configuration.nodeID)
        let lease = Self.seconds(configuration.lease)
        return try await database.perform("claim", soft: true) { client -> Claim in
            let rows = try await client.query(
                """
                INSERT INTO relay_claims AS c (request_key, node_id, lease_until)
                VALUES (\(hex), \(node), now() + make_interval(secs => \(lease)))
                ON CONFLICT (request_key) DO UPDATE
                SET node_id = EXCLUDED.node_id, lease_until = EXCLUDED.lease_until
                WHERE c.lease_until < now() OR c.node_id = EXCLUDED.node_id
                RETURNING handle, \(unescaped: Self.numbering)
                """
            )
            for try await (handle, numberFrom) in rows.decode((String?, Int).self) {
                return .won(handle: Self.handle(handle), numberFrom: numberFrom)
            }
            let holder = try await client.query(
                """
                SELECT c.node_id, n.node_url FROM relay_claims c JOIN relay_nodes n ON n.node_id = c.node_id
                WHERE c.request_key = \(hex)
                """
            )
            for try await (nodeID, nodeURL) in holder.decode((String, String).self) {
                return .heldBy(nodeID: nodeID, nodeURL: nodeURL)
            }
            // Released between the two statements: try again.
            throw ClusterError.unavailable("claim changed hands while it was read; retry")
        }
    }

    /// How long the live claim on `key` has left (zero once it lapsed; nil when nobody holds one): a follower that lost
    /// the node running the job sleeps just that long before it claims the key, rather than polling.
    public func leaseLeft(_ key: RequestKey) async throws(ClusterError) -> Duration? {
        let hex = key.digest.hex
        return try await database.perform("lease left", soft: true) { client -> Duration? in
            let rows = try await client.query(
                """
                SELECT GREATEST(0, EXTRACT(EPOCH FROM lease_until - now()))::float8 FROM relay_claims
                WHERE request_key = \(hex)
                """
            )
            for try await seconds in rows.decode(Double.self) { return .milliseconds(Int(seconds * 1000)) }
            return nil
        }
    }
}
