/// A stable 64-bit hash for seeding: FNV-1a over the UTF-8 bytes, finished with the SplitMix64
/// mixer, so the same text and seed give the same value on every build and platform.
public enum StableHash {
    /// Hashes `text` together with `seed`.
    public static func hash(_ text: String, seed: UInt64) -> UInt64 {
        var state: UInt64 = 0xCBF2_9CE4_8422_2325 ^ SeededGenerator.mix(seed)
        for byte in text.utf8 {
            state ^= UInt64(byte)
            state = state &* 0x0000_0100_0000_01B3
        }
        return SeededGenerator.mix(state)
    }

    /// Combines two hashes (order matters).
    static func combine(_ first: UInt64, _ second: UInt64) -> UInt64 {
        SeededGenerator.mix(first ^ (second &* 0x9E37_79B9_7F4A_7C15))
    }
}
