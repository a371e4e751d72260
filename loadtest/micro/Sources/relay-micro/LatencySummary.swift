/// Percentiles of a set of latencies (nearest-rank), in microseconds for printing.
struct LatencySummary {
    let count: Int
    let p50: Duration
    let p99: Duration
    let max: Duration

    init(_ samples: [Duration]) {
        let sorted = samples.sorted()
        count = sorted.count
        p50 = Self.rank(0.50, in: sorted)
        p99 = Self.rank(0.99, in: sorted)
        max = sorted.last ?? .zero
    }

    /// Nearest-rank percentile: the smallest sample with at least `fraction` of the samples at or below it.
    private static func rank(_ fraction: Double, in sorted: [Duration]) -> Duration {
        guard !sorted.isEmpty else { return .zero }
        let rank = Int((fraction * Double(sorted.count)).rounded(.up))
        return sorted[Swift.max(0, Swift.min(sorted.count - 1, rank - 1))]
    }
}

extension Duration {
    /// Microseconds with two decimals, for tables.
    var microsecondsText: String {
        let hundredths = (nanoseconds / 10).rounded()
        let whole = Int(hundredths) / 100
        let fraction = Int(hundredths) % 100
        return "\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
