import Foundation

/// Zipf's law over `count` ranks: rank k (0-based) is drawn with probability proportional to 1 / (k + 1)^s.
///
/// A few prompts dominate, as in real traffic to a cache: most submissions repeat a popular prompt (a hit or a
/// join of one in flight) and the tail keeps producing the occasional miss.
public struct ZipfDistribution: Sendable {
    public let count: Int
    public let exponent: Double
    /// cumulative[k] = P(rank <= k); the last is 1.
    private let cumulative: [Double]

    public init(count: Int, exponent: Double) {
        precondition(count > 0, "a Zipf distribution needs at least one rank")
        self.count = count
        self.exponent = exponent
        var weights = (1...count).map { 1 / pow(Double($0), exponent) }
        let total = weights.reduce(0, +)
        var running = 0.0
        for index in weights.indices {
            running += weights[index] / total
            weights[index] = running
        }
        weights[count - 1] = 1
        cumulative = weights
    }

    /// Probability of `rank`.
    public func probability(of rank: Int) -> Double {
        rank == 0 ? cumulative[0] : cumulative[rank] - cumulative[rank - 1]
    }

    public func sample(using generator: inout some RandomNumberGenerator) -> Int {
        let u = Double.random(in: 0..<1, using: &generator)
        var low = 0
        var high = count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] > u { high = mid } else { low = mid + 1 }
        }
        return low
    }
}
