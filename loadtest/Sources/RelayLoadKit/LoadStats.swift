public import Histogram

/// What the workers counted during the measured window; each worker keeps its own and they are merged at the end.
public struct LoadStats: Sendable {
    /// Latency of every complete response (send → last byte; connect → last byte for one connection per request),
    /// in microseconds.
    public var latency = Histogram<UInt64>(
        lowestDiscernibleValue: 1,
        highestTrackableValue: 3_600_000_000,
        numberOfSignificantValueDigits: .three
    )
    /// Complete responses, whatever their status.
    public var responses = 0
    /// Bytes of those responses (heads, bodies and framing, after TLS).
    public var bytes = 0
    /// Responses by status code.
    public var statuses: [Int: Int] = [:]
    /// Failures by kind: `connect`, `tls`, `reset`, `refused`, `pipe`, `closed`, `timeout`, `parse`, `channel`, `io`, `http_<status>`.
    public var errors: [String: Int] = [:]
    /// Values of the watched header (x-relay-cache for submit-mix); `(none)` when a response lacked it.
    public var watched: [String: Int] = [:]
    /// Connections that completed their TCP (and TLS) setup.
    public var connectionsOpened = 0

    public init() {}

    mutating func record(_ response: ResponseSummary, latencyNanoseconds: UInt64, watching: Bool) {
        responses += 1
        bytes += response.bytes
        _ = latency.record(max(1, latencyNanoseconds / 1000))
        statuses[response.status, default: 0] += 1
        if !(200..<400).contains(response.status) {
            errors["http_\(response.status)", default: 0] += 1
        }
        if watching {
            watched[response.watchedValue ?? "(none)", default: 0] += 1
        }
    }

    mutating func recordError(_ kind: String) {
        errors[kind, default: 0] += 1
    }

    public mutating func merge(_ other: LoadStats) {
        latency.add(other.latency)
        responses += other.responses
        bytes += other.bytes
        connectionsOpened += other.connectionsOpened
        statuses.merge(other.statuses, uniquingKeysWith: +)
        errors.merge(other.errors, uniquingKeysWith: +)
        watched.merge(other.watched, uniquingKeysWith: +)
    }

    public var errorCount: Int { errors.values.reduce(0, +) }
}
