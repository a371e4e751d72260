import Logging
public import RelayCluster
public import RelayCore

/// `media-relay keys … --cluster-database-url`: the fleet's key table, changed from the command line. Every node
/// copies it within a second (`ClusterWiring.start`).
public enum FleetKeyTable {
    /// Makes a key in the fleet's table; returns the key (shown once) and its row.
    public static func create(
        url: String,
        tier: String,
        budget: SpendBudget = SpendBudget()
    ) async throws -> (key: String, row: ClusterKeys.Row) {
        let (key, entry) = try APIKeyStore.makeKey(tier: tier)
        let row = ClusterKeys.Row(
            id: entry.id,
            sha256Hex: APIKeyStore.hex(entry.hash),
            tier: entry.tier,
            created: entry.created,
            revoked: false,
            budgetDaily: budget.daily,
            budgetMonthly: budget.monthly
        )
        try await withKeys(url) { keys in try await keys.insert(row) }
        return (key, row)
    }

    public static func list(url: String) async throws -> [ClusterKeys.Row] {
        try await withKeys(url) { keys in try await keys.all() }
    }

    /// Sets a key's fleet-wide caps; false when no key has this id.
    public static func setBudget(url: String, id: String, _ budget: SpendBudget) async throws -> Bool {
        try await withKeys(url) { keys in try await keys.setBudget(id: id, daily: budget.daily, monthly: budget.monthly)
        }
    }

    /// false when no key has this id.
    public static func revoke(url: String, id: String) async throws -> Bool {
        try await withKeys(url) { keys in try await keys.revoke(id: id) }
    }

    private static func withKeys<Result: Sendable>(
        _ url: String,
        _ body: (ClusterKeys) async throws -> Result
    ) async throws -> Result {
        var logger = Logger(label: "media-relay-keys")
        logger.logLevel = .error
        let database = try ClusterDatabase(url: url, logger: logger, timeout: .seconds(10))
        let pool = Task { await database.run() }
        defer { pool.cancel() }
        let keys = ClusterKeys(database: database)
        try await keys.prepare()
        return try await body(keys)
    }
}
