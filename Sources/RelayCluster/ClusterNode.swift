import Foundation
public import Logging
import NIOCore
import PostgresNIO
import RelayCore
public import RelayJobs
import Synchronization

/// This relay as one node of a fleet (DESIGN.md "A fleet"): its row in the membership table, kept alive by a
/// heartbeat that also renews every claim it holds; the registry of request ids, the fleet's result index, the
/// claims on pieces of work and the blob holders, all in PostgreSQL; and the notices other nodes send (a request
/// cancelled, the key table changed) through LISTEN/NOTIFY.
///
/// Nothing here runs on an event loop: every statement runs on a task of its own, bounded in time
/// (`ClusterDatabase.perform`). Writes whose order matters (a result published before its claim is released) go
/// through one ordered queue.
public final class ClusterNode: Sendable {
    public struct Configuration: Sendable {
        /// This node's id, unique in the fleet (random per start).
        public var nodeID: String
        /// How peers reach this node (its HTTP listener).
        public var nodeURL: String
        /// How long a claim (and a node's membership) outlives its last heartbeat.
        public var lease: Duration = .seconds(5)
        /// How often the node says it is alive and renews its claims.
        public var heartbeat: Duration = .seconds(1)

        public init(nodeID: String = Self.makeNodeID(), nodeURL: String) {
            self.nodeID = nodeID
            self.nodeURL = nodeURL
        }

        public static func makeNodeID() -> String {
            "node-" + RequestID.make().prefix(12)
        }
    }

    /// A node of the fleet as the membership table shows it.
    public struct Member: Sendable, Hashable {
        public var nodeID: String
        public var nodeURL: String
        public var alive: Bool
    }

    /// A write whose order matters.
    enum Write: Sendable {
        case stored(
            key: String,
            manifest: [UInt8],
            expiresAt: Double,
            digests: [String],
            done: @Sendable () -> Void
        )
        case release(key: String)
        case cancelled(requestID: String)
        case withdrawn(requestID: String)
        case webhookSettled(requestID: String)
        case attached(key: String, handle: String)
    }

    public let database: ClusterDatabase
    public let configuration: Configuration
    let logger: Logger
    let members = Mutex<[Member]>([])
    let writes: AsyncStream<Write>.Continuation
    let writeStream: AsyncStream<Write>
    private let background = Mutex<Task<Void, Never>?>(nil)
    private let generationCount = Atomic<Int>(0)
    let handlers = Mutex<Handlers>(Handlers())
    /// Claims `lookupOrClaim` won for submissions whose jobs have not started yet (see `takeFreshClaim`).
    let freshClaims = Mutex(FreshClaims())

    struct Handlers {
        var cancelled: (@Sendable (String) -> Void)?
        var keysChanged: (@Sendable () -> Void)?
        var membership: (@Sendable (Int) -> Void)?
        var orphanedWebhooks: (@Sendable ([(FleetRequest, String)]) -> Void)?
    }

    private let address: Mutex<String>
    private let token = Mutex("")

    /// What peers present to each other (`x-relay-cluster-token`), derived from the fleet's shared secret.
    public var peerToken: String {
        get { token.withLock { $0 } }
        set { token.withLock { $0 = newValue } }
    }

    /// How peers reach this node (known only after its listener is bound when it listens on port 0).
    public var nodeURL: String {
        get { address.withLock { $0 } }
        set { address.withLock { $0 = newValue } }
    }

