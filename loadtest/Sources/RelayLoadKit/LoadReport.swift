public import Foundation

/// The result of one run, as printed for people and as JSON for scripts (compare.sh).
public struct LoadReport: Codable, Sendable {
    /// Latency percentiles in milliseconds.
    public struct Latency: Codable, Sendable {
        public var p50: Double
        public var p90: Double
        public var p99: Double
        public var p99_9: Double
        public var max: Double
        public var mean: Double
        public var min: Double
    }

    public var scenario: String
    public var url: String
    public var connections: Int
    public var threads: Int
    public var warmupSeconds: Double
    /// Length of the measured window.
    public var durationSeconds: Double
    public var responses: Int
    public var requestsPerSecond: Double
    public var bytes: Int
    public var bytesPerSecond: Double
    public var latencyMs: Latency
    public var statuses: [String: Int]
    public var errors: [String: Int]
    public var errorTotal: Int
    /// Counts of the watched header's values (x-relay-cache outcomes for submit-mix).
    public var watchedHeader: String?
    public var watched: [String: Int]
    public var connectionsOpened: Int
    public var startedAt: String
    /// CPU seconds (user + system) relay-load itself used in the measured window.
    public var clientCPUSeconds: Double = 0

    enum CodingKeys: String, CodingKey {
        case scenario, url, connections, threads
        case warmupSeconds = "warmup_s"
        case durationSeconds = "duration_s"
        case responses
        case requestsPerSecond = "requests_per_sec"
        case bytes
        case bytesPerSecond = "bytes_per_sec"
        case latencyMs = "latency_ms"
        case statuses, errors
        case errorTotal = "error_total"
        case watchedHeader = "watched_header"
        case watched
        case connectionsOpened = "connections_opened"
        case startedAt = "started_at"
        case clientCPUSeconds = "client_cpu_s"
    }

    public init(
        scenario: String,
        configuration: LoadConfiguration,
        stats: LoadStats,
        durationSeconds: Double,
        startedAt: Date
    ) {
        self.scenario = scenario
        url = configuration.plan.url.description
        connections = configuration.connections
        threads = configuration.threads
        warmupSeconds = configuration.warmupSeconds
        self.durationSeconds = durationSeconds
        responses = stats.responses
        requestsPerSecond = durationSeconds > 0 ? Double(stats.responses) / durationSeconds : 0
        bytes = stats.bytes
        bytesPerSecond = durationSeconds > 0 ? Double(stats.bytes) / durationSeconds : 0
        let histogram = stats.latency
        func ms(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }
        if histogram.totalCount > 0 {
            latencyMs = Latency(
                p50: ms(histogram.valueAtPercentile(50)),
                p90: ms(histogram.valueAtPercentile(90)),
                p99: ms(histogram.valueAtPercentile(99)),
                p99_9: ms(histogram.valueAtPercentile(99.9)),
                max: ms(histogram.max),
                mean: (histogram.mean).rounded() / 1000,
                min: ms(histogram.min)
            )
        } else {
            latencyMs = Latency(p50: 0, p90: 0, p99: 0, p99_9: 0, max: 0, mean: 0, min: 0)
        }
        statuses = Dictionary(uniqueKeysWithValues: stats.statuses.map { (String($0.key), $0.value) })
        errors = stats.errors
        errorTotal = stats.errorCount
        watchedHeader = configuration.watchedHeader
        watched = stats.watched
        connectionsOpened = stats.connectionsOpened
        let formatter = ISO8601DateFormatter()
        self.startedAt = formatter.string(from: startedAt)
    }

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// A wrk-like summary for people.
    public func text() -> String {
        var lines: [String] = []
        lines.append("\(scenario) \(url)")
        lines.append(
            "  \(connections) connections on \(threads) threads, \(format(warmupSeconds, 1)) s warm-up, "
                + "\(format(durationSeconds, 2)) s measured"
        )
        lines.append(
            "  \(responses) responses, \(format(requestsPerSecond, 1)) req/s, "
                + "\(Self.formatBytes(bytesPerSecond))/s (\(Self.formatBytes(Double(bytes))) total)"
        )
        lines.append(
            "  latency ms  p50 \(format(latencyMs.p50, 3))  p90 \(format(latencyMs.p90, 3))  p99 \(format(latencyMs.p99, 3))"
                + "  p99.9 \(format(latencyMs.p99_9, 3))  max \(format(latencyMs.max, 3))  mean \(format(latencyMs.mean, 3))"
        )
        lines.append(
            "  statuses    "
                + statuses.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        )
        if let watchedHeader {
            lines.append(
                "  \(watchedHeader)  "
                    + watched.sorted { $0.value > $1.value }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
            )
        }
        lines.append(
            "  errors      \(errorTotal)"
                + (errors.isEmpty
                    ? ""
                    : " (" + errors.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
                        + ")")
        )
        lines.append("  connections opened \(connectionsOpened), relay-load CPU \(format(clientCPUSeconds, 2)) s")
        return lines.joined(separator: "\n")
    }

    private func format(_ value: Double, _ decimals: Int) -> String {
        String(format: "%.\(decimals)f", value)
    }

    static func formatBytes(_ value: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB"]
        var value = value
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return String(format: unit == 0 ? "%.0f" : "%.2f", value) + " " + units[unit]
    }
}
