/// Drawing primitives over a pixel buffer: integer blends with precomputed per-row and
/// per-column terms, through raw pointers, so debug builds stay fast enough for tests.
///
/// Only valid inside the `withUnsafeMutableBufferPointer` call that produced `pixels`.
struct Canvas {
    let pixels: UnsafeMutablePointer<UInt8>
    let width: Int
    let height: Int

    /// Fills rows `top ..< bottom` with one colour per row.
    func fillRows(_ top: Int, _ bottom: Int, color: (Int) -> Color) {
        var y = max(top, 0)
        let end = min(bottom, height)
        while y < end {
            let (r, g, b) = color(y).bytes
            let red = UInt8(r)
            let green = UInt8(g)
            let blue = UInt8(b)
            var p = pixels + y * width * 3
            let rowEnd = p + width * 3
            while p < rowEnd {
                p[0] = red
                p[1] = green
                p[2] = blue
                p += 3
            }
            y += 1
        }
    }

    /// Blends a radial shape toward `color`; `alpha` is 0 ... 256 at the profile's peak.
    func blendDisc(
        centerX: Double,
        centerY: Double,
        radius: Double,
        color: Color,
        alpha: Int,
        profile: [Int32]
    ) {
        guard radius >= 0.5, alpha > 0 else { return }
        let x0 = max(0, Int((centerX - radius).rounded(.down)))
        let x1 = min(width - 1, Int((centerX + radius).rounded(.up)))
        let y0 = max(0, Int((centerY - radius).rounded(.down)))
        let y1 = min(height - 1, Int((centerY + radius).rounded(.up)))
        guard x0 <= x1, y0 <= y1 else { return }
        // Squared distances in 1/16 px² units; index = d²/r² · 1024 by one multiply and shift.
        let scale = Int((Double(1 << 34) / (radius * radius * 16)).rounded())
        let dx2 = (x0...x1).map { x -> Int in
            let dx = Double(x) + 0.5 - centerX
            return Int(dx * dx * 16)
        }
        let (cr, cg, cb) = color.bytes
        profile.withUnsafeBufferPointer { table in
            dx2.withUnsafeBufferPointer { columns in
                let weights = table.baseAddress!
                let dxs = columns.baseAddress!
                var y = y0
                while y <= y1 {
                    let dy = Double(y) + 0.5 - centerY
                    let dy2 = Int(dy * dy * 16)
                    var p = pixels + (y * width + x0) * 3
                    var x = 0
                    let count = x1 - x0 + 1
                    while x < count {
                        let k = ((dy2 + dxs[x]) &* scale) >> 24
                        if k < 1024 {
                            let w = (Int(weights[k]) * alpha) >> 8
                            if w > 0 {
                                Self.blend(p, cr, cg, cb, w)
                            }
                        }
                        x += 1
                        p += 3
                    }
                    y += 1
                }
            }
        }
    }

    /// Blends a horizontal band: at column x it is centred on row `centers[x]` and reaches
    /// `halfWidths[x]` rows either side (both in 1/256 row units), shaped by `profile`.
    func blendBand(centers: [Int], halfWidths: [Int], color: Color, alpha: Int, profile: [Int32]) {
        precondition(centers.count == width && halfWidths.count == width)
        guard alpha > 0 else { return }
        var top = Int.max
        var bottom = Int.min
        var inverse = [Int](repeating: 0, count: width)
        for x in 0..<width {
            let half = max(halfWidths[x], 1)
            top = min(top, centers[x] - half)
            bottom = max(bottom, centers[x] + half)
            inverse[x] = (1024 << 16) / half
        }
        let y0 = max(0, top >> 8)
        let y1 = min(height - 1, bottom >> 8)
        guard y0 <= y1 else { return }
        let (cr, cg, cb) = color.bytes
        profile.withUnsafeBufferPointer { table in
            centers.withUnsafeBufferPointer { centerBuffer in
                inverse.withUnsafeBufferPointer { inverseBuffer in
                    let weights = table.baseAddress!
                    let mids = centerBuffer.baseAddress!
                    let inv = inverseBuffer.baseAddress!
                    var y = y0
                    while y <= y1 {
                        let row = y * 256 + 128
                        var p = pixels + y * width * 3
                        var x = 0
                        while x < width {
                            var d = row - mids[x]
                            if d < 0 { d = -d }
                            let k = (d &* inv[x]) >> 16
                            if k < 1024 {
                                let w = (Int(weights[k]) * alpha) >> 8
                                if w > 0 {
                                    Self.blend(p, cr, cg, cb, w)
                                }
                            }
                            x += 1
                            p += 3
                        }
                        y += 1
                    }
                }
            }
        }
    }