    init(database: ClusterDatabase, configuration: Configuration, logger: Logger) {
        self.database = database
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.nodeID)"
        self.logger = logger
        self.address = Mutex(configuration.nodeURL)
        (writeStream, writes) = AsyncStream.makeStream(of: Write.self)
    }

    /// Connects to the fleet's database and applies its migrations; the node enters the membership table at `start()`.
    /// The pool must keep running (`database.run()`) for as long as the node is used; the caller owns that task.
    public static func join(
        database: ClusterDatabase,
        configuration: Configuration,
        logger: Logger
    ) async throws(ClusterError) -> ClusterNode {
        let node = ClusterNode(database: database, configuration: configuration, logger: logger)
        let applied = try await ClusterSchema.migrate(database)
        if !applied.isEmpty {
            node.logger.info("cluster schema migrated", metadata: ["versions": "\(applied)"])
        }
        return node
    }

    /// The fleet's shared deployment secret (keys RequestKeys, blob digests and tokens alike on every node): made by
    /// the first node that asks, read by the others.
    public func sharedSecret(size: Int) async throws(ClusterError) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        let fresh = ByteBuffer(bytes: (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) })
        return try await database.perform("shared secret") { client in
            try await client.query(
                "INSERT INTO relay_settings (name, value) VALUES ('deployment_secret', \(fresh)) ON CONFLICT (name) DO NOTHING"
            )
            for try await value in try await client.query(
                "SELECT value FROM relay_settings WHERE name = 'deployment_secret'"
            ).decode(ByteBuffer.self) {
                return Array(value.readableBytesView)
            }
            throw ClusterError.refused("the deployment secret row is missing")
        }
    }

    /// Calls `cancelled` with the id of every request another node cancels, `keysChanged` when the key table
    /// changes, `membership` with the number of live nodes after every heartbeat, and `orphanedWebhooks` with the
    /// requests (and webhook URLs) this node took over from dead nodes, to deliver. Set before `start()`.
    public func onNotice(
        cancelled: @escaping @Sendable (String) -> Void,
        keysChanged: @escaping @Sendable () -> Void,
        membership: @escaping @Sendable (Int) -> Void,
        orphanedWebhooks: @escaping @Sendable ([(FleetRequest, String)]) -> Void
    ) {
        handlers.withLock {
            $0 = Handlers(
                cancelled: cancelled,
                keysChanged: keysChanged,
                membership: membership,
                orphanedWebhooks: orphanedWebhooks
            )
        }
    }

    /// Starts the heartbeat, the notice listener and the ordered write queue.
    public func start() {
        let task = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.heartbeatLoop() }
                group.addTask { await self.listenLoop() }
                group.addTask { await self.writeLoop() }
            }
        }
        background.withLock { $0 = task }
    }

    /// Leaves the fleet on a drain: peers stop sending work here and take over what this node held.
    public func leave() async {
        let id = configuration.nodeID
        _ = try? await database.perform("leave") { client in
            try await client.query("UPDATE relay_nodes SET leaving = true WHERE node_id = \(id)")
            try await client.query("DELETE FROM relay_claims WHERE node_id = \(id)")
        }
    }

    /// Stops the background tasks (the pool is the caller's).
    public func stop() {
        writes.finish()
        background.withLock { $0?.cancel() }
    }

    /// Stops the background tasks and waits until they ended: no heartbeat is in flight after it.
    public func stopped() async {
        stop()
        await background.withLock { $0 }?.value
    }

    /// Whether the database answered the last statement.
    public var isAvailable: Bool { database.isAvailable }

    /// The fleet as the last heartbeat saw it.
    public var fleet: [Member] { members.withLock { $0 } }

    /// Live nodes (at least this one): each holds this share of every key's rate budget.
    public var liveNodeCount: Int { max(1, members.withLock { $0.count { $0.alive } }) }

    /// Generations this node ran itself (not followed on a peer, not served from the fleet's index).
    public var generationsStarted: Int { generationCount.load(ordering: .relaxed) }

    func countGeneration() { generationCount.add(1, ordering: .relaxed) }

    // MARK: - Background

    /// One heartbeat: this node's row (re-entered if a peer pruned it), its claims renewed, the membership read.
    func beat() async throws(ClusterError) {
        let (id, url) = (configuration.nodeID, nodeURL)
        let lease = Self.seconds(configuration.lease)
        let seen = try await database.perform("heartbeat", soft: true) { client -> [Member] in
            try await client.query(
                """
                INSERT INTO relay_nodes (node_id, node_url) VALUES (\(id), \(url))
                ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now(), node_url = EXCLUDED.node_url, leaving = false
                """
            )
            // A claim taken for a submission that was then served without work here (a result published meanwhile)
            // is released rather than renewed for as long as this node lives.
            try await client.query(
                """
                DELETE FROM relay_claims c WHERE c.node_id = \(id)
                AND EXISTS (SELECT 1 FROM relay_results r WHERE r.request_key = c.request_key)
                """
            )
            try await client.query(
                "UPDATE relay_claims SET lease_until = now() + make_interval(secs => \(lease)) WHERE node_id = \(id)"
            )
            var seen: [Member] = []
            for try await (nodeID, nodeURL, alive) in try await client.query(
                """
                SELECT node_id, node_url, (NOT leaving AND heartbeat_at > now() - make_interval(secs => \(lease)))
                FROM relay_nodes WHERE heartbeat_at > now() - interval '1 hour' ORDER BY node_id
                """
            ).decode((String, String, Bool).self) {
                seen.append(Member(nodeID: nodeID, nodeURL: nodeURL, alive: alive))
            }
            return seen
        }
        members.withLock { $0 = seen }
        handlers.withLock { $0.membership }?(max(1, seen.count { $0.alive }))
    }

    private func heartbeatLoop() async {
        var beats = 0
        while !Task.isCancelled {
            beats += 1
            // A backstop for a notice lost with the listener's connection: the key table is copied again now and then.
            if beats % 30 == 0 { handlers.withLock { $0.keysChanged }?() }
            do {
                try await beat()
                let orphans = try await takeOverOrphanedWebhooks()
                if !orphans.isEmpty {
                    logger.info("took over webhooks of a node that stopped", metadata: ["requests": "\(orphans.count)"])
                    handlers.withLock { $0.orphanedWebhooks }?(orphans)
                }
            } catch {
                logger.warning("cluster heartbeat failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: configuration.heartbeat)
        }
    }

    /// LISTEN on `relay_events` on a connection of its own, again after every loss of it.
    private func listenLoop() async {
        while !Task.isCancelled {
            do {
                try await database.client.withConnection { connection in
                    try await connection.listen(on: "relay_events") { notices in
                        // A notice missed while the listener was down: the key table may have changed.
                        self.handlers.withLock { $0.keysChanged }?()
                        for try await notice in notices {
                            self.receive(notice.payload)
                        }
                    }
                }
            } catch {
                logger.debug("cluster listener lost its connection", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    private func receive(_ payload: String) {
        if payload == "keys" {
            handlers.withLock { $0.keysChanged }?()
        } else if payload.hasPrefix("cancel:") {
            handlers.withLock { $0.cancelled }?(String(payload.dropFirst("cancel:".count)))
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// Claims won on a submission's path, each taken once by the job it was won for; a bounded memo, never the truth (the
/// database is): an entry not taken soon enough is dropped and the job asks the database as it would without it.
struct FreshClaims: Sendable {
    private var entries: [RequestKey: (claim: ClusterNode.Claim, at: ContinuousClock.Instant)] = [:]
    static let capacity = 4096

    mutating func note(_ key: RequestKey, _ claim: ClusterNode.Claim, at now: ContinuousClock.Instant) {
        if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
        entries[key] = (claim, now)
    }

    mutating func forget(_ key: RequestKey) {
        entries[key] = nil
    }

    /// The entry's claim, if there is a fresh entry.
    mutating func take(_ key: RequestKey, newerThan cutoff: ContinuousClock.Instant) -> ClusterNode.Claim? {
        guard let entry = entries.removeValue(forKey: key), entry.at > cutoff else { return nil }
        return entry.claim
    }
}
