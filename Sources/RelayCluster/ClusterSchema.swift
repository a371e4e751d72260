import Logging
import PostgresNIO

/// The fleet's tables, created and migrated by the relay itself. Each migration runs once, in a transaction that
/// first takes a transaction-scoped advisory lock, so nodes that start together apply them one after another and
/// every node but the first finds them applied.
enum ClusterSchema {
    /// The advisory lock every migration takes (an arbitrary constant: "MRLY").
    static let lock: Int64 = 0x4D52_4C59

    /// In order; a migration is never edited once released, only followed by another.
    static let migrations: [(version: Int, statements: [String])] = [
        (
            1,
            [
                """
                CREATE TABLE relay_settings (
                    name text PRIMARY KEY,
                    value bytea NOT NULL)
                """,
                """
                CREATE TABLE relay_nodes (
                    node_id text PRIMARY KEY,
                    node_url text NOT NULL,
                    started_at timestamptz NOT NULL DEFAULT now(),
                    heartbeat_at timestamptz NOT NULL DEFAULT now(),
                    leaving boolean NOT NULL DEFAULT false)
                """,
                """
                CREATE TABLE relay_requests (
                    request_id text PRIMARY KEY,
                    endpoint text NOT NULL,
                    model_id text NOT NULL,
                    request_key text NOT NULL,
                    input bytea NOT NULL,
                    owner_key_id text,
                    node_id text NOT NULL,
                    created_at double precision NOT NULL,
                    cancelled boolean NOT NULL DEFAULT false)
                """,
                "CREATE INDEX relay_requests_created ON relay_requests (created_at)",
                """
                CREATE TABLE relay_claims (
                    request_key text PRIMARY KEY,
                    node_id text NOT NULL,
                    lease_until timestamptz NOT NULL)
                """,
                """
                CREATE TABLE relay_results (
                    request_key text PRIMARY KEY,
                    manifest bytea NOT NULL,
                    expires_at double precision NOT NULL,
                    node_id text NOT NULL)
                """,
                """
                CREATE TABLE relay_blobs (
                    digest text NOT NULL,
                    node_id text NOT NULL,
                    PRIMARY KEY (digest, node_id))
                """,
                """
                CREATE TABLE relay_api_keys (
                    key_id text PRIMARY KEY,
                    secret_hash text NOT NULL,
                    tier text NOT NULL,
                    created text NOT NULL,
                    revoked boolean NOT NULL DEFAULT false)
                """,
            ]
        ),
        (
            2,
            [
                "ALTER TABLE relay_requests ADD COLUMN webhook_url text",
                "ALTER TABLE relay_requests ADD COLUMN webhook_done boolean NOT NULL DEFAULT false",
                """
                CREATE INDEX relay_requests_webhooks_due ON relay_requests (node_id)
                WHERE webhook_url IS NOT NULL AND NOT webhook_done AND NOT cancelled
                """,
            ]
        ),
        (3, ["ALTER TABLE relay_claims ADD COLUMN handle text"]),
        (
            4,
            [
                "ALTER TABLE relay_api_keys ADD COLUMN budget_daily double precision",
                "ALTER TABLE relay_api_keys ADD COLUMN budget_monthly double precision",
            ]
        ),
        (5, ["ALTER TABLE relay_requests ADD COLUMN no_cache boolean NOT NULL DEFAULT false"]),
    ]

    /// Applies every migration the database lacks, all in one transaction under the advisory lock; returns the
    /// versions this call applied (none when another node got there first).
    static func migrate(_ database: ClusterDatabase) async throws(ClusterError) -> [Int] {
        let logger = database.logger
        return try await database.perform("migrate", timeout: .seconds(30)) { client in
            try await client.withTransaction(logger: logger) { connection -> [Int] in
                try await connection.query("SELECT pg_advisory_xact_lock(\(lock))", logger: logger)
                try await connection.query(
                    """
                    CREATE TABLE IF NOT EXISTS relay_schema_migrations (
                        version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                    """,
                    logger: logger
                )
                var present: Set<Int> = []
                for try await version in try await connection.query(
                    "SELECT version FROM relay_schema_migrations",
                    logger: logger
                ).decode(Int.self) {
                    present.insert(version)
                }
                var applied: [Int] = []
                for migration in migrations where !present.contains(migration.version) {
                    for statement in migration.statements {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                    try await connection.query(
                        "INSERT INTO relay_schema_migrations (version) VALUES (\(migration.version))",
                        logger: logger
                    )
                    applied.append(migration.version)
                }
                return applied
            }
        }
    }
}
