import PostgresNIO

/// The fleet's API keys (hashes only), in PostgreSQL: the CLI writes them there, and every node copies the table
/// into its own key file on each change (a `keys` notice), so a key made or revoked anywhere holds everywhere within
/// a second, and a node keeps authenticating while the database is away.
public struct ClusterKeys: Sendable {
    /// One key as the table holds it: the same fields as a node's key file.
    public struct Row: Sendable, Hashable {
        public var id: String
        public var sha256Hex: String
        public var tier: String
        public var created: String
        public var revoked: Bool
        /// Spending caps for the whole fleet (each node enforces its share).
        public var budgetDaily: Double?
        public var budgetMonthly: Double?

        public init(
            id: String,
            sha256Hex: String,
            tier: String,
            created: String,
            revoked: Bool,
            budgetDaily: Double? = nil,
            budgetMonthly: Double? = nil
        ) {
            self.id = id
            self.sha256Hex = sha256Hex
            self.tier = tier
            self.created = created
            self.revoked = revoked
            self.budgetDaily = budgetDaily
            self.budgetMonthly = budgetMonthly
        }
    }

    let database: ClusterDatabase

    public init(database: ClusterDatabase) {
        self.database = database
    }

    public func all() async throws(ClusterError) -> [Row] {
        try await database.perform("list keys") { client -> [Row] in
            var rows: [Row] = []
            for try await (id, hash, tier, created, revoked, daily, monthly) in try await client.query(
                """
                SELECT key_id, secret_hash, tier, created, revoked, budget_daily, budget_monthly
                FROM relay_api_keys ORDER BY created, key_id
                """
            ).decode((String, String, String, String, Bool, Double?, Double?).self) {
                rows.append(
                    Row(
                        id: id,
                        sha256Hex: hash,
                        tier: tier,
                        created: created,
                        revoked: revoked,
                        budgetDaily: daily,
                        budgetMonthly: monthly
                    )
                )
            }
            return rows
        }
    }

    public func insert(_ row: Row) async throws(ClusterError) {
        try await database.perform("create key") { client in
            try await client.query(
                """
                INSERT INTO relay_api_keys (key_id, secret_hash, tier, created, revoked, budget_daily, budget_monthly)
                VALUES (\(row.id), \(row.sha256Hex), \(row.tier), \(row.created), \(row.revoked),
                        \(row.budgetDaily), \(row.budgetMonthly))
                """
            )
            try await client.query("SELECT pg_notify('relay_events', 'keys')")
        }
    }

    /// Sets a key's fleet-wide caps (nil: none); false when no such key exists.
    public func setBudget(id: String, daily: Double?, monthly: Double?) async throws(ClusterError) -> Bool {
        try await database.perform("set key budget") { client -> Bool in
            var found = false
            for try await _ in try await client.query(
                """
                UPDATE relay_api_keys SET budget_daily = \(daily), budget_monthly = \(monthly)
                WHERE key_id = \(id) RETURNING key_id
                """
            ).decode(String.self) {
                found = true
            }
            try await client.query("SELECT pg_notify('relay_events', 'keys')")
            return found
        }
    }

    /// Revokes by id; false when no such key exists.
    public func revoke(id: String) async throws(ClusterError) -> Bool {
        try await database.perform("revoke key") { client -> Bool in
            var found = false
            for try await _ in try await client.query(
                "UPDATE relay_api_keys SET revoked = true WHERE key_id = \(id) RETURNING key_id"
            ).decode(String.self) {
                found = true
            }
            try await client.query("SELECT pg_notify('relay_events', 'keys')")
            return found
        }
    }

    /// Applies the schema (a CLI run against a fresh database).
    public func prepare() async throws(ClusterError) {
        _ = try await ClusterSchema.migrate(database)
    }
}