    /// Fills everything below a ridge line (`tops[x]` in 1/256 row units), anti-aliased at the
    /// edge, with a colour per row.
    func fillBelow(tops: [Int], color: (Int) -> Color) {
        precondition(tops.count == width)
        guard let highest = tops.min() else { return }
        let y0 = max(0, highest >> 8)
        guard y0 < height else { return }
        tops.withUnsafeBufferPointer { topBuffer in
            let edges = topBuffer.baseAddress!
            var y = y0
            while y < height {
                let (cr, cg, cb) = color(y).bytes
                let red = UInt8(cr)
                let green = UInt8(cg)
                let blue = UInt8(cb)
                let rowBottom = (y + 1) * 256
                var p = pixels + y * width * 3
                var x = 0
                while x < width {
                    // Coverage of this pixel by the region below the ridge, 0 ... 256.
                    let coverage = rowBottom - edges[x]
                    if coverage >= 256 {
                        p[0] = red
                        p[1] = green
                        p[2] = blue
                    } else if coverage > 0 {
                        Self.blend(p, cr, cg, cb, coverage)
                    }
                    x += 1
                    p += 3
                }
                y += 1
            }
        }
    }

    /// Blends a one-row streak from `x0` to `x1` that fades in and out at its ends.
    func blendStreak(y: Int, x0: Int, x1: Int, color: Color, alpha: Int) {
        guard y >= 0, y < height, alpha > 0 else { return }
        let start = max(0, x0)
        let end = min(width - 1, x1)
        guard start <= end else { return }
        let length = max(x1 - x0, 1)
        let (cr, cg, cb) = color.bytes
        var p = pixels + (y * width + start) * 3
        var x = start
        while x <= end {
            // Triangle ramp: full in the middle, zero at the ends.
            let t = ((x - x0) * 512) / length
            let ramp = t < 256 ? t : 512 - t
            let w = (ramp * alpha) >> 8
            if w > 0 {
                Self.blend(p, cr, cg, cb, w)
            }
            x += 1
            p += 3
        }
    }

    /// Blends one pixel toward `color` by `alpha` (0 ... 256).
    func blendPixel(x: Int, y: Int, color: Color, alpha: Int) {
        guard x >= 0, x < width, y >= 0, y < height, alpha > 0 else { return }
        let (cr, cg, cb) = color.bytes
        Self.blend(pixels + (y * width + x) * 3, cr, cg, cb, min(alpha, 256))
    }

    /// Darkens toward the corners. (No grain: even ±1 of noise makes PNGs 4× larger and
    /// encoding 2× slower.)
    func finish(vignette strength: Double) {
        // Separable: 256 at the centre, falling by `strength` at the edges, per axis.
        func profile(_ count: Int) -> [Int] {
            (0..<count).map { index in
                let t = (Double(index) + 0.5) / Double(count) * 2 - 1
                return Int(((1 - strength * t * t) * 256).rounded())
            }
        }
        let rows = profile(height)
        let columns = profile(width)
        columns.withUnsafeBufferPointer { columnBuffer in
            let shade = columnBuffer.baseAddress!
            var y = 0
            while y < height {
                let rowShade = rows[y]
                var p = pixels + y * width * 3
                var x = 0
                while x < width {
                    // factor ≤ 256, so the products stay within a byte.
                    let factor = (rowShade * shade[x]) >> 8
                    p[0] = UInt8(truncatingIfNeeded: (Int(p[0]) * factor) >> 8)
                    p[1] = UInt8(truncatingIfNeeded: (Int(p[1]) * factor) >> 8)
                    p[2] = UInt8(truncatingIfNeeded: (Int(p[2]) * factor) >> 8)
                    x += 1
                    p += 3
                }
                y += 1
            }
        }
    }

    /// p ← p + (c − p)·w/256 per channel; stays within [min(p, c), max(p, c)].
    @inline(__always)
    private static func blend(_ p: UnsafeMutablePointer<UInt8>, _ r: Int, _ g: Int, _ b: Int, _ w: Int) {
        let pr = Int(p[0])
        let pg = Int(p[1])
        let pb = Int(p[2])
        p[0] = UInt8(truncatingIfNeeded: pr + (((r - pr) * w) >> 8))
        p[1] = UInt8(truncatingIfNeeded: pg + (((g - pg) * w) >> 8))
        p[2] = UInt8(truncatingIfNeeded: pb + (((b - pb) * w) >> 8))
    }
}
