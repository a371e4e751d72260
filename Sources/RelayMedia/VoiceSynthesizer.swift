/// Renders sung notes as samples: harmonics of the pitch weighted by the vowel's formants,
/// with vibrato, glides, a breathy onset and a drone — sine lookups and integer mixing only.
struct VoiceSynthesizer {
    private static let tableBits = 12
    /// One sine cycle in Q15.
    private static let sine: [Int32] = (0..<(1 << tableBits)).map {
        Int32((Trig.sin(Trig.twoPi * Double($0) / Double(1 << tableBits)) * 32_767).rounded())
    }

    let sampleRate: Int
    let seed: UInt64

    init(sampleRate: Int, seed: UInt64) {
        self.sampleRate = sampleRate
        self.seed = seed
    }

    /// First and second formant frequencies (Hz) of a vowel letter.
    private static func formants(_ vowel: Character) -> (Double, Double) {
        switch vowel {
        case "a": return (800, 1200)
        case "e": return (500, 1900)
        case "i": return (320, 2300)
        case "o": return (500, 900)
        case "y": return (350, 2000)
        default: return (330, 800)
        }
    }

    func render(notes: [SungNote], count: Int) -> [Int16] {
        let rate = Double(sampleRate)
        var mix = [Int32](repeating: 0, count: count)
        let shift = UInt32(32 - Self.tableBits)
        let nyquist = rate * 0.45
        var noiseState = UInt32(truncatingIfNeeded: SeededGenerator.mix(seed)) | 1

        mix.withUnsafeMutableBufferPointer { output in
            Self.sine.withUnsafeBufferPointer { sineBuffer in
                let out = output.baseAddress!
                let sine = sineBuffer.baseAddress!
                var phase: UInt32 = 0
                var previousStep = 0.0

                for note in notes {
                    let first = Int(note.start * rate)
                    guard first < count else { break }
                    let length = min(Int(note.duration * rate), count - first)
                    guard length > 0 else { continue }
                    let (f1, f2) = Self.formants(note.vowel)
                    var amplitudes: [Int32] = []
                    var total = 0.0
                    var weights: [Double] = []
                    var k = 1.0
                    while k <= 16, k * note.frequency < min(nyquist, 4_000) {
                        let f = k * note.frequency
                        let r1 = 1 / (1 + ((f - f1) / 110) * ((f - f1) / 110))
                        let r2 = 1 / (1 + ((f - f2) / 160) * ((f - f2) / 160))
                        let weight = (0.15 + r1 + 0.6 * r2) / k
                        weights.append(weight)
                        total += weight
                        k += 1
                    }
                    for weight in weights {
                        amplitudes.append(Int32((weight / total * 12_000 * note.loudness).rounded()))
                    }
                    let targetStep = note.frequency / rate * 4_294_967_296
                    if previousStep == 0 { previousStep = targetStep }
                    let attack = max(Int(0.015 * rate), 1)
                    let release = max(Int(0.04 * rate), 1)
                    let glide = max(Int(0.03 * rate), 1)
                    let breath = note.consonants > 0 ? Int(0.02 * rate) : 0

                    amplitudes.withUnsafeBufferPointer { amplitudeBuffer in
                        let amp = amplitudeBuffer.baseAddress!
                        let harmonics = amplitudeBuffer.count
                        var i = 0
                        var step: UInt32 = 0
                        while i < length {
                            // Pitch (glide + vibrato) is refreshed every 32 samples.
                            if i & 31 == 0 {
                                let g = min(Double(i) / Double(glide), 1)
                                let base = previousStep + (targetStep - previousStep) * g
                                let now = note.start + Double(i) / rate
                                let vibrato = 1 + 0.012 * Trig.sin(Trig.twoPi * 5.5 * now)
                                step = UInt32(min(base * vibrato, 4_294_967_295))
                            }
                            phase = phase &+ step
                            var sum: Int32 = 0
                            var h = 0
                            var harmonicPhase = phase
                            while h < harmonics {
                                sum += (amp[h] * sine[Int(harmonicPhase >> shift)]) >> 15
                                harmonicPhase = harmonicPhase &+ phase
                                h += 1
                            }
                            var envelope: Int32 = 256
                            if i < attack {
                                envelope = Int32(i * 256 / attack)
                            } else if length - i < release {
                                envelope = Int32((length - i) * 256 / release)
                            }
                            var sample = (sum * envelope) >> 8
                            if i < breath {
                                noiseState ^= noiseState << 13
                                noiseState ^= noiseState >> 17
                                noiseState ^= noiseState << 5
                                let fade = Int32((breath - i) * 256 / breath)
                                sample += ((Int32(bitPattern: noiseState) >> 21) * fade) >> 8
                            }
                            out[first + i] += sample
                            i += 1
                        }
                    }
                    previousStep = targetStep
                }

                // Drone: root and fifth an octave below the voice, swelling slowly.
                let rootFrequency = (notes.first?.frequency ?? 150) / 2
                let rootStep = UInt32(rootFrequency / rate * 4_294_967_296)
                let fifthStep = UInt32(rootFrequency * 1.5 / rate * 4_294_967_296)
                var rootPhase: UInt32 = 0
                var fifthPhase: UInt32 = 0
                var i = 0
                var swell: Int32 = 0
                while i < count {
                    if i & 255 == 0 {
                        swell = Int32(900 + 500 * Trig.sin(Trig.twoPi * 0.15 * Double(i) / rate))
                        let fadeIn = min(i, sampleRate / 2)
                        swell = swell * Int32(fadeIn) / Int32(max(sampleRate / 2, 1))
                    }
                    rootPhase = rootPhase &+ rootStep
                    fifthPhase = fifthPhase &+ fifthStep
                    let tone = sine[Int(rootPhase >> shift)] + (sine[Int(fifthPhase >> shift)] >> 1)
                    out[i] += (tone * swell) >> 15
                    i += 1
                }
            }
        }
        return mix.map { Int16(clamping: $0) }
    }
}
