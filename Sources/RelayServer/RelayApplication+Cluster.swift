import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCluster
import RelayCore
import RelayHTTP
import RelayJobs
import RelayStore
import RelayUpstreams
import Synchronization

/// Cluster mode's wiring (`--cluster-database-url`): the database pool, this node's membership, the HTTP client
/// peers are reached with, and what the HTTP layer and the job table are given of it.
final class ClusterWiring: Sendable {
    let database: ClusterDatabase
    let node: ClusterNode
    let http: HTTPClient
    let logger: Logger
    private let pool: Task<Void, Never>
    private let copier = Mutex<Task<Void, Never>?>(nil)

    private init(
        database: ClusterDatabase,
        node: ClusterNode,
        http: HTTPClient,
        pool: Task<Void, Never>,
        logger: Logger
    ) {
        self.database = database
        self.node = node
        self.http = http
        self.pool = pool
        self.logger = logger
    }

    /// Connects and migrates; nil without `cluster_database_url` (a single node, no database).
    static func join(
        config: RelayConfiguration,
        logger: Logger,
        group: any EventLoopGroup
    ) async throws
        -> ClusterWiring?
    {
        guard let url = config.clusterDatabaseURL else { return nil }
        let database: ClusterDatabase
        do {
            database = try ClusterDatabase(url: url, logger: logger)
        } catch {
            throw ConfigurationError(error.description)
        }
        let pool = Task { await database.run() }
        var settings = ClusterNode.Configuration(nodeURL: config.nodeURL ?? "")
        settings.lease = .milliseconds(Int64(config.clusterLeaseSeconds * 1000))
        let node: ClusterNode
        do {
            node = try await ClusterNode.join(database: database, configuration: settings, logger: logger)
        } catch {
            pool.cancel()
            throw ConfigurationError("cannot join the fleet at \(Self.redacted(url)): \(error)")
        }
        var client = HTTPClient.Configuration()
        client.timeout = .init(connect: .seconds(2), read: .seconds(60))
        client.connectionPool = .init(idleTimeout: .seconds(60))
        let http = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: client)
        logger.info("joined the fleet", metadata: ["node": "\(settings.nodeID)", "database": "\(Self.redacted(url))"])
        return ClusterWiring(database: database, node: node, http: http, pool: pool, logger: logger)
    }

    /// The fleet's deployment secret (every node keys requests and blobs alike), and the token peers present.
    func secret() async throws -> [UInt8] {
        let secret: [UInt8]
        do {
            secret = try await node.sharedSecret(size: KeyedHasher.secretSize)
        } catch {
            throw ConfigurationError("cannot read the fleet's secret: \(error)")
        }
        node.peerToken = Self.peerToken(secret)
        return secret
    }

    static func peerToken(_ secret: [UInt8]) -> String {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: secret),
            info: Array("media-relay peer token v1".utf8),
            outputByteCount: 32
        ).withUnsafeBytes { APIKeyStore.hex(Array($0)) }
    }

    /// Wraps a model's upstream so that the fleet runs one generation per key.
    func upstream(_ local: any Upstream) -> any Upstream {
        ClusterUpstream(local: local, node: node, http: http, logger: logger)
    }

    /// Starts the heartbeat and the notices: cancellations, key changes (copied into this node's key file) and the
    /// live node count (this node's share of every rate budget).
    func start(
        nodeURL: String,
        jobs: JobTable,
        catalog: ModelCatalog,
        webhooks: WebhookDispatcher,
        keys: APIKeyStore,
        rateLimiter: RateLimiter?,
        spend: SpendLedger?
    ) {
        if node.nodeURL.isEmpty { node.nodeURL = nodeURL }
        let fleetKeys = ClusterKeys(database: database)
        let logger = self.logger
        // Copies of the key table run one at a time, and a burst of notices makes one more copy, not many: two copies
        // racing could write an older table last. A copy that fails is tried again shortly.
        let (copyRequests, keyCopies) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        copier.withLock {
            $0 = Task {
                for await _ in copyRequests {
                    do {
                        try keys.replaceAll(with: try await fleetKeys.all())
                    } catch {
                        logger.warning("could not copy the fleet's keys", metadata: ["error": "\(error)"])
                        try? await Task.sleep(for: .seconds(1))
                        keyCopies.yield()
                    }
                }
            }
        }
        node.onNotice(
            cancelled: { id in _ = jobs.cancel(id, keyID: nil, fromFleet: true) },
            keysChanged: { keyCopies.yield() },
            membership: { nodes in
                rateLimiter?.setFleetShare(nodes: nodes)
                spend?.setFleetShare(nodes: nodes)
            },
            orphanedWebhooks: { orphans in
                for (request, url) in orphans {
                    guard let (input, endpoint) = request.modelInput(models: catalog.model) else { continue }
                    webhooks.register(request: jobs.adopt(request, input: input, endpoint: endpoint), url: url)
                }
            }
        )
        node.start()
    }

    /// On a drain: leave the fleet (peers take over this node's claims at once).
    func leave() async {
        await node.leave()
    }

    func shutdown() async {
        copier.withLock { $0?.cancel() }
        node.stop()
        try? await http.shutdown()
        pool.cancel()
    }

    /// A database URL without its password, for logs.
    static func redacted(_ url: String) -> String {
        guard var parts = URLComponents(string: url), parts.password != nil else { return url }
        parts.password = "***"
        return parts.string ?? url
    }
}
