import RelayMedia
import Testing

@Suite("SyntheticPicture")
struct SyntheticPictureTests {
    static let width = 160
    static let height = 120

    static func render(_ prompt: String, _ seed: UInt64, progress: Double = 1) -> RGBImage {
        SyntheticPicture.render(prompt: prompt, seed: seed, width: width, height: height, progress: progress)
    }

    @Test("same inputs give identical pixels and identical PNG bytes")
    func deterministic() {
        let first = Self.render("a lighthouse at dusk", 42)
        let second = Self.render("a lighthouse at dusk", 42)
        #expect(first == second)
        #expect(PNGEncoder.encode(first) == PNGEncoder.encode(second))
    }

    @Test("pixels are pinned: a change here changes every stored picture")
    func golden() {
        // FNV-1a of the pixels. Update deliberately (and say so) if the look is changed on purpose.
        let image = SyntheticPicture.render(prompt: "golden", seed: 7, width: 64, height: 48)
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in image.pixels {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        #expect(hash == Self.goldenHash, "pixel hash is \(hash)")
    }

    static let goldenHash: UInt64 = 12_310_762_271_564_912_058

    @Test(
        "different prompts differ visibly",
        arguments: [
            ("a lighthouse at dusk", "a lighthouse at noon"),
            ("a red fox", "a blue whale"),
            ("forest", "desert"),
            ("x", "y"),
        ]
    )
    func promptsDiffer(prompts: (String, String)) {
        let difference = ImageDifference.mean(Self.render(prompts.0, 1), Self.render(prompts.1, 1))
        #expect(difference > 12, "mean difference \(difference)")
    }

    @Test("different seeds differ visibly", arguments: [(UInt64(0), UInt64(1)), (42, 43), (7, 1 << 40)])
    func seedsDiffer(seeds: (UInt64, UInt64)) {
        let difference = ImageDifference.mean(
            Self.render("a lighthouse at dusk", seeds.0),
            Self.render("a lighthouse at dusk", seeds.1)
        )
        #expect(difference > 8, "mean difference \(difference)")
    }

    @Test(
        "pictures have structure, not a flat fill",
        arguments: ["a lighthouse at dusk", "sunny forest", "", "🚀 über café"]
    )
    func structured(prompt: String) {
        let image = Self.render(prompt, 3)
        #expect(ImageDifference.spread(image) > 15)
        #expect(ImageDifference.colours(image) > 300)
    }

    @Test("previews start as noise and approach the final picture")
    func previews() {
        let final = Self.render("a lighthouse at dusk", 42)
        let steps = [0.0, 0.25, 0.5, 0.75, 0.95].map {
            ImageDifference.mean(Self.render("a lighthouse at dusk", 42, progress: $0), final)
        }
        #expect(steps[0] > 40, "progress 0 should be mostly noise: \(steps)")
        for (earlier, later) in zip(steps, steps.dropFirst()) {
            #expect(later < earlier, "not converging: \(steps)")
        }
        #expect(steps[4] < 5, "progress 0.95 should be nearly final: \(steps)")
        #expect(Self.render("a lighthouse at dusk", 42, progress: 1) == final)
        #expect(Self.render("a lighthouse at dusk", 42, progress: 7) == final)
        #expect(Self.render("a lighthouse at dusk", 42, progress: .nan) == final)
        #expect(
            Self.render("a lighthouse at dusk", 42, progress: -1)
                == Self.render("a lighthouse at dusk", 42, progress: 0)
        )
    }

    @Test("previews are deterministic too")
    func previewsDeterministic() {
        #expect(Self.render("q", 9, progress: 0.4) == Self.render("q", 9, progress: 0.4))
    }

    @Test("sizes are clamped to at least 1x1", arguments: [(0, 0), (-5, 3), (1, 1), (1, 500), (500, 1)])
    func clamped(size: (Int, Int)) throws {
        let image = SyntheticPicture.render(prompt: "tiny", seed: 1, width: size.0, height: size.1, progress: 0.5)
        #expect(image.width == max(1, size.0))
        #expect(image.height == max(1, size.1))
        #expect(image.pixels.count == image.width * image.height * 3)
        let reader = try PNGReader(PNGEncoder.encode(image))
        #expect(try reader.pixels() == image.pixels)
    }

    @Test("the largest size works")
    func largest() {
        let image = SyntheticPicture.render(prompt: "big", seed: 2, width: 2048, height: 2048)
        #expect(image.pixels.count == 2048 * 2048 * 3)
        #expect(ImageDifference.colours(image) > 1000)
    }
}
