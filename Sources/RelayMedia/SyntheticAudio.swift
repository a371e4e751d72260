/// Audio standing in for a speech or music model: the text is "sung" syllable by syllable —
/// a voice-like tone whose vowel colour follows the letters, on a pentatonic melody picked by
/// text and seed — over a soft drone. Same inputs, same samples.
public enum SyntheticAudio {
    /// - Parameters:
    ///   - seconds: length; negative or NaN gives no samples, and it is capped at one day.
    ///   - sampleRate: clamped to 1 000 ... 384 000.
    /// - Returns: mono 16-bit samples, `Int(seconds * sampleRate)` of them.
    public static func render(
        text: String,
        seed: UInt64,
        seconds: Double,
        sampleRate: Int = 24_000
    ) -> [Int16] {
        let rate = min(max(sampleRate, 1_000), 384_000)
        guard seconds > 0 else { return [] }
        let count = Int(min(seconds, 86_400) * Double(rate))
        guard count > 0 else { return [] }
        var melody = Melody(text: text, seed: seed)
        let notes = melody.notes(covering: Double(count) / Double(rate))
        return VoiceSynthesizer(sampleRate: rate, seed: seed).render(notes: notes, count: count)
    }
}
