import Foundation
import RelayMedia
import Testing

/// Test rasters mixing gradients, hard edges and noise, so every Paeth branch is taken.
enum TestImage {
    static func pattern(width: Int, height: Int, seed: UInt64 = 1) -> RGBImage {
        var image = RGBImage(width: width, height: height)
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for y in 0..<image.height {
            for x in 0..<image.width {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                let noise = UInt8(truncatingIfNeeded: state)
                let region = (x / 5 + y / 3) % 3
                image[x, y] =
                    region == 0
                    ? (
                        UInt8(truncatingIfNeeded: x * 7), UInt8(truncatingIfNeeded: y * 5),
                        UInt8(truncatingIfNeeded: x + y)
                    )
                    : region == 1 ? (noise, noise &+ 40, 255 &- noise) : (255, UInt8(truncatingIfNeeded: y), 0)
            }
        }
        return image
    }
}

@Suite("PNGEncoder")
struct PNGEncoderTests {
    @Test("decodes back to the same pixels", arguments: [(1, 1), (2, 1), (1, 3), (7, 5), (64, 33), (257, 3)])
    func roundTrip(size: (Int, Int)) throws {
        let image = TestImage.pattern(width: size.0, height: size.1)
        let reader = try PNGReader(PNGEncoder.encode(image))
        #expect(reader.width == size.0)
        #expect(reader.height == size.1)
        #expect(try reader.pixels() == image.pixels)
    }

    @Test("signature, IHDR fields and chunk order")
    func structure() throws {
        let png = PNGEncoder.encode(TestImage.pattern(width: 300, height: 200))
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let reader = try PNGReader(png)
        #expect(reader.types == ["IHDR", "IDAT", "IEND"])
        let header = try #require(reader.first("IHDR")).data
        #expect(header.count == 13)
        #expect(PNGReader.bigEndian32(header, 0) == 300)
        #expect(PNGReader.bigEndian32(header, 4) == 200)
        #expect(Array(header[8...]) == [8, 2, 0, 0, 0])  // 8-bit, RGB, deflate, adaptive, no interlace
        #expect(reader.first("IEND")?.data.isEmpty == true)
    }

    @Test("row 0 uses Sub, every other row Paeth")
    func filters() throws {
        let reader = try PNGReader(PNGEncoder.encode(TestImage.pattern(width: 20, height: 9)))
        #expect(try reader.filterTypes() == [1] + Array(repeating: 4, count: 8))
    }

    @Test("the reader rejects a corrupted chunk, so the CRC checks can fail")
    func corruptionIsDetected() throws {
        var png = PNGEncoder.encode(TestImage.pattern(width: 16, height: 16))
        png[40] ^= 0x01  // inside IDAT's data
        #expect(throws: PNGReader.Failure.self) { try PNGReader(png) }
    }

    @Test("every zlib level decodes; higher levels are no larger", arguments: [Int32(0), 1, 6, 9])
    func levels(level: Int32) throws {
        let image = SyntheticPicture.render(prompt: "levels", seed: 3, width: 160, height: 120)
        let png = PNGEncoder.encode(image, level: level)
        #expect(try PNGReader(png).pixels() == image.pixels)
        if level > 0 {
            #expect(png.count <= PNGEncoder.encode(image, level: 0).count)
        }
    }

    @Test("synthetic pictures compress well")
    func compression() {
        let image = SyntheticPicture.render(prompt: "a lighthouse at dusk", seed: 42, width: 1024, height: 768)
        let png = PNGEncoder.encode(image)
        #expect(png.count < image.pixels.count / 5, "PNG is \(png.count) bytes for \(image.pixels.count) raw")
    }

    @Test(
        "Python's zlib and struct parse the PNG to the same pixels",
        .enabled(if: ExternalTool.python3 != nil, "python3 is not installed")
    )
    func pythonDecodes() throws {
        let image = TestImage.pattern(width: 37, height: 23, seed: 9)
        let pngPath = try ExternalTool.temporaryFile(PNGEncoder.encode(image), suffix: ".png")
        let rawPath = pngPath + ".raw"
        defer {
            ExternalTool.remove(pngPath)
            ExternalTool.remove(rawPath)
        }
        let result = try ExternalTool.run(ExternalTool.python3!, ["-c", Self.pythonDecoder, pngPath, rawPath])
        #expect(result.status == 0, "python3 failed: \(result.error)")
        #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines) == "37 23 IHDR,IDAT,IEND")
        let decoded = try [UInt8](Data(contentsOf: URL(fileURLWithPath: rawPath)))
        #expect(decoded == image.pixels)
    }

    @Test("file(1) recognises the PNG", .enabled(if: ExternalTool.file != nil, "file is not installed"))
    func fileRecognises() throws {
        let png = PNGEncoder.encode(TestImage.pattern(width: 33, height: 12))
        let path = try ExternalTool.temporaryFile(png, suffix: ".png")
        defer { ExternalTool.remove(path) }
        let result = try ExternalTool.run(ExternalTool.file!, ["-b", path])
        #expect(result.output.contains("PNG image data, 33 x 12, 8-bit/color RGB"), "file said: \(result.output)")
    }

    /// Parses chunks (checking CRCs with zlib.crc32), inflates, unfilters, writes raw RGB.
    static let pythonDecoder = #"""
        import struct, sys, zlib
        data = open(sys.argv[1], 'rb').read()
        assert data[:8] == b'\x89PNG\r\n\x1a\n', 'signature'
        pos, types, idat = 8, [], b''
        while pos < len(data):
            length, kind = struct.unpack('>I4s', data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            crc, = struct.unpack('>I', data[pos + 8 + length:pos + 12 + length])
            assert zlib.crc32(kind + body) & 0xffffffff == crc, 'crc ' + kind.decode()
            types.append(kind.decode())
            if kind == b'IHDR':
                width, height, depth, colour, _, _, interlace = struct.unpack('>IIBBBBB', body)
                assert (depth, colour, interlace) == (8, 2, 0)
            if kind == b'IDAT':
                idat += body
            pos += 12 + length
        raw = zlib.decompress(idat)
        stride = width * 3
        assert len(raw) == height * (stride + 1)
        out, prev = bytearray(), bytearray(stride)
        for y in range(height):
            f = raw[y * (stride + 1)]
            line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
            for i in range(stride):
                a = line[i - 3] if i >= 3 else 0
                b = prev[i]
                c = prev[i - 3] if i >= 3 else 0
                if f == 0: p = 0
                elif f == 1: p = a
                elif f == 2: p = b
                elif f == 3: p = (a + b) // 2
                elif f == 4:
                    q = a + b - c
                    pa, pb, pc = abs(q - a), abs(q - b), abs(q - c)
                    p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                else: raise ValueError(f)
                line[i] = (line[i] + p) & 255
            out += line
            prev = line
        open(sys.argv[2], 'wb').write(out)
        print(width, height, ','.join(types))
        """#
}
