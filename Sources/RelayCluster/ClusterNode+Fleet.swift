import NIOCore
import PostgresNIO
public import RelayCore
public import RelayJobs
public import RelayStore

extension ClusterNode: Fleet {
    public func register(_ request: RelayRequest, done: @escaping @Sendable () -> Void) {
        let input = ByteBuffer(bytes: JSONValue.object(request.job.input.fields).serialized())
        let (id, endpoint, model, key) = (
            request.id, request.endpoint.description, request.job.model.id, request.job.key.digest.hex
        )
        let (owner, created, node) = (request.ownerKeyID, request.createdAt.secondsSinceEpoch, configuration.nodeID)
        let webhook = request.webhookURL
        // A `no-cache` request (served as a bypass): a node that takes it up runs or follows its own job, never a
        // shared one.
        let noCache = request.cacheOutcome == .bypass
        Task {
            do {
                try await database.perform("register request") { client in
                    try await client.query(
                        """
                        INSERT INTO relay_requests
                            (request_id, endpoint, model_id, request_key, input, owner_key_id, node_id, created_at,
                             webhook_url, no_cache)
                        VALUES (\(id), \(endpoint), \(model), \(key), \(input), \(owner), \(node), \(created),
                                \(webhook), \(noCache))
                        ON CONFLICT (request_id) DO NOTHING
                        """
                    )
                }
            } catch {
                logger.warning(
                    "request not registered in the fleet; its id is answerable on this node only",
                    metadata: ["request_id": "\(id)", "error": "\(error)"]
                )
            }
            done()
        }
    }

    public func stored(_ key: RequestKey, _ result: CachedResult, done: @escaping @Sendable () -> Void) {
        guard let manifest = result.manifestBytes(key: key) else { return done() }
        let yielded = writes.yield(
            .stored(
                key: key.digest.hex,
                manifest: manifest,
                expiresAt: result.expiresAt.secondsSinceEpoch,
                digests: result.referencedDigests.map(\.hex),
                done: done
            )
        )
        if case .terminated = yielded { done() }
    }

    public func cancelled(_ request: RelayRequest) {
        writes.yield(.cancelled(requestID: request.id))
    }

    public func attached(_ key: RequestKey, _ handle: UpstreamHandle) {
        let json: JSONValue = [
            "origin": .string(handle.origin), "request_id": .string(handle.requestID),
            "status_url": .string(handle.statusURL), "response_url": .string(handle.responseURL),
            "cancel_url": .string(handle.cancelURL),
        ]
        writes.yield(.attached(key: key.digest.hex, handle: json.serializedString))
    }

    /// A handle as `attached` stored it.
    static func handle(_ text: String?) -> UpstreamHandle? {
        guard let text, let json = try? JSONValue(parsing: Array(text.utf8)),
            let origin = json["origin"]?.stringValue, let id = json["request_id"]?.stringValue,
            let status = json["status_url"]?.stringValue, let response = json["response_url"]?.stringValue,
            let cancel = json["cancel_url"]?.stringValue
        else { return nil }
        return UpstreamHandle(
            origin: origin,
            requestID: id,
            statusURL: status,
            responseURL: response,
            cancelURL: cancel
        )
    }

    /// This node delivered a request's webhook (or gave up on it): no other node delivers it.
    public func webhookSettled(requestID: String) {
        writes.yield(.webhookSettled(requestID: requestID))
    }

    /// Releases this node's claim on `key` (after any result it stored before).
    func release(_ key: RequestKey) {
        writes.yield(.release(key: key.digest.hex))
    }

    /// Performs the ordered writes one by one; a write that fails for want of the database is retried until it
    /// succeeds or the node stops (the claim's lease covers a release that never lands).
    func writeLoop() async {
        let node = configuration.nodeID
        for await write in writeStream {
            var attempt = 0
            // Whoever waits for a published result waits for this write only: done or given up, it is told.
            defer { if case .stored(_, _, _, _, let done) = write { done() } }
            while !Task.isCancelled {
                do {
                    try await perform(write, node: node)
                    break
                } catch ClusterError.refused(let reason) {
                    logger.error("cluster write refused", metadata: ["write": "\(write)", "error": "\(reason)"])
                    break
                } catch {
                    attempt += 1
                    if attempt == 1 {
                        logger.warning("cluster write waits for the database", metadata: ["error": "\(error)"])
                    }
                    try? await Task.sleep(for: .milliseconds(min(2000, 100 * attempt)))
                }
            }
        }
    }

