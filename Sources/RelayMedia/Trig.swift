/// Sine and friends from `+ - * /` only, so results are bit-identical on every platform
/// (libm's `sin` may differ in the last place between Glibc and Darwin).
enum Trig {
    static let twoPi = 6.283_185_307_179_586

    /// Sine, to about 1e-7: range-reduced to [-π/2, π/2], then the Taylor series to x¹¹.
    static func sin(_ x: Double) -> Double {
        var r = x - (x / twoPi).rounded() * twoPi
        if r > Double.pi / 2 {
            r = Double.pi - r
        } else if r < -Double.pi / 2 {
            r = -Double.pi - r
        }
        let r2 = r * r
        return r * (1 - r2 / 6 * (1 - r2 / 20 * (1 - r2 / 42 * (1 - r2 / 72 * (1 - r2 / 110)))))
    }

    static func cos(_ x: Double) -> Double {
        sin(x + Double.pi / 2)
    }

    /// Hermite smoothstep of `x` between `edge0` and `edge1` (either order).
    static func smoothstep(_ edge0: Double, _ edge1: Double, _ x: Double) -> Double {
        let t = min(max((x - edge0) / (edge1 - edge0), 0), 1)
        return t * t * (3 - 2 * t)
    }
}
