/// Degrades a finished picture into what a diffusion model shows part-way: coarse blocks of the
/// final colours under seeded noise, both fading as progress reaches 1. The noise depends only
/// on the seed, so successive previews of one job refine the same "latent".
enum DiffusionPreview {
    /// - Parameter progress: 0 (pure noise) ..< 1; at 1 or more the image is left alone.
    static func apply(to image: inout RGBImage, seed: UInt64, progress: Double) {
        guard progress < 1 else { return }
        let remaining = 1 - max(progress, 0)
        let width = image.width
        let height = image.height
        // Blocks up to 1/20 of the shorter side at progress 0, shrinking to single pixels.
        let block = max(1, Int((remaining * remaining * Double(min(width, height)) / 20).rounded()))
        let noiseWeight = Int((remaining * remaining.squareRoot() * 256).rounded())

        var random = SeededGenerator(seed: seed ^ 0x4E4F_4953_45)
        var noise = [UInt8](repeating: 0, count: 65_536)
        for index in Swift.stride(from: 0, to: noise.count, by: 8) {
            var word = random.next()
            for offset in 0..<8 {
                noise[index + offset] = UInt8(truncatingIfNeeded: word)
                word >>= 8
            }
        }
        let rowOffsets = (0..<height).map { _ in random.below(65_536) }

        image.pixels.withUnsafeMutableBufferPointer { buffer in
            let pixels = buffer.baseAddress!
            if block > 1 {
                averageBlocks(pixels, width: width, height: height, block: block)
            }
            noise.withUnsafeBufferPointer { noiseBuffer in
                let grains = noiseBuffer.baseAddress!
                let keep = 256 - noiseWeight
                var y = 0
                while y < height {
                    var p = pixels + y * width * 3
                    let end = p + width * 3
                    var n = rowOffsets[y]
                    while p < end {
                        let red = Int(grains[n & 0xFFFF]) * noiseWeight
                        let green = Int(grains[(n + 1) & 0xFFFF]) * noiseWeight
                        let blue = Int(grains[(n + 2) & 0xFFFF]) * noiseWeight
                        p[0] = UInt8(truncatingIfNeeded: (Int(p[0]) * keep + red) >> 8)
                        p[1] = UInt8(truncatingIfNeeded: (Int(p[1]) * keep + green) >> 8)
                        p[2] = UInt8(truncatingIfNeeded: (Int(p[2]) * keep + blue) >> 8)
                        n += 3
                        p += 3
                    }
                    y += 1
                }
            }
        }
    }

    /// Replaces each `block`×`block` tile (smaller at the right and bottom edges) with its mean.
    private static func averageBlocks(
        _ pixels: UnsafeMutablePointer<UInt8>,
        width: Int,
        height: Int,
        block: Int
    ) {
        let tiles = (width + block - 1) / block
        var sums = [Int](repeating: 0, count: tiles * 3)
        sums.withUnsafeMutableBufferPointer { sumBuffer in
            let sum = sumBuffer.baseAddress!
            var top = 0
            while top < height {
                let bottom = min(top + block, height)
                sumBuffer.update(repeating: 0)
                var y = top
                while y < bottom {
                    var p = pixels + y * width * 3
                    var tile = 0
                    while tile < tiles {
                        let end = min((tile + 1) * block, width)
                        var x = tile * block
                        while x < end {
                            sum[tile * 3] += Int(p[0])
                            sum[tile * 3 + 1] += Int(p[1])
                            sum[tile * 3 + 2] += Int(p[2])
                            x += 1
                            p += 3
                        }
                        tile += 1
                    }
                    y += 1
                }
                var tile = 0
                while tile < tiles {
                    let start = tile * block
                    let end = min(start + block, width)
                    let count = (end - start) * (bottom - top)
                    let red = UInt8(truncatingIfNeeded: sum[tile * 3] / count)
                    let green = UInt8(truncatingIfNeeded: sum[tile * 3 + 1] / count)
                    let blue = UInt8(truncatingIfNeeded: sum[tile * 3 + 2] / count)
                    y = top
                    while y < bottom {
                        var p = pixels + (y * width + start) * 3
                        let rowEnd = pixels + (y * width + end) * 3
                        while p < rowEnd {
                            p[0] = red
                            p[1] = green
                            p[2] = blue
                            p += 3
                        }
                        y += 1
                    }
                    tile += 1
                }
                top = bottom
            }
        }
    }
}