    private func perform(_ write: Write, node: String) async throws(ClusterError) {
        let logger = self.logger
        switch write {
        case .stored(let key, let manifest, let expiresAt, let digests, _):
            let bytes = ByteBuffer(bytes: manifest)
            try await database.perform("publish result") { client in
                try await client.withTransaction(logger: logger) { connection in
                    try await connection.query(
                        """
                        INSERT INTO relay_results (request_key, manifest, expires_at, node_id)
                        VALUES (\(key), \(bytes), \(expiresAt), \(node))
                        ON CONFLICT (request_key) DO UPDATE
                        SET manifest = EXCLUDED.manifest, expires_at = EXCLUDED.expires_at, node_id = EXCLUDED.node_id
                        """,
                        logger: logger
                    )
                    if !digests.isEmpty {
                        try await connection.query(
                            """
                            INSERT INTO relay_blobs (digest, node_id) SELECT d, \(node) FROM unnest(\(digests)::text[]) AS d
                            ON CONFLICT DO NOTHING
                            """,
                            logger: logger
                        )
                    }
                    try await connection.query(
                        "DELETE FROM relay_claims WHERE request_key = \(key) AND node_id = \(node)",
                        logger: logger
                    )
                }
            }
        case .release(let key):
            try await database.perform("release claim", soft: true) { client in
                try await client.query("DELETE FROM relay_claims WHERE request_key = \(key) AND node_id = \(node)")
            }
        case .attached(let key, let handle):
            try await database.perform("attach claim") { client in
                try await client.query(
                    "UPDATE relay_claims SET handle = \(handle) WHERE request_key = \(key) AND node_id = \(node)"
                )
            }
        case .webhookSettled(let id):
            try await database.perform("webhook settled") { client in
                try await client.query("UPDATE relay_requests SET webhook_done = true WHERE request_id = \(id)")
            }
        case .withdrawn(let id):
            try await database.perform("withdraw request") { client in
                try await client.query("DELETE FROM relay_requests WHERE request_id = \(id)")
            }
        case .cancelled(let id):
            let payload = "cancel:" + id
            try await database.perform("cancel request") { client in
                try await client.query("UPDATE relay_requests SET cancelled = true WHERE request_id = \(id)")
                try await client.query("SELECT pg_notify('relay_events', \(payload))")
            }
        }
    }

    // MARK: - Reads

    /// Takes over the undelivered webhooks of requests whose node stopped beating (at most `limit` per call): they
    /// become this node's, each with its webhook URL, to be adopted and delivered here.
    func takeOverOrphanedWebhooks(limit: Int = 50) async throws(ClusterError) -> [(FleetRequest, String)] {
        let node = configuration.nodeID
        let lease = Self.seconds(configuration.lease)
        return try await database.perform("orphaned webhooks") { client -> [(FleetRequest, String)] in
            let rows = try await client.query(
                """
                UPDATE relay_requests SET node_id = \(node)
                WHERE request_id IN (
                    SELECT r.request_id FROM relay_requests r
                    WHERE r.webhook_url IS NOT NULL AND NOT r.webhook_done AND NOT r.cancelled AND r.node_id <> \(node)
                      AND NOT EXISTS (SELECT 1 FROM relay_nodes n WHERE n.node_id = r.node_id
                                      AND n.heartbeat_at > now() - make_interval(secs => \(lease)))
                    LIMIT \(limit) FOR UPDATE SKIP LOCKED)
                RETURNING \(unescaped: Self.registryColumns)
                """
            )
            var taken: [(FleetRequest, String)] = []
            for try await row in rows.decode(RegistryRow.self) {
                guard let request = Self.fleetRequest(row), let webhook = row.9 else { continue }
                taken.append((request, webhook))
            }
            return taken
        }
    }

    /// The registry's columns, in the order `fleetRequest(_:)` reads them.
    static let registryColumns = """
        request_id, endpoint, model_id, request_key, input, owner_key_id, node_id, created_at, cancelled, webhook_url, \
        no_cache
        """
    typealias RegistryRow = (String, String, String, String, ByteBuffer, String?, String, Double, Bool, String?, Bool)

    /// A registry row as the job table takes it; nil for a key that is not a digest.
    static func fleetRequest(_ row: RegistryRow) -> FleetRequest? {
        let (id, endpoint, model, key, input, owner, node, created, cancelled, _, noCache) = row
        guard let digest = Digest128(hex: key) else { return nil }
        var request = FleetRequest(
            id: id,
            endpoint: endpoint,
            modelID: model,
            key: RequestKey(digest: digest),
            input: Array(input.readableBytesView),
            ownerKeyID: owner,
            createdAt: Timestamp(secondsSinceEpoch: created),
            cancelled: cancelled,
            nodeID: node
        )
        request.noCache = noCache
        return request
    }

