/// The colours of one picture. Colour and mood words in the prompt steer the hue and the
/// light ("forest" greens, "dusk" a deep sky over a warm horizon); the prompt's hash decides
/// the rest, and the seed only nudges the hue, so one prompt keeps a recognisable look.
struct Palette: Sendable {
    enum Mood: Sendable {
        case day, twilight, night
    }

    let mood: Mood
    let skyTop: Color
    let skyHorizon: Color
    /// The sun, or the moon at night.
    let sun: Color
    let glow: Color
    /// Far and near land; layers in between are mixed, hazier with distance.
    let farLand: Color
    let nearLand: Color
    let waterTop: Color
    let waterBottom: Color
    let cloud: Color
    let accents: [Color]

    init(prompt: String, seed: UInt64) {
        var random = SeededGenerator(seed: StableHash.hash(prompt, seed: 0x5041_4C45_5454_4531))
        let words = Self.words(of: prompt)

        var hue = random.unit()
        if let named = words.lazy.compactMap({ Self.hues[$0] }).first {
            hue = named + random.uniform(-0.025...0.025)
        }
        var seedJitter = SeededGenerator(seed: seed ^ 0x4855_45)
        hue += seedJitter.uniform(-0.03...0.03)

        if let named = words.lazy.compactMap({ Self.moods[$0] }).first {
            mood = named
        } else {
            mood = random.pick([.day, .twilight, .twilight, .night])
        }
        // By day the sky leans blue and the named hue colours the land; in low light the sky
        // carries it and the land is a silhouette in an analogous or complementary hue.
        let skyHue = mood == .day ? Color.hue(hue, toward: 0.58, 0.65) : hue
        let landHue = mood == .day ? hue : hue + random.pick([0.08, -0.08, 0.42, 0.5, 0.58])
        let accentHue = hue + random.pick([0.33, -0.33, 0.16, 0.5])

        switch mood {
        case .day:
            skyTop = .hsv(skyHue, 0.5 + 0.2 * random.unit(), 0.8 + 0.12 * random.unit())
            skyHorizon = .hsv(Color.hue(skyHue, toward: 0.12, 0.3), 0.16, 0.98)
            sun = .hsv(0.13, 0.08, 1.0)
            glow = .hsv(0.12, 0.25, 1.0)
            farLand = .hsv(landHue, 0.3, 0.72).mixed(with: skyHorizon, 0.4)
            nearLand = .hsv(landHue, 0.6, 0.38)
        case .twilight:
            let warm = Color.hue(hue, toward: 0.06, 0.75)
            skyTop = .hsv(hue + 0.05, 0.6 + 0.2 * random.unit(), 0.22 + 0.12 * random.unit())
            skyHorizon = .hsv(warm, 0.55 + 0.2 * random.unit(), 0.97)
            sun = .hsv(warm + 0.03, 0.3, 1.0)
            glow = .hsv(warm, 0.7, 1.0)
            farLand = .hsv(hue + 0.03, 0.45, 0.42).mixed(with: skyHorizon, 0.3)
            nearLand = .hsv(landHue, 0.5, 0.1)
        case .night:
            skyTop = .hsv(hue, 0.75, 0.08 + 0.06 * random.unit())
            skyHorizon = .hsv(hue + 0.02, 0.5, 0.36)
            sun = .hsv(hue, 0.06, 0.96)
            glow = .hsv(hue, 0.35, 0.8)
            farLand = .hsv(hue, 0.4, 0.2)
            nearLand = .hsv(landHue, 0.45, 0.05)
        }
        waterTop = skyHorizon.mixed(with: skyTop, 0.35).scaled(0.8)
        waterBottom = skyTop.mixed(with: nearLand, 0.5).scaled(0.7)
        cloud =
            mood == .day
            ? Color(red: 255, green: 255, blue: 255).mixed(with: skyHorizon, 0.2)
            : skyHorizon.mixed(with: glow, 0.4).mixed(with: skyTop, 0.25)
        accents = [
            .hsv(accentHue, 0.5, 1.0),
            .hsv(hue, 0.35, 1.0),
            .hsv(Color.hue(accentHue, toward: 0.12, 0.5), 0.6, 1.0),
        ]
    }

    /// Lower-cased letter runs of `text`.
    static func words(of text: String) -> [String] {
        text.lowercased().split { !$0.isLetter }.map(String.init)
    }

    /// Hue (in turns) suggested by a word.
    static let hues: [String: Double] = [
        "red": 0.0, "crimson": 0.97, "scarlet": 0.99, "ruby": 0.96, "orange": 0.07, "amber": 0.09,
        "autumn": 0.07, "gold": 0.12, "golden": 0.12, "yellow": 0.15, "lemon": 0.16, "lime": 0.23,
        "green": 0.33, "forest": 0.3, "jungle": 0.32, "meadow": 0.27, "grass": 0.28, "spring": 0.25,
        "emerald": 0.38, "mint": 0.42, "teal": 0.48, "turquoise": 0.47, "cyan": 0.5, "ice": 0.53,
        "winter": 0.56, "snow": 0.58, "ocean": 0.56, "sea": 0.55, "lake": 0.54, "river": 0.54,
        "sky": 0.57, "blue": 0.6, "navy": 0.63, "indigo": 0.7, "violet": 0.76, "lavender": 0.74,
        "purple": 0.78, "dusk": 0.74, "twilight": 0.72, "magenta": 0.85, "pink": 0.92, "rose": 0.95,
        "dawn": 0.95, "sunset": 0.03, "sunrise": 0.06, "fire": 0.03, "lava": 0.01, "desert": 0.09,
        "sand": 0.1, "beach": 0.12, "mars": 0.03, "cyberpunk": 0.86, "neon": 0.83, "storm": 0.62,
        "night": 0.64, "midnight": 0.66, "moon": 0.62, "space": 0.7, "galaxy": 0.75, "mountain": 0.6,
        "lighthouse": 0.58, "harbor": 0.56, "harbour": 0.56, "coast": 0.55, "cat": 0.08, "fox": 0.06,
    ]

    /// Light suggested by a word.
    static let moods: [String: Mood] = [
        "day": .day, "noon": .day, "sunny": .day, "bright": .day, "morning": .day, "summer": .day,
        "daylight": .day, "dusk": .twilight, "sunset": .twilight, "sunrise": .twilight,
        "dawn": .twilight, "evening": .twilight, "twilight": .twilight, "golden": .twilight,
        "night": .night, "midnight": .night, "moon": .night, "moonlit": .night, "dark": .night,
        "stars": .night, "starry": .night, "space": .night, "galaxy": .night,
    ]
}
