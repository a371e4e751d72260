/// One sung syllable.
struct SungNote: Sendable {
    var start: Double  // seconds
    var duration: Double
    var frequency: Double  // Hz
    var vowel: Character
    var consonants: Int  // letters before the vowel: a breathy onset
    var loudness: Double  // 0 ... 1
}

/// Turns text into syllables on a melody: words split at vowel groups, a random walk over a
/// pentatonic scale, pauses at spaces and punctuation, a falling cadence at sentence ends.
struct Melody {
    private enum Unit {
        case syllable(vowel: Character, consonants: Int, stressed: Bool)
        case pause(Double)
        case cadence
    }

    private let units: [Unit]
    private var random: SeededGenerator
    private let root: Double

    init(text: String, seed: UInt64) {
        random = SeededGenerator(seed: StableHash.hash(text, seed: seed ^ 0x4D45_4C4F_4459))
        root = 110 + 90 * random.unit()  // a speaking-voice range
        var units: [Unit] = []
        for word in Self.split(text) {
            switch word {
            case ",", ";", ":", "-":
                units.append(.pause(0.18))
            case ".", "!", "?":
                units.append(.cadence)
                units.append(.pause(0.38))
            default:
                var consonants = 0
                var inVowel = false
                var first = true
                for letter in word {
                    if "aeiouy".contains(letter) {
                        if !inVowel {
                            units.append(.syllable(vowel: letter, consonants: consonants, stressed: first))
                            first = false
                            consonants = 0
                        }
                        inVowel = true
                    } else {
                        consonants += 1
                        inVowel = false
                    }
                }
                if first {  // no vowel at all ("hmm", "42"): hum it
                    units.append(.syllable(vowel: "u", consonants: min(consonants, 2), stressed: true))
                }
                units.append(.pause(0.05))
            }
        }
        self.units = units
    }

    /// Lower-cased words (letters and digits) and single punctuation marks.
    private static func split(_ text: String) -> [String] {
        var parts: [String] = []
        var word = ""
        for character in text.lowercased() {
            if character.isLetter || character.isNumber {
                word.append(character)
            } else {
                if !word.isEmpty { parts.append(word) }
                word = ""
                if ",;:-.!?".contains(character) { parts.append(String(character)) }
            }
        }
        if !word.isEmpty { parts.append(word) }
        return parts
    }

    /// Sings the text over and over (each pass a new variation) until `seconds` are filled.
    mutating func notes(covering seconds: Double) -> [SungNote] {
        let scale = [0, 2, 4, 7, 9]
        let semitone = [
            1.0, 1.059_463_094_359_295, 1.122_462_048_309_373, 1.189_207_115_002_721,
            1.259_921_049_894_873, 1.334_839_854_170_034, 1.414_213_562_373_095,
            1.498_307_076_876_681, 1.587_401_051_968_199, 1.681_792_830_507_429,
            1.781_797_436_280_678, 1.887_748_625_363_387,
        ]
        func frequency(degree: Int) -> Double {
            let octave = degree >= 0 ? degree / 5 : (degree - 4) / 5
            let step = degree - octave * 5
            var f = root * semitone[scale[step]]
            var o = octave
            while o > 0 {
                f *= 2
                o -= 1
            }
            while o < 0 {
                f /= 2
                o += 1
            }
            return f
        }
        let hum: [Unit] = [.syllable(vowel: "o", consonants: 0, stressed: true), .pause(0.3)]
        let source = units.isEmpty ? hum : units
        var notes: [SungNote] = []
        var time = 0.05
        var degree = random.integer(2...5)
        while time < seconds {
            for unit in source {
                switch unit {
                case .pause(let length):
                    time += length * random.uniform(0.8...1.25)
                case .cadence:
                    degree = degree > 2 ? 2 : 0
                case .syllable(let vowel, let consonants, let stressed):
                    let step = random.pick([-2, -1, -1, 0, 1, 1, 2, 3])
                    degree = min(max(degree + step, -2), 9)
                    let duration =
                        (0.11 + 0.03 * Double(min(consonants, 3)) + 0.06 * random.unit())
                        * (stressed ? 1.25 : 1)
                    notes.append(
                        SungNote(
                            start: time,
                            duration: duration,
                            frequency: frequency(degree: degree),
                            vowel: vowel,
                            consonants: consonants,
                            loudness: stressed ? 1 : 0.8 + 0.15 * random.unit()
                        )
                    )
                    time += duration
                }
                if time >= seconds { break }
            }
            time += 0.4  // breath between passes
        }
        return notes
    }
}