    /// The registry's entry for a request id, nil when no node took it.
    public func request(_ id: String) async throws(ClusterError) -> FleetRequest? {
        try await database.perform("look up request") { client -> FleetRequest? in
            let rows = try await client.query(
                """
                SELECT \(unescaped: Self.registryColumns) FROM relay_requests WHERE request_id = \(id)
                """
            )
            for try await row in rows.decode(RegistryRow.self) {
                return Self.fleetRequest(row)
            }
            return nil
        }
    }

    /// A fresh result for `key` that some node stored, verified against the key.
    public func result(_ key: RequestKey) async throws(ClusterError) -> CachedResult? {
        let hex = key.digest.hex
        let now = Timestamp.now().secondsSinceEpoch
        let manifest = try await database.perform("look up result") { client -> ByteBuffer? in
            let rows = try await client.query(
                "SELECT manifest FROM relay_results WHERE request_key = \(hex) AND expires_at > \(now)"
            )
            for try await manifest in rows.decode(ByteBuffer.self) { return manifest }
            return nil
        }
        guard let manifest else { return nil }
        return CachedResult(manifestBytes: Array(manifest.readableBytesView), key: key)
    }

    /// What the fleet has for `key` in one round trip: a fresh result some node stored, and whether another live
    /// node holds the key's claim (a submission here then shares that node's job).
    public func lookup(_ key: RequestKey) async throws(ClusterError) -> (result: CachedResult?, runningElsewhere: Bool)
    {
        let (hex, node) = (key.digest.hex, configuration.nodeID)
        let now = Timestamp.now().secondsSinceEpoch
        let (manifest, elsewhere) = try await database.perform("look up key") { client -> (ByteBuffer?, Bool) in
            let rows = try await client.query(
                """
                SELECT (SELECT manifest FROM relay_results WHERE request_key = \(hex) AND expires_at > \(now)),
                       EXISTS (SELECT 1 FROM relay_claims
                               WHERE request_key = \(hex) AND node_id <> \(node) AND lease_until > now())
                """
            )
            for try await (manifest, elsewhere) in rows.decode((ByteBuffer?, Bool).self) {
                return (manifest, elsewhere)
            }
            return (nil, false)
        }
        let result = manifest.flatMap { CachedResult(manifestBytes: Array($0.readableBytesView), key: key) }
        return (result, elsewhere)
    }

    /// As `lookup`, and when there is neither a result nor another node's claim, claims the key for this node: all
    /// in one statement (one round trip on a submission's path). `runningElsewhere` is true when another node holds
    /// the claim, also one that took it a moment before this statement did.
    ///
    /// `registering`: a submission's request, registered (`register`) by the same statement; it then runs on the
    /// durable pool, as a registration must, instead of the soft one.
    public func lookupOrClaim(
        _ key: RequestKey,
        registering: FleetRequest? = nil
    ) async throws(ClusterError) -> (result: CachedResult?, runningElsewhere: Bool) {
        let (hex, node) = (key.digest.hex, configuration.nodeID)
        let now = Timestamp.now().secondsSinceEpoch
        let lease = Self.seconds(configuration.lease)
        // Without a request to register the insert below selects nothing (its values are never read).
        let entry =
            registering
            ?? FleetRequest(
                id: "",
                endpoint: "",
                modelID: "",
                key: key,
                input: [],
                ownerKeyID: nil,
                createdAt: .now(),
                cancelled: false,
                nodeID: node
            )
        let (id, endpoint, model, input) = (entry.id, entry.endpoint, entry.modelID, ByteBuffer(bytes: entry.input))
        let (owner, created, webhook, registers) = (
            entry.ownerKeyID, entry.createdAt.secondsSinceEpoch, entry.webhookURL, registering != nil
        )
        // Only this lookup's outcome is kept: a claim an earlier lookup won and no job took (its submission shared a
        // job that ran here) may have been released since, and another node may hold the key now. Forgotten before
        // the statement, so that a lookup that fails leaves nothing stale either.
        freshClaims.withLock { $0.forget(key) }
        let (manifest, elsewhere, claimed) = try await database.perform("look up or claim", soft: !registers) {
            client -> (ByteBuffer?, Bool, ClaimedRow?) in
            let rows = try await client.query(
                """
                WITH registered AS (
                    INSERT INTO relay_requests
                        (request_id, endpoint, model_id, request_key, input, owner_key_id, node_id, created_at,
                         webhook_url)
                    SELECT \(id), \(endpoint), \(model), \(hex), \(input), \(owner), \(node), \(created), \(webhook)
                    WHERE \(registers)
                    ON CONFLICT (request_id) DO NOTHING),
                found AS (
                    SELECT manifest FROM relay_results WHERE request_key = \(hex) AND expires_at > \(now)),
                held AS (
                    SELECT 1 FROM relay_claims
                    WHERE request_key = \(hex) AND node_id <> \(node) AND lease_until > now()),
                claimed AS (
                    INSERT INTO relay_claims AS c (request_key, node_id, lease_until)
                    SELECT \(hex), \(node), now() + make_interval(secs => \(lease))
                    WHERE NOT EXISTS (SELECT 1 FROM found) AND NOT EXISTS (SELECT 1 FROM held)
                    ON CONFLICT (request_key) DO UPDATE
                    SET node_id = EXCLUDED.node_id, lease_until = EXCLUDED.lease_until
                    WHERE c.lease_until < now() OR c.node_id = EXCLUDED.node_id
                    RETURNING handle, \(unescaped: Self.numbering))
                SELECT (SELECT manifest FROM found),
                       EXISTS (SELECT 1 FROM held)
                       OR (NOT EXISTS (SELECT 1 FROM found) AND NOT EXISTS (SELECT 1 FROM claimed)),
                       EXISTS (SELECT 1 FROM claimed),
                       (SELECT handle FROM claimed),
                       (SELECT number_from FROM claimed)
                """
            )
            for try await (manifest, elsewhere, won, handle, numberFrom) in rows.decode(
                (ByteBuffer?, Bool, Bool, String?, Int?).self
            ) {
                return (manifest, elsewhere, won ? numberFrom.map { ClaimedRow(handle: handle, numberFrom: $0) } : nil)
            }
            return (nil, false, nil)
        }
        let result = manifest.flatMap { CachedResult(manifestBytes: Array($0.readableBytesView), key: key) }
        if result == nil, let claimed {
            // The job this submission starts in a moment needs neither to look for a result nor to claim again.
            let claim = Claim.won(handle: Self.handle(claimed.handle), numberFrom: claimed.numberFrom)
            freshClaims.withLock { $0.note(key, claim, at: .now) }
        }
        return (result, result == nil && elsewhere)
    }

