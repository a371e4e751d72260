/// Encodes frames as an animated PNG (APNG). Frame 0 is the IDAT image, so readers without
/// APNG support show it as a still; later frames are fdAT chunks.
public enum AnimatedPNGEncoder {
    /// - Parameters:
    ///   - frames: at least one frame, all the size of the first (a programming error otherwise).
    ///   - delayMilliseconds: how long each frame shows; clamped to 0 ... 655 350.
    ///   - loops: plays of the animation, 0 for forever; clamped to 0 ... 2³¹-1.
    public static func encode(
        frames: [RGBImage],
        delayMilliseconds: Int,
        loops: Int = 0,
        level: Int32 = 6
    ) -> [UInt8] {
        precondition(!frames.isEmpty, "an APNG needs at least one frame")
        let width = frames[0].width
        let height = frames[0].height
        let (delayNumerator, delayDenominator) = delayFraction(milliseconds: delayMilliseconds)
        let deflater = Deflater(level: level)

        var png = PNGChunkWriter(reservingCapacity: width * height * frames.count / 4)
        png.append("IHDR", data: PNGChunkWriter.header(width: width, height: height))
        var animationControl: [UInt8] = []
        PNGChunkWriter.appendBigEndian(UInt32(frames.count), to: &animationControl)
        PNGChunkWriter.appendBigEndian(UInt32(min(max(loops, 0), Int(Int32.max))), to: &animationControl)
        png.append("acTL", data: animationControl)

        // fcTL and fdAT share one sequence, starting at 0; IDAT carries none.
        var sequence: UInt32 = 0
        for (index, frame) in frames.enumerated() {
            precondition(
                frame.width == width && frame.height == height,
                "APNG frame \(index) is \(frame.width)x\(frame.height), expected \(width)x\(height)"
            )
            var frameControl: [UInt8] = []
            PNGChunkWriter.appendBigEndian(sequence, to: &frameControl)
            PNGChunkWriter.appendBigEndian(UInt32(width), to: &frameControl)
            PNGChunkWriter.appendBigEndian(UInt32(height), to: &frameControl)
            PNGChunkWriter.appendBigEndian(UInt32(0), to: &frameControl)  // x offset
            PNGChunkWriter.appendBigEndian(UInt32(0), to: &frameControl)  // y offset
            PNGChunkWriter.appendBigEndian(delayNumerator, to: &frameControl)
            PNGChunkWriter.appendBigEndian(delayDenominator, to: &frameControl)
            frameControl += [0, 0]  // dispose: none; blend: source (frames are full and opaque)
            png.append("fcTL", data: frameControl)
            sequence += 1

            let compressed = deflater.compress(ScanlineFilter.filtered(frame))
            if index == 0 {
                png.append("IDAT", data: compressed)
            } else {
                var number: [UInt8] = []
                PNGChunkWriter.appendBigEndian(sequence, to: &number)
                png.append("fdAT", prefix: number, data: compressed)
                sequence += 1
            }
        }
        png.append("IEND")
        return png.bytes
    }

    /// fcTL's delay as 16-bit numerator/denominator: milliseconds while they fit, else
    /// hundredths of a second.
    static func delayFraction(milliseconds: Int) -> (UInt16, UInt16) {
        let clamped = min(max(milliseconds, 0), 655_350)
        if clamped <= Int(UInt16.max) {
            return (UInt16(clamped), 1000)
        }
        return (UInt16(clamped / 10), 100)
    }
}
