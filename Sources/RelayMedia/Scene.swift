/// The layout of one synthetic picture — sky, sun, clouds, ridges, water, lights — decided by
/// prompt and seed, and drawable at any moment so video frames show the same scene moving.
/// Positions and sizes are fractions of the frame, so a layout looks alike at every size.
struct Scene: Sendable {
    /// A sine term of a wavy line: `amplitude` in heights, `cycles` across the width.
    struct Wave: Sendable {
        var amplitude: Double
        var cycles: Double
        var phase: Double

        func offset(at u: Double) -> Double {
            amplitude * Trig.sin(Trig.twoPi * (cycles * u + phase))
        }
    }

    struct Sun: Sendable {
        var x: Double
        var y: Double
        var radius: Double  // of the shorter side
        var glowRadius: Double
        var glowAlpha: Int
        var sink: Double  // heights per second
    }

    struct Cloud: Sendable {
        var y: Double
        var thickness: Double
        var waves: [Wave]
        var lens: Wave  // modulates thickness into separate puffs
        var alpha: Int
        var drift: Double  // widths per second
    }

    struct Ridge: Sendable {
        var base: Double
        var waves: [Wave]
        var top: Color
        var bottom: Color
        var drift: Double
    }

    struct Orb: Sendable {
        var x: Double
        var y: Double
        var radius: Double  // of the shorter side
        var color: Color
        var alpha: Int
        var rise: Double
        var phase: Double
    }

    struct Glint: Sendable {
        var x: Double
        var y: Double
        var length: Double
        var alpha: Int
        var phase: Double
    }

    let width: Int
    let height: Int
    let palette: Palette
    let horizon: Double
    let sun: Sun
    let clouds: [Cloud]
    let ridges: [Ridge]
    let hasWater: Bool
    let glints: [Glint]  // water shimmer, or stars when the sky is dark
    let stars: [Glint]
    let orbs: [Orb]
    let vignette: Double

    init(prompt: String, seed: UInt64, width: Int, height: Int) {
        self.width = max(1, width)
        self.height = max(1, height)
        let palette = Palette(prompt: prompt, seed: seed)
        self.palette = palette
        let layoutSeed = StableHash.hash(prompt, seed: seed)
        var random = SeededGenerator(seed: layoutSeed)

        let horizon = random.uniform(0.5...0.72)
        self.horizon = horizon
        let hasWater = random.chance(0.5)
        self.hasWater = hasWater

        let isNight = palette.mood == .night
        sun = Sun(
            x: random.uniform(0.15...0.85),
            y: max(0.1, horizon - random.uniform(0.12...0.38)),
            radius: isNight ? random.uniform(0.025...0.045) : random.uniform(0.035...0.07),
            glowRadius: random.uniform(4...7),
            glowAlpha: palette.mood == .twilight ? 210 : (isNight ? 110 : 150),
            sink: palette.mood == .night ? -0.004 : random.uniform(0.004...0.015)
        )

        clouds = (0..<random.integer(2...5)).map { _ in
            Cloud(
                y: random.uniform(0.05...(horizon - 0.08)),
                thickness: random.uniform(0.008...0.035),
                waves: [
                    Wave(
                        amplitude: random.uniform(0.004...0.02),
                        cycles: random.uniform(0.5...2),
                        phase: random.unit()
                    ),
                    Wave(
                        amplitude: random.uniform(0.001...0.006),
                        cycles: random.uniform(3...7),
                        phase: random.unit()
                    ),
                ],
                lens: Wave(amplitude: 1, cycles: random.uniform(1.5...5), phase: random.unit()),
                alpha: random.integer(60...150),
                drift: random.uniform(0.01...0.04)
            )
        }

        let ridgeCount = hasWater ? 2 : random.integer(3...4)
        ridges = (0..<ridgeCount).map { layer in
            let depth = ridgeCount == 1 ? 1 : Double(layer) / Double(ridgeCount - 1)  // 0 far, 1 near
            let base =
                hasWater
                ? horizon - 0.015 - 0.02 * (1 - depth)
                : horizon - 0.02 + depth * (1 - horizon) * random.uniform(0.35...0.6)
            let scale = 1 + depth * (hasWater ? 0.3 : 1.2)
            let top = palette.farLand.mixed(with: palette.nearLand, depth)
            return Ridge(
                base: base,
                waves: [
                    Wave(
                        amplitude: 0.03 * scale * random.uniform(0.6...1.4),
                        cycles: random.uniform(0.4...1.3),
                        phase: random.unit()
                    ),
                    Wave(
                        amplitude: 0.012 * scale * random.uniform(0.5...1.5),
                        cycles: random.uniform(2...4),
                        phase: random.unit()
                    ),
                    Wave(amplitude: 0.003 * scale, cycles: random.uniform(8...14), phase: random.unit()),
                ],
                top: top,
                bottom: top.mixed(with: palette.nearLand.scaled(0.6), 0.6),
                drift: 0.008 + 0.04 * depth
            )
        }

        if hasWater {
            glints = (0..<random.integer(25...60)).map { _ in
                Glint(
                    x: random.unit(),
                    y: random.uniform(0...1),
                    length: random.uniform(0.01...0.06),
                    alpha: random.integer(25...80),
                    phase: random.unit()
                )
            }
        } else {
            glints = []
        }

        let orbCount = random.integer(4...10)
        orbs = (0..<orbCount).map { _ in
            Orb(
                x: random.unit(),
                y: random.unit(),
                radius: random.uniform(0.006...0.04),
                color: random.pick(palette.accents),
                alpha: random.integer(25...85),
                rise: random.uniform(0.02...0.07),
                phase: random.unit()
            )
        }
        vignette = random.uniform(0.12...0.25)
        stars =
            palette.mood == .day
            ? []
            : (0..<random.integer(isNight ? 120...260 : 30...80)).map { _ in
                Glint(
                    x: random.unit(),
                    y: random.uniform(0...(horizon * 0.85)),
                    length: 0,
                    alpha: random.integer(70...230),
                    phase: random.unit()
                )
            }
    }