    /// Takes back a registration whose submission was refused after all (its key's lookup had registered it): no
    /// node may adopt it, nor deliver its webhook. The claim that lookup won goes too, unless a job took it: left, it
    /// would be renewed by every heartbeat, and other nodes would follow this one for a job it never started.
    /// The deletion goes through the write queue, retried until the database takes it: a refusal often comes while
    /// the database does not answer, and a registration left behind would have its webhook delivered by the node
    /// that takes this one's over.
    public func withdraw(_ requestID: String, key: RequestKey) {
        let unused = freshClaims.withLock { $0.take(key, newerThan: .now - configuration.lease) } != nil
        writes.yield(.withdrawn(requestID: requestID))
        if unused { writes.yield(.release(key: key.digest.hex)) }
    }

    /// Whether this node still delivers the webhook of `requestID`: the registry names it, and nobody marked it done.
    /// A node the fleet took for dead (its heartbeat late) may be alive: its webhooks went to another node, which
    /// delivers them. A request the registry lacks, or a database that does not answer, leaves it to this node.
    public func deliversWebhook(of requestID: String) async -> Bool {
        let node = configuration.nodeID
        let owned = try? await database.perform("webhook owner") { client -> Bool? in
            let rows = try await client.query(
                "SELECT node_id = \(node) AND NOT webhook_done FROM relay_requests WHERE request_id = \(requestID)"
            )
            for try await mine in rows.decode(Bool.self) { return mine }
            return nil
        }
        return (owned ?? nil) ?? true
    }

    /// Live nodes other than this one that hold the blob, in no particular order.
    public func holders(of digest: Digest128) async throws(ClusterError) -> [String] {
        let (hex, node) = (digest.hex, configuration.nodeID)
        let lease = Self.seconds(configuration.lease)
        return try await database.perform("blob holders") { client -> [String] in
            var urls: [String] = []
            for try await url in try await client.query(
                """
                SELECT n.node_url FROM relay_blobs b JOIN relay_nodes n ON n.node_id = b.node_id
                WHERE b.digest = \(hex) AND b.node_id <> \(node) AND NOT n.leaving
                  AND n.heartbeat_at > now() - make_interval(secs => \(lease))
                """
            ).decode(String.self) {
                urls.append(url)
            }
            return urls
        }
    }

    /// Records that this node holds the blob (an upload, or a copy fetched from a peer).
    public func holds(_ digest: Digest128) {
        let (hex, node) = (digest.hex, configuration.nodeID)
        Task {
            _ = try? await database.perform("record blob") { client in
                try await client.query(
                    "INSERT INTO relay_blobs (digest, node_id) VALUES (\(hex), \(node)) ON CONFLICT DO NOTHING"
                )
            }
        }
    }
}
