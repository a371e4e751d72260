/// Deterministic pictures standing in for an image model: the prompt picks the palette and
/// mood, prompt and seed pick the layout, and the same inputs always give the same pixels.
public enum SyntheticPicture {
    /// - Parameters:
    ///   - width: clamped to at least 1 (callers validate upper bounds).
    ///   - height: clamped to at least 1.
    ///   - progress: 0 ... 1; below 1 gives a diffusion-like preview (seeded noise and coarse
    ///     blocks at 0, sharpening toward the final picture at 1).
    public static func render(
        prompt: String,
        seed: UInt64,
        width: Int,
        height: Int,
        progress: Double = 1
    ) -> RGBImage {
        var image = Scene(prompt: prompt, seed: seed, width: width, height: height).render(time: 0)
        if progress < 1 {  // NaN compares false: treated as finished
            DiffusionPreview.apply(
                to: &image,
                seed: StableHash.hash(prompt, seed: seed),
                progress: progress
            )
        }
        return image
    }
}
