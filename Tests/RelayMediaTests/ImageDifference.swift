import RelayMedia

/// Picture comparisons for the synthetic-content tests.
enum ImageDifference {
    /// Mean absolute difference per channel, 0 ... 255.
    static func mean(_ a: RGBImage, _ b: RGBImage) -> Double {
        precondition(a.pixels.count == b.pixels.count)
        var total = 0
        for index in a.pixels.indices {
            total += abs(Int(a.pixels[index]) - Int(b.pixels[index]))
        }
        return Double(total) / Double(a.pixels.count)
    }

    /// Standard deviation of all channel values: 0 for a flat image.
    static func spread(_ image: RGBImage) -> Double {
        let count = Double(image.pixels.count)
        let mean = image.pixels.reduce(0.0) { $0 + Double($1) } / count
        let variance = image.pixels.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / count
        return variance.squareRoot()
    }

    /// Number of distinct colours.
    static func colours(_ image: RGBImage) -> Int {
        var seen = Set<Int>()
        for index in Swift.stride(from: 0, to: image.pixels.count, by: 3) {
            let pixels = image.pixels
            seen.insert(Int(pixels[index]) << 16 | Int(pixels[index + 1]) << 8 | Int(pixels[index + 2]))
        }
        return seen.count
    }
}
