import CMalloc
import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Prometheus
import RelayCore
import RelayHTTP
import RelayJobs
import RelayStore
import RelayUpstreams
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The whole relay process: builds every part from a configuration and runs them in one ServiceGroup.
public struct RelayApplication: Sendable {
    public let configuration: RelayConfiguration

    public init(configuration: RelayConfiguration) {
        self.configuration = configuration
    }

    /// Serves until SIGTERM/SIGINT. `announce` receives the human-readable start banner.
    public func run(announce: @Sendable (String) -> Void = Self.writeToStandardOutput) async throws {
        let config = configuration
        RelayLogging.bootstrap(format: config.logFormat, level: config.logLevel)
        defer { LogSink.standardError.flush() }
        var logger = Logger(label: "media-relay")
        logger.logLevel = config.logLevel

        guard config.http != nil || config.https != nil else {
            throw ConfigurationError("both listeners are off: enable --http or --https")
        }
        let dataDirectory = config.dataDirectory
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError("cannot create data directory \(dataDirectory): \(error.localizedDescription)")
        }
        // A fleet's nodes share one secret (RequestKeys and blob digests must agree), kept in its database.
        let cluster = try await ClusterWiring.join(
            config: config,
            logger: logger,
            group: .singletonMultiThreadedEventLoopGroup
        )
        let secret = try await cluster?.secret() ?? DeploymentSecret.load(dataDirectory: dataDirectory)
        let hasher = KeyedHasher(secret: secret)
        _ = RelayMetricsSystem.registry
        let catalog = try loadCatalog(logger: logger)

        var caPath: String?
        var tlsContext: ReloadableTLSContext?
        // SIGHUP reloads the certificate, trapped by a service that starts after READY is printed: until then it is
        // ignored, not the default action (which ends the process: seen once, under load, as a reset handshake).
        signal(SIGHUP, SIG_IGN)
        if config.https != nil {
            let (context, ca) = try makeTLSContext()
            tlsContext = ReloadableTLSContext(context)
            caPath = ca
        }