    /// Draws the scene `time` seconds into its motion (0 for a still).
    func render(time: Double) -> RGBImage {
        var image = RGBImage(width: width, height: height)
        image.pixels.withUnsafeMutableBufferPointer { buffer in
            draw(on: Canvas(pixels: buffer.baseAddress!, width: width, height: height), time: time)
        }
        return image
    }

    private func draw(on canvas: Canvas, time: Double) {
        let w = Double(width)
        let h = Double(height)
        let shortSide = Double(min(width, height))
        let horizonY = horizon * h

        canvas.fillRows(0, height) { y in
            let t = min((Double(y) + 0.5) / horizonY, 1)
            return palette.skyTop.mixed(with: palette.skyHorizon, t * t)
        }

        for star in stars {
            let twinkle = 0.65 + 0.35 * Trig.sin(Trig.twoPi * (star.phase + time * 0.7))
            let color = palette.sun.mixed(with: palette.accents[1], star.phase * 0.5)
            canvas.blendPixel(
                x: Int(star.x * w),
                y: Int(star.y * h),
                color: color,
                alpha: Int(Double(star.alpha) * twinkle)
            )
        }

        let sunX = sun.x * w
        let sunY = (sun.y + sun.sink * time) * h
        let sunRadius = sun.radius * shortSide
        canvas.blendDisc(
            centerX: sunX,
            centerY: sunY,
            radius: sunRadius * sun.glowRadius,
            color: palette.glow,
            alpha: sun.glowAlpha,
            profile: Falloff.glow
        )
        canvas.blendDisc(
            centerX: sunX,
            centerY: sunY,
            radius: sunRadius,
            color: palette.sun,
            alpha: 256,
            profile: Falloff.disc
        )

        for cloud in clouds {
            var centers = [Int](repeating: 0, count: width)
            var halves = [Int](repeating: 0, count: width)
            for x in 0..<width {
                let u = Double(x) / w - cloud.drift * time
                var y = cloud.y
                for wave in cloud.waves {
                    y += wave.offset(at: u)
                }
                let puff = max(0, cloud.lens.offset(at: u))
                centers[x] = Int(y * h * 256)
                halves[x] = Int(cloud.thickness * puff * h * 256)
            }
            canvas.blendBand(
                centers: centers,
                halfWidths: halves,
                color: palette.cloud,
                alpha: cloud.alpha,
                profile: Falloff.bump
            )
        }

        for (layer, ridge) in ridges.enumerated() {
            var tops = [Int](repeating: 0, count: width)
            var highest = h
            for x in 0..<width {
                let u = Double(x) / w + ridge.drift * time
                var y = ridge.base
                for wave in ridge.waves {
                    y -= wave.offset(at: u)
                }
                y = y * h
                highest = min(highest, y)
                tops[x] = Int(y * 256)
            }
            let span = max(h - highest, 1)
            canvas.fillBelow(tops: tops) { y in
                ridge.top.mixed(with: ridge.bottom, min(max((Double(y) - highest) / span, 0), 1))
            }
            // Haze at the foot of all but the nearest layer gives depth.
            if layer < ridges.count - 1 {
                let mistY = Int(min(ridge.base + 0.02, 1) * h * 256)
                canvas.blendBand(
                    centers: [Int](repeating: mistY, count: width),
                    halfWidths: [Int](repeating: Int(0.05 * h * 256) + 256, count: width),
                    color: palette.skyHorizon,
                    alpha: 80,
                    profile: Falloff.bump
                )
            }
        }

        if hasWater {
            drawWater(on: canvas, time: time, sunX: sunX, sunY: sunY, sunRadius: sunRadius)
        }

        for orb in orbs {
            var y = orb.y - orb.rise * time
            y -= y.rounded(.down)
            let x = orb.x + 0.015 * Trig.sin(Trig.twoPi * (orb.phase + time * 0.4))
            canvas.blendDisc(
                centerX: x * w,
                centerY: y * h,
                radius: orb.radius * shortSide,
                color: orb.color,
                alpha: orb.alpha,
                profile: Falloff.orb
            )
        }

        canvas.finish(vignette: vignette)
    }

