/// Soft-edge weight tables, 1025 entries of 0 ... 256, indexed by a distance scaled to 0 ... 1024.
/// Radial profiles are indexed by d²/r² (no square root per pixel); band profiles by |d|/h.
enum Falloff {
    static let size = 1024

    /// A solid disc with a short smooth rim (suns, moons).
    static let disc = table { u in 1 - Trig.smoothstep(0.84, 1.0, u.squareRoot()) }
    /// A wide, soft glow that fades to nothing at the radius.
    static let glow = table { u in (1 - u) * (1 - u) * (1 - u) }
    /// A bokeh-like orb: a flat middle with a soft edge.
    static let orb = table { u in 1 - Trig.smoothstep(0.55, 1.0, u.squareRoot()) }
    /// A smooth bump across a band's thickness.
    static let bump = table { t in (1 - t * t) * (1 - t * t) }

    private static func table(_ weight: (Double) -> Double) -> [Int32] {
        (0...size).map { index in
            let value = weight(Double(index) / Double(size))
            return Int32((min(max(value, 0), 1) * 256).rounded())
        }
    }
}
