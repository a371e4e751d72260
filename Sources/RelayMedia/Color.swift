/// A colour with components in 0 ... 255, used while planning a picture (never per pixel).
struct Color: Sendable {
    var red: Double
    var green: Double
    var blue: Double

    /// From hue (turns, any real), saturation and value (0 ... 1).
    static func hsv(_ hue: Double, _ saturation: Double, _ value: Double) -> Color {
        let s = min(max(saturation, 0), 1)
        let v = min(max(value, 0), 1) * 255
        let h = (hue - hue.rounded(.down)) * 6
        let sector = min(Int(h), 5)
        let f = h - Double(sector)
        let p = v * (1 - s)
        let q = v * (1 - s * f)
        let t = v * (1 - s * (1 - f))
        switch sector {
        case 0: return Color(red: v, green: t, blue: p)
        case 1: return Color(red: q, green: v, blue: p)
        case 2: return Color(red: p, green: v, blue: t)
        case 3: return Color(red: p, green: q, blue: v)
        case 4: return Color(red: t, green: p, blue: v)
        default: return Color(red: v, green: p, blue: q)
        }
    }

    /// Linear mix: `amount` 0 gives `self`, 1 gives `other`.
    func mixed(with other: Color, _ amount: Double) -> Color {
        Color(
            red: red + (other.red - red) * amount,
            green: green + (other.green - green) * amount,
            blue: blue + (other.blue - blue) * amount
        )
    }

    func scaled(_ factor: Double) -> Color {
        Color(red: red * factor, green: green * factor, blue: blue * factor)
    }

    /// Rounded and clamped to bytes, as `Int`s for the integer blend loops.
    var bytes: (red: Int, green: Int, blue: Int) {
        func byte(_ value: Double) -> Int { Int(min(max(value, 0), 255).rounded()) }
        return (byte(red), byte(green), byte(blue))
    }

    /// Moves hue `from` toward hue `to` by `amount` along the shorter way round the circle.
    static func hue(_ from: Double, toward to: Double, _ amount: Double) -> Double {
        var delta = to - from
        delta -= delta.rounded()
        return from + delta * amount
    }
}
