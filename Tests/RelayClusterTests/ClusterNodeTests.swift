import Foundation
import Logging
import PostgresNIO
import RelayCore
import RelayJobs
import RelayStore
import Testing

@testable import RelayCluster

/// The fleet's shared state against a real PostgreSQL (a private server per suite): migrations, the registry, claims
/// and their leases, the result index, blob holders and keys.
@Suite(.serialized)
struct ClusterNodeTests {
    static let server = PrivatePostgres.shared

    private var logger: Logger {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        return logger
    }

    private func node(_ database: ClusterDatabase, _ name: String) async throws -> ClusterNode {
        var settings = ClusterNode.Configuration(nodeID: name, nodeURL: "http://127.0.0.1:1/\(name)")
        settings.lease = .seconds(5)
        let node = try await ClusterNode.join(database: database, configuration: settings, logger: logger)
        try await node.beat()
        return node
    }

    @Test func migrationsRunOnceWhenNodesStartTogether() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<4 { group.addTask { try await ClusterSchema.migrate(database) } }
                var all: [[Int]] = []
                for try await versions in group { all.append(versions) }
                return all
            }
            // Exactly one start applied each version (the suite may have migrated this database already).
            let versions = applied.flatMap { $0 }
            #expect(versions.count == Set(versions).count)
            let rows = try await database.perform("count") { client in
                var count = 0
                for try await _ in try await client.query("SELECT version FROM relay_schema_migrations").decode(
                    Int.self
                ) {
                    count += 1
                }
                return count
            }
            #expect(rows == ClusterSchema.migrations.count)
        }
    }

    @Test func oneClaimPerKeyUntilItsLeaseLapses() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "claim-a")
            let b = try await node(database, "claim-b")
            let key = RequestKey(digest: Digest128(high: 1, low: UInt64.random(in: 0...UInt64.max)))
            // Every run numbers its events from the database's clock in microseconds (within a minute of this one's).
            let start = Int(Timestamp.now().secondsSinceEpoch * 1_000_000) - 60_000_000
            let first = try #require(Self.won(try await a.claim(key)))
            #expect(first.handle == nil && first.numberFrom >= start, "\(first.numberFrom)")
            // A node's own claim is its own; claimed again (a restarted node), its run numbers past the last run's.
            let again = try #require(Self.won(try await a.claim(key)))
            #expect(again.handle == nil && again.numberFrom > first.numberFrom)
            #expect(try await b.claim(key) == .heldBy(nodeID: "claim-a", nodeURL: "http://127.0.0.1:1/claim-a"))
            // What a follower that lost a reads to know when to claim: the lease left, by the database's clock.
            let left = try #require(try await b.leaseLeft(key))
            #expect(left > .zero && left <= a.configuration.lease, "\(left)")
            #expect(try await b.leaseLeft(RequestKey(digest: Digest128(high: 2, low: 2))) == nil)
            // Time passes past the lease without a heartbeat from a (the database's clock is the fleet's clock).
            let hex = key.digest.hex
            try await Self.ageClaim(database, hex: hex)
            #expect(try await b.leaseLeft(key) == .zero)
            // Taken over: b's run numbers its events past a's, whatever numbers a gave out meanwhile.
            let takenOver = try #require(Self.won(try await b.claim(key)))
            #expect(takenOver.handle == nil)
            #expect(takenOver.numberFrom > again.numberFrom)
            #expect(try await a.claim(key) == .heldBy(nodeID: "claim-b", nodeURL: "http://127.0.0.1:1/claim-b"))
            // The job b runs was accepted by an origin under its own id: a node taking the key over gets that id.
            b.start()
            defer { b.stop() }
            let handle = UpstreamHandle(
                origin: "https://origin.example",
                requestID: "origin-1",
                statusURL: "https://origin.example/s",
                responseURL: "https://origin.example/r",
                cancelURL: "https://origin.example/c"
            )
            b.attached(key, handle)
            try await Self.waitForHandle(database, hex: hex)
            // b's heartbeat renews its claims each second: stopped, so that none renews it after the age-out below.
            await b.stopped()
            try await Self.ageClaim(database, hex: hex)
            #expect(Self.won(try await a.claim(key))?.handle == handle)
            // A heartbeat renews every claim of its node: a's claim outlives the age-out above.
            try await a.beat()
            #expect(try await b.claim(key) == .heldBy(nodeID: "claim-a", nodeURL: "http://127.0.0.1:1/claim-a"))
        }
    }

    @Test func aClaimWonOnTheSubmissionPathIsTakenOnceByItsJob() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "fresh-a")
            let b = try await node(database, "fresh-b")
            let key = RequestKey(digest: Digest128(high: 7, low: UInt64.random(in: 0...UInt64.max)))
            #expect(a.takeFreshClaim(key) == nil)
            _ = try await a.lookupOrClaim(key)
            let first = try #require(a.takeFreshClaim(key))
            let fresh = try #require(Self.won(first))
            #expect(fresh.handle == nil)
            #expect(a.takeFreshClaim(key) == nil, "taken once")
            // The node that found it held elsewhere has nothing to take: its job asks the database.
            _ = try await b.lookupOrClaim(key)
            #expect(b.takeFreshClaim(key) == nil)
            // A lapsed claim with an origin's handle, taken over on a submission's path: the handle comes with it, so
            // the job follows the origin's job instead of submitting again.
            let handle = UpstreamHandle(
                origin: "https://origin.example",
                requestID: "origin-7",
                statusURL: "https://origin.example/s",
                responseURL: "https://origin.example/r",
                cancelURL: "https://origin.example/c"
            )
            a.attached(key, handle)
            a.start()
            let hex = key.digest.hex
            try await Self.waitForHandle(database, hex: hex)
            await a.stopped()
            try await Self.ageClaim(database, hex: hex)
            _ = try await b.lookupOrClaim(key)
            let taken = try #require(b.takeFreshClaim(key))
            let takenOver = try #require(Self.won(taken))
            #expect(takenOver.handle == handle)
            #expect(
                takenOver.numberFrom > fresh.numberFrom,
                "a run under a claim taken over numbers past the last run's"
            )
            // A claim won by a lookup whose submission then shared a job already running here is never taken. The
            // next lookup forgets it: here b's claim lapsed and a took the key, so a job b starts must follow a.
            _ = try await b.lookupOrClaim(key)
            try await Self.ageClaim(database, hex: hex)
            #expect(Self.won(try await a.claim(key)) != nil)
            let elsewhere = try await b.lookupOrClaim(key)
            #expect(elsewhere.runningElsewhere)
            #expect(b.takeFreshClaim(key) == nil, "a claim from an earlier lookup was taken after a later one lost")
        }
    }

    /// A won claim's handle and first event number; nil for a claim another node holds.
    static func won(_ claim: ClusterNode.Claim) -> (handle: UpstreamHandle?, numberFrom: Int)? {
        guard case .won(let handle, let numberFrom) = claim else { return nil }
        return (handle, numberFrom)
    }

    /// Waits until the claim on `hex` carries an origin's handle (`attached` goes through the write queue).
    static func waitForHandle(_ database: ClusterDatabase, hex: String) async throws {
        for _ in 0..<200 {
            let stored = try await database.perform("handle?") { client in
                var found = false
                for try await text in try await client.query(
                    "SELECT handle FROM relay_claims WHERE request_key = \(hex)"
                ).decode(String?.self) {
                    found = text != nil
                }
                return found
            }
            if stored { return }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Makes the claim on `hex` one whose lease ran out.
    static func ageClaim(_ database: ClusterDatabase, hex: String) async throws {
        try await database.perform("age") { client in
            try await client.query(
                "UPDATE relay_claims SET lease_until = now() - interval '1 second' WHERE request_key = \(hex)"
            )
        }
    }

    /// A submission's request as a node registers it with its key's lookup.
    static func registration(_ key: RequestKey, owner: String?, node: String, webhook: String) -> FleetRequest {
        FleetRequest(
            id: RequestID.make(),
            endpoint: "fal-ai/flux/dev",
            modelID: "fal-ai/flux/dev",
            key: key,
            input: Array(#"{"prompt":"p"}"#.utf8),
            ownerKeyID: owner,
            createdAt: .now(),
            cancelled: false,
            nodeID: node,
            webhookURL: webhook
        )
    }

    @Test func aSubmissionRegistersWithItsKeysLookupAndARefusalWithdrawsIt() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "reg-a")
            let b = try await node(database, "reg-b")
            let key = RequestKey(digest: Digest128(high: 8, low: UInt64.random(in: 0...UInt64.max)))
            let entry = Self.registration(key, owner: "k1", node: "reg-a", webhook: "https://hooks.example/x")
            let answer = try await a.lookupOrClaim(key, registering: entry)
            #expect(answer.result == nil && !answer.runningElsewhere)
            // Any node finds it by its id at once: the answer needs no second statement.
            let found = try #require(try await b.request(entry.id))
            #expect(
                found.key == key && found.nodeID == "reg-a" && found.ownerKeyID == "k1" && found.input == entry.input
            )
            // Without one, nothing is registered (and the statement runs on the soft pool).
            #expect(try await b.lookupOrClaim(key).runningElsewhere)
            // Refused after all: the registration goes, and so does the claim no job took (the write queue runs).
            a.start()
            a.withdraw(entry.id, key: key)
            var gone = false
            for _ in 0..<200 where !gone {
                gone = try await b.request(entry.id) == nil
                if !gone { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(gone, "a withdrawn registration is not adoptable")
            var released = false
            for _ in 0..<200 where !released {
                released = !(try await b.lookupOrClaim(key).runningElsewhere)
                if !released { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(released, "the claim won with it is given back: nobody follows this node for it")
            await a.stopped()
        }
    }

    @Test func aWebhookIsDeliveredByTheNodeTheRegistryNamesAndOnlyUntilDone() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "hook-a")
            let b = try await node(database, "hook-b")
            let key = RequestKey(digest: Digest128(high: 10, low: UInt64.random(in: 0...UInt64.max)))
            let entry = Self.registration(key, owner: nil, node: "hook-a", webhook: "https://hooks.example/y")
            _ = try await a.lookupOrClaim(key, registering: entry)
            #expect(await a.deliversWebhook(of: entry.id))
            // Another node took it over (this one looked dead): this one leaves it.
            try await database.perform("take over") { client in
                try await client.query("UPDATE relay_requests SET node_id = 'hook-b' WHERE request_id = \(entry.id)")
            }
            #expect(await a.deliversWebhook(of: entry.id) == false)
            #expect(await b.deliversWebhook(of: entry.id))
            // Delivered: nobody sends it again.
            b.start()
            b.webhookSettled(requestID: entry.id)
            var done = false
            for _ in 0..<200 where !done {
                done = await !b.deliversWebhook(of: entry.id)
                if !done { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(done)
            await b.stopped()
            // A request the registry does not have is this node's to deliver.
            #expect(await a.deliversWebhook(of: "not-registered"))
        }
    }

    @Test func aSubmissionLooksUpAndClaimsInOneStatement() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "one-a")
            let b = try await node(database, "one-b")
            let key = RequestKey(digest: Digest128(high: 6, low: UInt64.random(in: 0...UInt64.max)))
            let first = try await a.lookupOrClaim(key)
            #expect(first.result == nil && !first.runningElsewhere, "a new key is claimed by the first node")
            #expect(Self.won(try await a.claim(key))?.handle == .some(nil))
            let second = try await b.lookupOrClaim(key)
            #expect(second.result == nil && second.runningElsewhere, "the other node sees it run elsewhere")
            #expect(try await b.claim(key) == .heldBy(nodeID: "one-a", nodeURL: "http://127.0.0.1:1/one-a"))
            let again = try await a.lookupOrClaim(key)
            #expect(!again.runningElsewhere, "a node's own claim is not elsewhere")
        }
    }

    @Test func aStoredResultIsAHitEverywhereAndReleasesTheClaim() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "store-a")
            let b = try await node(database, "store-b")
            a.start()
            defer { a.stop() }
            let key = RequestKey(digest: Digest128(high: 2, low: UInt64.random(in: 0...UInt64.max)))
            #expect(Self.won(try await a.claim(key))?.handle == .some(nil))
            let digest = Digest128(high: 0xABC, low: 0xDEF)
            let result = CachedResult(
                modelID: "fal-ai/flux/schnell",
                canonicalInput: Array(#"{"prompt":"x"}"#.utf8),
                outcome: .success(
                    result: ["images": [["url": .string("http://relay/files/\(digest.hex).png")]]],
                    inferenceSeconds: 1.5
                ),
                storedAt: .now(),
                expiresAt: Timestamp(secondsSinceEpoch: Timestamp.now().secondsSinceEpoch + 60)
            )
            #expect(try await b.result(key) == nil)
            // Told once the write landed: b reads it at once, and b may claim the key (a released it after publishing).
            await withCheckedContinuation { continuation in a.stored(key, result) { continuation.resume() } }
            #expect(try await b.result(key) == result)
            #expect(Self.won(try await b.claim(key))?.handle == .some(nil))
            #expect(try await b.holders(of: digest) == ["http://127.0.0.1:1/store-a"])
            // Another key's manifest is refused: the index's bytes are checked against the key asked for.
            let other = RequestKey(digest: Digest128(high: 3, low: 3))
            #expect(CachedResult(manifestBytes: result.manifestBytes(key: key)!, key: other) == nil)
        }
    }

    @Test func theRegistryServesARequestToAnyNode() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "registry-a")
            let b = try await node(database, "registry-b")
            a.start()
            defer { a.stop() }
            let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image)
            let input = try ModelInput(model: model, input: ["prompt": "registry"])
            let table = JobTable(fleet: a) { _ in NeverUpstream() }
            let key = RequestKey(digest: Digest128(high: 4, low: UInt64.random(in: 0...UInt64.max)))
            let request = table.submit(input, endpoint: EndpointID(model.id)!, key: key, ownerKeyID: "k1")
            // The answer waits for the registry (as it waits for the log): once recorded, b finds it.
            await withCheckedContinuation { done in request.recorded.whenDone { done.resume() } }
            let found = try #require(try await b.request(request.id))
            #expect(found.key == key && found.ownerKeyID == "k1" && found.nodeID == "registry-a" && !found.cancelled)
            #expect(found.modelID == model.id)
            let fields = try JSONValue(parsing: found.input).objectValue
            #expect(fields == input.fields)
            // A cancellation reaches the registry (and every node through its notice).
            _ = table.cancel(request.id, keyID: "k1")
            var cancelled = false
            for _ in 0..<200 where !cancelled {
                cancelled = try await b.request(request.id)?.cancelled ?? false
                if !cancelled { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(cancelled)
            #expect(try await b.request("no-such-id") == nil)
        }
    }

    @Test func aDeadNodesUndeliveredWebhooksAreTakenOverOnce() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "hook-a-\(UInt16.random(in: 0...9999))")
            let b = try await node(database, "hook-b-\(UInt16.random(in: 0...9999))")
            let c = try await node(database, "hook-c-\(UInt16.random(in: 0...9999))")
            a.start()
            defer { a.stop() }
            let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image)
            let table = JobTable(fleet: a) { _ in NeverUpstream() }
            func submit(_ prompt: String, webhook: String?) throws -> RelayRequest {
                let made = table.submit(
                    try ModelInput(model: model, input: ["prompt": .string(prompt)]),
                    endpoint: EndpointID(model.id)!,
                    key: RequestKey(digest: Digest128(high: 5, low: UInt64.random(in: 0...UInt64.max))),
                    ownerKeyID: nil,
                    webhook: webhook,
                    mayStartWork: { true }
                )
                return try #require(made)
            }
            let due = try submit("due", webhook: "https://hooks.example/a")
            let delivered = try submit("delivered", webhook: "https://hooks.example/b")
            _ = try submit("no hook", webhook: nil)
            for request in [due, delivered] {
                await withCheckedContinuation { done in request.recorded.whenDone { done.resume() } }
            }
            a.webhookSettled(requestID: delivered.id)
            // While a beats, nobody takes its webhooks.
            #expect(try await b.takeOverOrphanedWebhooks().isEmpty)
            // a stops beating (its settled write has landed first: the ordered queue is drained by then).
            for _ in 0..<200 {
                let settled = try await database.perform("settled?") { client in
                    var done = false
                    for try await flag in try await client.query(
                        "SELECT webhook_done FROM relay_requests WHERE request_id = \(delivered.id)"
                    ).decode(Bool.self) {
                        done = flag
                    }
                    return done
                }
                if settled { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            a.stop()
            let stale = a.configuration.nodeID
            try await database.perform("age") { client in
                try await client.query(
                    "UPDATE relay_nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = \(stale)"
                )
            }
            let (takenByB, takenByC) = try await (b.takeOverOrphanedWebhooks(), c.takeOverOrphanedWebhooks())
            let taken = takenByB + takenByC
            #expect(taken.map(\.0.id) == [due.id], "only the undelivered webhook, and by one node")
            #expect(taken.first?.1 == "https://hooks.example/a")
            let again = try await b.takeOverOrphanedWebhooks() + c.takeOverOrphanedWebhooks()
            #expect(again.isEmpty)
        }
    }

    @Test func keysMadeInTheFleetAreListedAndRevoked() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let keys = ClusterKeys(database: database)
            try await keys.prepare()
            let id = "k" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
            try await keys.insert(.init(id: id, sha256Hex: "00ff", tier: "pro", created: "2026-12-06", revoked: false))
            #expect(try await keys.all().first { $0.id == id }?.revoked == false)
            #expect(try await keys.revoke(id: id))
            #expect(try await keys.all().first { $0.id == id }?.revoked == true)
            #expect(try await keys.revoke(id: "missing") == false)
        }
    }

    /// A claim row can go before its run's numbers stop mattering (a drain drops its node's claims; a release after a
    /// result): the next claim is a plain insert, and its run still numbers past every number the last run gave out.
    @Test func aClaimAfterADrainDroppedTheRowNumbersPastTheLastRun() async throws {
        let server = try Self.server.get()
        try await server.withDatabase { database in
            let a = try await node(database, "drop-a")
            let b = try await node(database, "drop-b")
            let key = RequestKey(digest: Digest128(high: 11, low: UInt64.random(in: 0...UInt64.max)))
            let first = try #require(Self.won(try await a.claim(key)))
            await a.leave()
            let next = try #require(Self.won(try await b.claim(key)), "a drained node's claim is free at once")
            #expect(next.numberFrom > first.numberFrom)
        }
    }

    /// A lookup that fails leaves no claim an earlier lookup won for its key to be taken: the job it starts asks the
    /// database (here one that does not answer), instead of running under a claim it may no longer hold.
    @Test func aFailedLookupForgetsAnEarlierFreshClaim() async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let database = try ClusterDatabase(url: "postgres://relay@127.0.0.1:1/x", logger: logger, timeout: .seconds(1))
        let pool = Task { await database.run() }
        defer { pool.cancel() }
        // A long lease: the memo's entries stay fresh for a fifth of it, well past the failed statement's second.
        var settings = ClusterNode.Configuration(nodeID: "gone", nodeURL: "http://127.0.0.1:1/gone")
        settings.lease = .seconds(60)
        let node = ClusterNode(database: database, configuration: settings, logger: logger)
        let key = RequestKey(digest: Digest128(high: 12, low: 12))
        node.freshClaims.withLock { $0.note(key, .won(handle: nil, numberFrom: 1), at: .now) }
        await #expect(throws: ClusterError.self) { _ = try await node.lookupOrClaim(key) }
        #expect(node.takeFreshClaim(key) == nil)
    }

    @Test func anUnreachableDatabaseFailsFastAndIsReported() async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        // Nothing listens on port 1.
        let database = try ClusterDatabase(url: "postgres://relay@127.0.0.1:1/x", logger: logger, timeout: .seconds(1))
        let pool = Task { await database.run() }
        defer { pool.cancel() }
        let started = ContinuousClock.now
        await #expect(throws: ClusterError.self) {
            try await database.perform("probe") { client in try await client.query("SELECT 1") }
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(!database.isAvailable)
    }

    @Test func databaseURLs() throws {
        let plain = try ClusterDatabase.configuration("postgres://relay:pw@db.example:6432/fleet")
        #expect(plain.host == "db.example" && plain.port == 6432 && plain.username == "relay")
        #expect(plain.password == "pw" && plain.database == "fleet")
        let defaults = try ClusterDatabase.configuration("postgresql://db/fleet?sslmode=disable")
        #expect(defaults.port == 5432 && defaults.username == "postgres")
        #expect(throws: ClusterError.self) { try ClusterDatabase.configuration("mysql://db/x") }
        #expect(throws: ClusterError.self) { try ClusterDatabase.configuration("postgres://db/x?sslmode=sometimes") }
    }
}

/// An upstream that never reports: the registry tests need a job, not a generation.
struct NeverUpstream: Upstream {
    struct Task: UpstreamTask {
        func cancel() {}
    }

    func start(_ job: Job) -> any UpstreamTask { Task() }
}