        let threadPool = NIOThreadPool(numberOfThreads: max(2, config.eventLoopThreads))
        threadPool.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: config.eventLoopThreads)
        do {
            try await serve(
                config: config,
                logger: logger,
                secret: secret,
                hasher: hasher,
                catalog: catalog,
                tlsContext: tlsContext,
                caPath: caPath,
                group: group,
                threadPool: threadPool,
                cluster: cluster,
                announce: announce
            )
        } catch {
            await cluster?.shutdown()
            try? await group.shutdownGracefully()
            try? await threadPool.shutdownGracefully()
            throw error
        }
        await cluster?.shutdown()
        try await group.shutdownGracefully()
        try await threadPool.shutdownGracefully()
        logger.info("stopped")
    }

    private func serve(
        config: RelayConfiguration,
        logger: Logger,
        secret: [UInt8],
        hasher: KeyedHasher,
        catalog: ModelCatalog,
        tlsContext: ReloadableTLSContext?,
        caPath: String?,
        group: MultiThreadedEventLoopGroup,
        threadPool: NIOThreadPool,
        cluster: ClusterWiring?,
        announce: @Sendable (String) -> Void
    ) async throws {
        let dataDirectory = config.dataDirectory

        let store = try BlobStore(directory: dataDirectory, hasher: hasher, threadPool: threadPool)
        try await store.removeTemporaryFiles()

        let publicOrigin = PublicOrigin()
        let synthetic = SyntheticUpstream(
            configuration: .init(
                slots: config.syntheticSlots,
                timeScale: config.syntheticTimeScale,
                publicBaseURL: { publicOrigin.value }
            ),
            store: store,
            threadPool: threadPool
        )
        // Results survive restarts: manifests on disk, index rebuilt from a snapshot plus a scan before serving.
        let results = ResultIndex(directory: dataDirectory, threadPool: threadPool)
        let loaded = try await results.load()
        logger.info(
            "result cache loaded",
            metadata: ["entries": "\(loaded.entries)", "snapshot": "\(loaded.usedSnapshot)"]
        )
        // Finished uploads: their records survive restarts, and their blobs are kept though no result references them.
        let uploadAliases = try UploadAliases(dataDirectory: dataDirectory, threadPool: threadPool)
        try await uploadAliases.load()
        let expiry = BlobExpiry(
            store: store,
            results: results,
            configuration: .init(maxBytes: config.cacheMaxBytes),
            pinned: { uploadAliases.pinnedDigests }
        )
        let uploads = UploadService(
            store: store,
            aliases: uploadAliases,
            maxBytes: config.maxUploadBytes,
            tokenSeconds: config.uploadTokenSeconds,
            multipartLimits: MultipartUploadLimits(totalBytes: config.maxMultipartUploadBytes),
            threadPool: threadPool,
            publicOrigin: { publicOrigin.value }
        )

        let made = try Self.makeOrigin(config, store: store, logger: logger, group: group) { publicOrigin.value }
        let origin = made?.upstream
        let originAccounts = made?.accounts ?? []
        if origin == nil, let model = catalog.models.first(where: { $0.upstream == "origin" }) {
            throw ConfigurationError("model \(model.id) is served by the origin, but no --origin is configured")
        }
        let sendEverythingToOrigin = origin != nil
        // In a fleet, each model's upstream runs one generation per key across all nodes.
        let fleetSynthetic = cluster?.upstream(synthetic) ?? synthetic
        // Requests survive restarts too: a log of request records, read back (and compacted) before serving.
        let requestLog = RequestLog(
            dataDirectory: dataDirectory,
            threadPool: threadPool,
            retentionSeconds: config.requestRetentionSeconds
        )
        let jobs = JobTable(
            retentionSeconds: config.requestRetentionSeconds,
            maxEvents: config.eventLogMaxEvents,
            results: results,
            cachePolicy: .init(resultTTLSeconds: config.resultTTLSeconds),
            log: requestLog,
            fleet: cluster?.node,
            mediaDeadline: { result, deadline in
                expiry.delete(ResultIndex.referencedDigests(in: result), at: deadline)
            },
            upstream: { [originUpstream = origin.map { cluster?.upstream($0) ?? $0 }] model in
                if let originUpstream, sendEverythingToOrigin || model.upstream == "origin" { return originUpstream }
                return fleetSynthetic
            }
        )
        if let restored = try await jobs.restore(models: { catalog.model($0) }) {
            logger.info(
                "requests restored",
                metadata: [
                    "requests": "\(restored.restored)", "interrupted": "\(restored.interrupted)",
                    "reattachable": "\(restored.reattachable)",
                    "torn_segments": "\(restored.tornSegments)", "corrupt_records": "\(restored.corruptRecords)",
                ]
            )
        }
        if cluster != nil, jobs.forgetInterrupted() > 0 {
            logger.info("requests in flight at the restart are left to the fleet, which finishes them")
        }
        // Loading the request log parsed every record once; finished requests are kept compact after it. What the
        // parsing left freed goes back to the system here instead of staying resident (see the README's backlog run).
        #if canImport(Glibc)
        malloc_trim(0)
        #endif
        let readiness = Readiness()
        jobs.statistics.setStoreBytesProvider { expiry.bytes }
        jobs.statistics.setScrapeProviders(
            evictions: { expiry.evictions },
            queueDepth: { [weak jobs] in
                synthetic.queueDepth + (jobs?.waitingForCaps ?? 0)
            }
        )
        var site: StaticSite?
        if let uiDirectory = config.uiDirectory {
            do {
                site = try StaticSite(directory: uiDirectory, hasher: hasher)
            } catch {
                throw ConfigurationError("\(error.description) (set --ui-dir, or --ui-dir off)")
            }
        }
        let shutdownTrigger = ShutdownTrigger()
        let admin = AdminOperations(
            purge: { target in await Self.purge(target, results: results, store: store) },
            cacheStatistics: {
                [
                    "results": .number(Double(results.count)),
                    "store_bytes": .number(Double(expiry.bytes)),
                    "store_budget_bytes": config.cacheMaxBytes.map { .number(Double($0)) } ?? .null,
                    "evictions": .number(Double(expiry.evictions)),
                    "collected": .number(Double(expiry.collected)),
                    "manifest_write_failures": .number(Double(results.writeFailures)),
                    "request_log": Self.requestLogStatistics(jobs),
                ]
            },
            drain: { shutdown in
                readiness.set(false)
                if shutdown { shutdownTrigger.fire() }
            }
        )
        var webhookSettings = WebhookDispatcher.Configuration()
        webhookSettings.allowPrivate = config.webhookAllowPrivate
        webhookSettings.schedule = WebhookRetrySchedule(
            baseDelay: .milliseconds(config.webhookRetryBaseMilliseconds),
            maxAttempts: config.webhookMaxAttempts
        )
        webhookSettings.timeout = .seconds(config.webhookTimeoutSeconds)
        webhookSettings.concurrency = config.webhookConcurrency
        webhookSettings.queueCapacity = config.webhookQueueSize
        let webhooks = WebhookDispatcher(
            configuration: webhookSettings,
            deploymentSecret: secret,
            eventLoopGroup: group,
            threadPool: threadPool,
            logger: logger,
            endedOnItsOwn: { request in jobs.request(request.id, keyID: request.ownerKeyID)?.earlyOutcome },
            settled: { id in cluster?.node.webhookSettled(requestID: id) },
            stillOurs: { id in await cluster?.node.deliversWebhook(of: id) ?? true }
        )
        let keyStore = APIKeyStore(dataDirectory: dataDirectory, secret: secret)
        let spendBook = SpendBook(dataDirectory: dataDirectory, logger: logger)
        let rateLimiter = config.rateLimits ? RateLimiter(policy: rateLimitPolicy(config)) : nil
        let relayServices = RelayServices(
            catalog: catalog,
            jobs: jobs,
            store: store,
            media: MediaFileSource(store: store, threadPool: threadPool),
            mediaServed: { digest in expiry.touch(digest) },
            hasher: hasher,
            authenticator: keyStore,
            router: Router(
                queueHosts: config.queueHosts.compactMap(HostPattern.init),
                runHosts: config.runHosts.compactMap(HostPattern.init)
            ),
            limits: HTTPLimits(
                maxJSONBodyBytes: config.maxJSONBodyBytes,
                sseKeepAliveSeconds: config.sseKeepAliveSeconds,
                connection: ConnectionStateMachine.Limits(
                    headerTimeout: .milliseconds(Int64(config.headerTimeoutSeconds * 1000)),
                    idleTimeout: .milliseconds(Int64(config.idleTimeoutSeconds * 1000)),
                    bodyTimeout: .milliseconds(Int64(config.bodyTimeoutSeconds * 1000)),
                    maxHeaderBytes: config.maxHeaderBytes
                ),
                maxURLBytes: config.maxURLBytes,
                maxConnections: config.maxConnections,
                maxConnectionsPerAddress: config.maxConnectionsPerIP
            ),
            readiness: readiness,
            logger: logger,
            perKeyScope: config.perKeyCacheScope,
            metricsText: {
                jobs.statistics.refreshForScrape()
                return RelayMetricsSystem.registry.emitToBuffer()
            },
            rateLimiter: rateLimiter,
            site: site,
            admin: admin,
            webhooks: DispatchingWebhookSink(dispatcher: webhooks),
            accessLogger: config.accessLog ? Logger(label: "access") : nil,
            uploads: uploads,
            fleet: cluster.map { ClusterFleetAccess(wiring: $0, store: store, maxBlobBytes: 512 << 20) },
            publicURL: config.publicURL,
            serverProxy: config.proxyKey.map {
                ServerProxy(
                    key: $0,
                    allowedOrigins: config.proxyAllowedOrigins,
                    allowedEndpoints: config.proxyAllowedEndpoints
                )
            },
            spend: spendBook.ledger
        )
        var listeners: [ListenerSpec] = []
        if let https = config.https {
            listeners.append(ListenerSpec(host: https.host, port: https.port, tls: tlsContext))
        }
        if let http = config.http {
            listeners.append(ListenerSpec(host: http.host, port: http.port, tls: nil))
        }
        let server = RelayHTTPServer(services: relayServices, listeners: listeners, group: group)
        let bound = try await server.bind()
        publicOrigin.set(config.publicURL ?? Self.defaultPublicOrigin(bound))
        // Jobs still running at the origin when the relay died are followed again, now that media URLs can be
        // rewritten to this relay's address.
        let resumed = jobs.resumeAttached()
        if resumed > 0 { logger.info("origin jobs followed again after the restart", metadata: ["jobs": "\(resumed)"]) }
        let addresses = Self.relayAddresses(config: config, bound: bound, publicOrigin: publicOrigin.value)
        uploads.setRelayAddresses(hostNames: addresses.names, ports: addresses.ports)
        cluster?.start(
            nodeURL: Self.nodeURL(bound),
            jobs: jobs,
            catalog: catalog,
            webhooks: webhooks,
            keys: keyStore,
            rateLimiter: rateLimiter,
            spend: spendBook.ledger
        )
        readiness.set(true)
        announce(banner(bound: bound, caPath: caPath, catalog: catalog, publicOrigin: publicOrigin.value))

        let sweeper = RequestSweeper(jobs: jobs)
        let storeSweeper = StoreSweeper(expiry: expiry, results: results, logger: logger)
        var serviceList: [ServiceGroupConfiguration.ServiceConfiguration] = [
            // Webhooks first: services stop in reverse order, so deliveries get their grace after the listeners stopped.
            // The spend book before the server: it stops after it, and writes what the last requests spent.
            .init(service: WebhookService(dispatcher: webhooks)), .init(service: spendBook), .init(service: server),
            .init(service: sweeper), .init(service: storeSweeper),
        ]
        if let tlsContext {
            serviceList.append(
                .init(service: CertificateReloader(context: tlsContext, logger: logger) { try self.makeTLSContext().0 })
            )
        }
        let services = ServiceGroup(
            configuration: .init(
                services: serviceList,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        shutdownTrigger.set { Task { await services.triggerGracefulShutdown() } }
        do {
            try await services.run()
        } catch {
            await cluster?.leave()
            for account in originAccounts { try? await account.shutdown() }
            throw error
        }
        // Drained: peers take over whatever this node still claimed.
        await cluster?.leave()
        for account in originAccounts { try? await account.shutdown() }
    }

    private func rateLimitPolicy(_ config: RelayConfiguration) -> RateLimitPolicy {
        var policy = RateLimitPolicy.standard
        policy.enterprisePerMinute = config.enterpriseRequestsPerMinute
        policy.inProgress.merge(config.maxInProgress) { $1 }
        policy.watchers.merge(config.maxWatchers) { $1 }
        policy.mediaBytesPerSecond = config.mediaBytesPerSecond
        return policy
    }

    /// `--catalog` when given, else the catalog built into the binary (Config/models.json when it was built), so the
    /// relay serves its models from any working directory.
    private func loadCatalog(logger: Logger) throws(ConfigurationError) -> ModelCatalog {
        try EmbeddedCatalog.catalog(orFileAt: configuration.catalogPath)
    }

    /// The configured certificate, or the development CA's (made at first start).
    private func makeTLSContext() throws -> (NIOSSLContext, String?) {
        let certificatePath: String
        let keyPath: String
        var caPath: String?
        switch (configuration.tlsCertificate, configuration.tlsKey) {
        case (let certificate?, let key?):
            certificatePath = certificate
            keyPath = key
        case (nil, nil):
            // Extra names (e.g. rest.fal.ai, v3.fal.media for fal's hard-coded storage hosts) reissue the leaf when new.
            let authority = DevelopmentCertificateAuthority(
                directory: (configuration.dataDirectory as NSString).appendingPathComponent("tls"),
                dnsNames: ["localhost"] + configuration.tlsExtraNames.filter { $0 != "localhost" }
            )
            let paths = try authority.ensure()
            certificatePath = paths.serverCertificateChain
            keyPath = paths.serverPrivateKey
            caPath = paths.caCertificate
        default:
            throw ConfigurationError("--tls-cert and --tls-key go together")
        }
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw ConfigurationError("cannot load TLS certificate \(certificatePath) / key \(keyPath): \(error)")
        }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        tls.minimumTLSVersion = .tlsv12
        // TLS 1.2: forward-secret AEAD suites only (Mozilla "intermediate"); TLS 1.3's suites are all modern.
        tls.cipherSuites = configuration.tls12Ciphers
        tls.applicationProtocols = ["h2", "http/1.1"]
        return (try NIOSSLContext(configuration: tls), caPath)
    }

    /// One suite per certificate type: every TLS 1.2 client with AEAD support has AES-128-GCM, and with a single
    /// choice the server's order is the only order (testssl.sh rates client-chosen order HIGH, and swift-nio-ssl has
    /// no server-preference switch). `--tls12-ciphers` widens it (e.g. adding ChaCha20 for old phones).
    public static let tls12CipherSuites = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"].joined(
        separator: ":"
    )

    /// Unbuffered, so that a supervisor reading a pipe sees the banner (and its READY line) at once.
    public static func writeToStandardOutput(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    /// The names and ports that reach this relay: a media URL on one of them is the relay's own (RelayMediaURLs).
    static func relayAddresses(
        config: RelayConfiguration,
        bound: [BoundListener],
        publicOrigin: String
    ) -> (names: Set<String>, ports: Set<Int>) {
        var names: Set<String> = ["localhost", "127.0.0.1", "::1"]
        var ports = Set(bound.map(\.port))
        for pattern in (config.queueHosts + config.runHosts).compactMap(HostPattern.init) {
            names.insert(pattern.name)
            if let port = pattern.port { ports.insert(port) }
        }
        names.formUnion(config.tlsExtraNames.map { $0.lowercased() })
        for listener in bound where !["0.0.0.0", "::", ""].contains(listener.host) {
            names.insert(listener.host.lowercased())
        }
        if let url = URLComponents(string: publicOrigin), let host = url.host {
            names.insert(host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]")))
            ports.insert(url.port ?? (url.scheme?.lowercased() == "http" ? 80 : 443))
        }
        return (names, ports)
    }

    /// How peers reach this node by default: its plain HTTP listener (else its HTTPS one).
    static func nodeURL(_ bound: [BoundListener]) -> String {
        let listener = bound.first { $0.scheme == "http" } ?? bound[0]
        let host = ["0.0.0.0", "::", ""].contains(listener.host) ? "127.0.0.1" : listener.host
        return BoundListener(scheme: listener.scheme, host: host, port: listener.port).url
    }

    static func defaultPublicOrigin(_ bound: [BoundListener]) -> String {
        let listener = bound.first { $0.scheme == "https" } ?? bound[0]
        let host = ["0.0.0.0", "::", ""].contains(listener.host) ? "127.0.0.1" : listener.host
        return BoundListener(scheme: listener.scheme, host: host, port: listener.port).url
    }

    private func banner(bound: [BoundListener], caPath: String?, catalog: ModelCatalog, publicOrigin: String) -> String
    {
        var lines = [
            "MediaRelay is serving \(catalog.models.count) models on the synthetic upstream (no GPU, no network)."
        ]
        for listener in bound {
            lines.append("  \(listener.scheme.padding(toLength: 5, withPad: " ", startingAt: 0)) \(listener.url)")
        }
        lines.append("  media   \(publicOrigin)/files/…")
        if let caPath {
            lines.append("  development CA: \(caPath)")
        }
        if let https = bound.first(where: { $0.scheme == "https" }) {
            let port = https.port
            lines.append("Point the fal clients at it:")
            // A fleet's keys live in its database (`keys … --cluster-database-url`), a node's in its data folder.
            let keyStore =
                configuration.clusterDatabaseURL != nil
                ? "--cluster-database-url \"$RELAY_CLUSTER_DATABASE_URL\"" : "--data-dir \(configuration.dataDirectory)"
            lines.append("  export FAL_KEY=$(media-relay keys create --tier pro \(keyStore) | tail -1)")
            lines.append("  export FAL_QUEUE_RUN_HOST=127.0.0.1:\(port) FAL_RUN_HOST=localhost:\(port)")
            if let caPath {
                lines.append("  export SSL_CERT_FILE=\(caPath)")
            }
        }
        let machine = bound.map { "\($0.scheme)=\($0.host.contains(":") ? "[\($0.host)]" : $0.host):\($0.port)" }
            .joined(separator: " ")
        lines.append("READY \(machine)")
        return lines.joined(separator: "\n")
    }
}
