import RelayMedia
import Testing

@Suite("StableHash")
struct StableHashTests {
    @Test("values are pinned across builds and platforms")
    func golden() {
        #expect(StableHash.hash("", seed: 0) == Self.emptyZero)
        #expect(StableHash.hash("a lighthouse at dusk", seed: 42) == Self.lighthouse)
    }

    // Cross-checked with an independent Python FNV-1a + SplitMix64.
    static let emptyZero: UInt64 = 17_665_956_581_633_026_203
    static let lighthouse: UInt64 = 14_697_311_739_272_216_366

    @Test("text and seed both matter")
    func sensitivity() {
        let base = StableHash.hash("prompt", seed: 1)
        #expect(base == StableHash.hash("prompt", seed: 1))
        #expect(base != StableHash.hash("prompt", seed: 2))
        #expect(base != StableHash.hash("Prompt", seed: 1))
        #expect(base != StableHash.hash("prompt ", seed: 1))
    }

    @Test("nearby inputs spread over all 64 bits")
    func avalanche() {
        var ones = 0
        var total = 0
        for seed in UInt64(0)..<64 {
            let a = StableHash.hash("seed test", seed: seed)
            let b = StableHash.hash("seed test", seed: seed + 1)
            ones += (a ^ b).nonzeroBitCount
            total += 64
        }
        let fraction = Double(ones) / Double(total)
        #expect(fraction > 0.4 && fraction < 0.6, "bit flip fraction \(fraction)")
    }
}
