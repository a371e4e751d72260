/// Frames standing in for a video model: the picture `SyntheticPicture` would draw, set in
/// motion (drifting clouds, parallax ridges, a setting sun, rising lights).
public enum SyntheticVideo {
    /// Scene time between consecutive frames, in seconds: play frames this far apart
    /// (`delayMilliseconds: 83`) for the motion's natural speed.
    public static let frameInterval = 1.0 / 12.0

    /// `count` frames (at least 1); frame 0 equals `SyntheticPicture.render` of the same inputs.
    public static func frames(
        prompt: String,
        seed: UInt64,
        width: Int,
        height: Int,
        count: Int
    ) -> [RGBImage] {
        let scene = Scene(prompt: prompt, seed: seed, width: width, height: height)
        return (0..<max(count, 1)).map { scene.render(time: Double($0) * frameInterval) }
    }

    /// Frame `index` alone, identical to `frames(...)[index]`, for producing frames one by one.
    public static func frame(
        prompt: String,
        seed: UInt64,
        width: Int,
        height: Int,
        index: Int
    ) -> RGBImage {
        Scene(prompt: prompt, seed: seed, width: width, height: height)
            .render(time: Double(max(index, 0)) * frameInterval)
    }
}
