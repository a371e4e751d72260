import Foundation
public import Logging
public import PostgresNIO
import Synchronization

/// The fleet's PostgreSQL, reached through postgres-nio's pooled client. Every call is bounded in time: a database
/// that does not answer makes the call fail (`ClusterError.unavailable`) instead of holding its caller, and marks the
/// database unavailable until a call succeeds again (readiness and submissions read `isAvailable`).
public final class ClusterDatabase: Sendable {
    public let client: PostgresClient
    /// A second, small pool whose sessions commit without waiting for the WAL flush (`synchronous_commit = off`), for
    /// the fleet's soft state only: claims and their leases, heartbeats. A database crash may lose the last few
    /// hundred milliseconds of those, which costs what a lapsed lease costs (a claim taken again, a node seen late),
    /// never a request, a result or a key; in exchange a submission's claim does not wait for an fsync. What other
    /// sessions see does not change: an asynchronous commit is visible at once.
    public let leases: PostgresClient
    let logger: Logger
    /// How long one statement (with its wait for a connection) may take.
    let timeout: Duration
    private let available = Atomic<Bool>(true)

    /// `url`: `postgres://user[:password]@host[:port]/database` (also `postgresql://`; `?sslmode=disable|prefer|require`).
    public init(url: String, logger: Logger, timeout: Duration = .seconds(2)) throws(ClusterError) {
        let configuration = try Self.configuration(url)
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        var leases = configuration
        leases.options.additionalStartupParameters.append(("synchronous_commit", "off"))
        leases.options.maximumConnections = 4
        self.leases = PostgresClient(configuration: leases, backgroundLogger: logger)
        self.logger = logger
        self.timeout = timeout
    }

    /// Whether the last statement reached the database.
    public var isAvailable: Bool { available.load(ordering: .relaxed) }

    /// Runs the pool until the task is cancelled (start it before the first statement).
    public func run() async {
        async let durable: Void = client.run()
        async let soft: Void = leases.run()
        _ = await (durable, soft)
    }

    /// Runs `body` with the pool, bounded by `timeout`; a failure to reach the database marks it unavailable.
    @discardableResult
    /// `soft`: the statement writes only soft state (claims, leases, heartbeats) and runs on `leases`.
    public func perform<Result: Sendable>(
        _ what: String,
        timeout: Duration? = nil,
        soft: Bool = false,
        _ body: @escaping @Sendable (PostgresClient) async throws -> Result
    ) async throws(ClusterError) -> Result {
        let limit = timeout ?? self.timeout
        let client = soft ? self.leases : self.client
        do {
            let result = try await withThrowingTaskGroup(of: Result?.self) { group in
                group.addTask { try await body(client) }
                group.addTask {
                    try await Task.sleep(for: limit)
                    return nil
                }
                guard let first = try await group.next(), let value = first else {
                    group.cancelAll()
                    throw ClusterError.unavailable("\(what): no answer from the database within \(limit)")
                }
                group.cancelAll()
                return value
            }
            available.store(true, ordering: .relaxed)
            return result
        } catch let error as ClusterError {
            available.store(false, ordering: .relaxed)
            logger.debug("cluster database call failed", metadata: ["call": "\(what)", "error": "\(error)"])
            throw error
        } catch let error as PSQLError where error.code == .server {
            // The database answered: the statement itself was refused.
            available.store(true, ordering: .relaxed)
            throw ClusterError.refused("\(what): \(error.serverInfo?[.message] ?? "refused")")
        } catch {
            available.store(false, ordering: .relaxed)
            logger.debug("cluster database call failed", metadata: ["call": "\(what)", "error": "\(error)"])
            throw ClusterError.unavailable("\(what): \(String(reflecting: error).prefix(200))")
        }
    }

    /// Parses a database URL into postgres-nio's configuration.
    static func configuration(_ url: String) throws(ClusterError) -> PostgresClient.Configuration {
        guard let parts = URLComponents(string: url), ["postgres", "postgresql"].contains(parts.scheme ?? ""),
            let host = parts.host, !host.isEmpty
        else {
            throw ClusterError.configuration(
                "cluster_database_url must look like postgres://user[:password]@host[:port]/database, not \(url)"
            )
        }
        let database = parts.path.hasPrefix("/") ? String(parts.path.dropFirst()) : parts.path
        let mode = parts.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
        let tls: PostgresClient.Configuration.TLS
        switch mode {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        default: throw ClusterError.configuration("unknown sslmode \(mode) in cluster_database_url")
        }
        var configuration = PostgresClient.Configuration(
            host: host,
            port: parts.port ?? 5432,
            username: parts.user ?? "postgres",
            password: parts.password,
            database: database.isEmpty ? nil : database,
            tls: tls
        )
        configuration.options.connectTimeout = .seconds(2)
        configuration.options.maximumConnections = 16
        configuration.options.minimumConnections = 1
        configuration.options.keepAliveBehavior = .init(frequency: .seconds(5))
        return configuration
    }
}

/// Why a fleet call failed.
public enum ClusterError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The database could not be reached (or did not answer in time).
    case unavailable(String)
    /// The database answered and refused the statement.
    case refused(String)
    /// A setting the fleet cannot start with.
    case configuration(String)
    /// A peer node could not be reached or broke off.
    case peer(String)

    public var description: String {
        switch self {
        case .unavailable(let text): "cluster database unavailable: \(text)"
        case .refused(let text): "cluster database refused: \(text)"
        case .configuration(let text): text
        case .peer(let text): "peer node: \(text)"
        }
    }
}
