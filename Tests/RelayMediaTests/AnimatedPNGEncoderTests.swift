import Foundation
import RelayMedia
import Testing

@Suite("AnimatedPNGEncoder")
struct AnimatedPNGEncoderTests {
    let frames = (0..<4).map { TestImage.pattern(width: 21, height: 13, seed: UInt64($0 + 1)) }

    @Test("chunk order, acTL and one sequence shared by fcTL and fdAT")
    func structure() throws {
        let reader = try PNGReader(AnimatedPNGEncoder.encode(frames: frames, delayMilliseconds: 83, loops: 3))
        #expect(
            reader.types == [
                "IHDR", "acTL", "fcTL", "IDAT", "fcTL", "fdAT", "fcTL", "fdAT", "fcTL", "fdAT", "IEND",
            ]
        )
        let control = try #require(reader.first("acTL")).data
        #expect(PNGReader.bigEndian32(control, 0) == 4)  // frames
        #expect(PNGReader.bigEndian32(control, 4) == 3)  // plays

        let numbered = reader.chunks.filter { $0.type == "fcTL" || $0.type == "fdAT" }
        #expect(numbered.map { PNGReader.bigEndian32($0.data, 0) } == Array(0..<7))

        for frameControl in reader.chunks.filter({ $0.type == "fcTL" }).map(\.data) {
            #expect(frameControl.count == 26)
            #expect(PNGReader.bigEndian32(frameControl, 4) == 21)
            #expect(PNGReader.bigEndian32(frameControl, 8) == 13)
            #expect(PNGReader.bigEndian32(frameControl, 12) == 0)
            #expect(PNGReader.bigEndian32(frameControl, 16) == 0)
            #expect(PNGReader.bigEndian16(frameControl, 20) == 83)
            #expect(PNGReader.bigEndian16(frameControl, 22) == 1000)
            #expect(Array(frameControl[24...]) == [0, 0])
        }
    }

    @Test("every frame decodes to its pixels")
    func framesRoundTrip() throws {
        let reader = try PNGReader(AnimatedPNGEncoder.encode(frames: frames, delayMilliseconds: 100))
        #expect(try reader.pixels() == frames[0].pixels)
        let later = reader.chunks.filter { $0.type == "fdAT" }
        #expect(later.count == 3)
        for (chunk, frame) in zip(later, frames.dropFirst()) {
            #expect(try reader.framePixels(fdAT: chunk) == frame.pixels)
        }
    }

    @Test("a single frame is a valid one-frame animation")
    func singleFrame() throws {
        let reader = try PNGReader(AnimatedPNGEncoder.encode(frames: [frames[2]], delayMilliseconds: 0))
        #expect(reader.types == ["IHDR", "acTL", "fcTL", "IDAT", "IEND"])
        #expect(PNGReader.bigEndian32(try #require(reader.first("acTL")).data, 0) == 1)
        #expect(try reader.pixels() == frames[2].pixels)
    }

    @Test("long delays fall back to hundredths of a second")
    func longDelay() throws {
        let reader = try PNGReader(AnimatedPNGEncoder.encode(frames: [frames[0]], delayMilliseconds: 70_000))
        let frameControl = try #require(reader.first("fcTL")).data
        #expect(PNGReader.bigEndian16(frameControl, 20) == 7_000)
        #expect(PNGReader.bigEndian16(frameControl, 22) == 100)
    }

    @Test(
        "a plain PNG reader (Python, IDAT only) sees frame 0",
        .enabled(if: ExternalTool.python3 != nil, "python3 is not installed")
    )
    func plainReaderSeesFirstFrame() throws {
        let apng = AnimatedPNGEncoder.encode(frames: frames, delayMilliseconds: 50)
        let path = try ExternalTool.temporaryFile(apng, suffix: ".png")
        let rawPath = path + ".raw"
        defer {
            ExternalTool.remove(path)
            ExternalTool.remove(rawPath)
        }
        let result = try ExternalTool.run(ExternalTool.python3!, ["-c", PNGEncoderTests.pythonDecoder, path, rawPath])
        #expect(result.status == 0, "python3 failed: \(result.error)")
        #expect(result.output.contains("21 13 IHDR,acTL,fcTL,IDAT,fcTL,fdAT"))
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: rawPath))) == frames[0].pixels)
    }

    @Test("synthetic video encodes as an APNG whose frames all decode")
    func syntheticVideo() throws {
        let video = SyntheticVideo.frames(prompt: "waves on a lake", seed: 5, width: 96, height: 64, count: 6)
        let reader = try PNGReader(AnimatedPNGEncoder.encode(frames: video, delayMilliseconds: 83))
        #expect(try reader.pixels() == video[0].pixels)
        let later = reader.chunks.filter { $0.type == "fdAT" }
        #expect(try later.map { try reader.framePixels(fdAT: $0) } == video.dropFirst().map(\.pixels))
    }
}
