import RelayMedia
import Testing

@Suite("SyntheticAudio")
struct SyntheticAudioTests {
    static func rms(_ samples: ArraySlice<Int16>) -> Double {
        guard !samples.isEmpty else { return 0 }
        let total = samples.reduce(0.0) { $0 + Double($1) * Double($1) }
        return (total / Double(samples.count)).squareRoot()
    }

    @Test("length is seconds times sample rate", arguments: [(1.0, 24_000), (0.25, 16_000), (2.5, 8_000)])
    func length(spec: (Double, Int)) {
        let samples = SyntheticAudio.render(text: "one two", seed: 1, seconds: spec.0, sampleRate: spec.1)
        #expect(samples.count == Int(spec.0 * Double(spec.1)))
    }

    @Test("same inputs, same samples; other text or seed, other samples")
    func determinism() {
        let base = SyntheticAudio.render(text: "Hello there, general.", seed: 3, seconds: 2)
        #expect(base == SyntheticAudio.render(text: "Hello there, general.", seed: 3, seconds: 2))
        #expect(base != SyntheticAudio.render(text: "Goodbye now.", seed: 3, seconds: 2))
        #expect(base != SyntheticAudio.render(text: "Hello there, general.", seed: 4, seconds: 2))
    }

    @Test("audible, unclipped, and shaped like speech (louder and quieter stretches)")
    func level() {
        let samples = SyntheticAudio.render(text: "The quick brown fox jumps over the lazy dog.", seed: 11, seconds: 3)
        let overall = Self.rms(samples[...])
        #expect(overall > 800, "too quiet: \(overall)")
        #expect(samples.allSatisfy { $0 > Int16.min && $0 < Int16.max }, "clipped")
        let windows = Swift.stride(from: 0, to: samples.count - 1_200, by: 1_200).map {
            Self.rms(samples[$0..<($0 + 1_200)])
        }
        #expect(windows.max()! > 2 * windows.min()!, "no syllable envelope: \(windows)")
    }

    @Test("empty text hums; bad lengths give no samples")
    func edges() {
        #expect(Self.rms(SyntheticAudio.render(text: "", seed: 1, seconds: 1)[...]) > 300)
        #expect(SyntheticAudio.render(text: "x", seed: 1, seconds: 0).isEmpty)
        #expect(SyntheticAudio.render(text: "x", seed: 1, seconds: -2).isEmpty)
        #expect(SyntheticAudio.render(text: "x", seed: 1, seconds: .nan).isEmpty)
        // A zero sample rate is clamped to 1 kHz.
        #expect(SyntheticAudio.render(text: "x", seed: 1, seconds: 0.1, sampleRate: 0).count == 100)
    }
}