    private func drawWater(on canvas: Canvas, time: Double, sunX: Double, sunY: Double, sunRadius: Double) {
        let w = Double(width)
        let h = Double(height)
        let top = Int((horizon * h).rounded())
        let depthSpan = max(h - Double(top), 1)
        canvas.fillRows(top, height) { y in
            let t = (Double(y) - Double(top)) / depthSpan
            return palette.waterTop.mixed(with: palette.waterBottom, t.squareRoot())
        }
        // The sun's broken reflection: short streaks that widen toward the viewer.
        if sunY + sunRadius < Double(top) {
            let color = palette.sun.mixed(with: palette.glow, 0.5)
            var y = top
            while y < height {
                let depth = (Double(y) - Double(top)) / depthSpan
                let ripple = Trig.sin(Double(y) * 0.9 + time * 5)
                if ripple > 0 {
                    let wobble = 0.01 * w * Trig.sin(Double(y) * 0.23 + time * 2)
                    let half = sunRadius * (0.7 + 2.5 * depth) * (0.6 + 0.4 * ripple)
                    let alpha = Int(170 * (1 - 0.75 * depth) * ripple)
                    canvas.blendStreak(
                        y: y,
                        x0: Int(sunX + wobble - half),
                        x1: Int(sunX + wobble + half),
                        color: color,
                        alpha: alpha
                    )
                }
                y += 1
            }
        }
        let glintColor = palette.skyHorizon.mixed(with: palette.sun, 0.4)
        for glint in glints {
            let depth = glint.y * glint.y  // crowd toward the horizon
            let y = Int(Double(top) + depth * depthSpan)
            let sway = 0.02 * Trig.sin(Trig.twoPi * (glint.phase + time * 0.3))
            let x = (glint.x + sway) * w
            let half = glint.length * (0.4 + depth) * w
            let pulse = 0.6 + 0.4 * Trig.sin(Trig.twoPi * (glint.phase * 3 + time))
            canvas.blendStreak(
                y: y,
                x0: Int(x - half),
                x1: Int(x + half),
                color: glintColor,
                alpha: Int(Double(glint.alpha) * pulse)
            )
        }
    }
}
