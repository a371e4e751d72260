import CXXHash
import Foundation
import Testing

@testable import RelayStore

@Suite("LZ4FrameCodec")
struct LZ4FrameCodecTests {
    static let payloads: [(String, [UInt8])] = [
        ("empty", []),
        ("one byte", [0x2A]),
        ("1 MiB random", Fixtures.randomBytes(1 << 20)),
        ("1 MiB compressible", Fixtures.text(1 << 20)),
        ("3 s WAV", Fixtures.wav(seconds: 3)),
    ]

    @Test("round trip", arguments: 0..<payloads.count)
    func roundTrip(index: Int) throws {
        let (_, bytes) = Self.payloads[index]
        let frame = LZ4FrameCodec.compress(bytes)
        #expect(Array(frame.prefix(4)) == [0x04, 0x22, 0x4D, 0x18], "LZ4 frame magic")
        let decoded = try LZ4FrameCodec.decompress(frame)
        #expect(decoded == bytes)
        if !bytes.isEmpty {
            // An empty frame has no size field: LZ4 frames spell "unknown" as 0.
            #expect(
                LZ4FrameCodec.contentSize(ofFrameHeader: Array(frame.prefix(LZ4FrameCodec.maximumHeaderSize)))
                    == bytes.count
            )
        }
    }

    @Test func compressibleInputShrinks() {
        let text = Fixtures.text(1 << 20)
        #expect(LZ4FrameCodec.compress(text).count < text.count / 4)
        let random = Fixtures.randomBytes(1 << 20)
        #expect(LZ4FrameCodec.compress(random).count >= random.count, "random bytes don't compress")
    }

    @Test func frameDeclaresSizeAndContentChecksum() {
        let frame = LZ4FrameCodec.compress(Fixtures.text(1000))
        let flags = frame[4]
        #expect(flags >> 6 == 0b01, "frame format version 01")
        #expect(flags & 0x08 != 0, "content size present")
        #expect(flags & 0x04 != 0, "content checksum present")
    }

    @Test func flippedBitFailsTheChecksum() throws {
        // Random bytes are stored in uncompressed blocks: a flipped bit still decodes, only the checksum can tell.
        var frame = LZ4FrameCodec.compress(Fixtures.randomBytes(200_000))
        let firstBlockData = 15 + 4  // header: magic 4, FLG, BD, size 8, HC; then a 4-byte block size
        #expect(frame[firstBlockData - 1] & 0x80 != 0, "first block stored uncompressed")
        frame[firstBlockData + 1000] ^= 0x01
        let error = #expect(throws: StoreError.self) { try LZ4FrameCodec.decompress(frame) }
        #expect(error?.isCorrupt == true)
        #expect(error?.description.contains("hecksum") == true, "\(String(describing: error))")
    }

    @Test func checksumFieldIsVerified() throws {
        var frame = LZ4FrameCodec.compress(Fixtures.text(10_000))
        frame[frame.count - 1] ^= 0xFF  // the last 4 bytes are the XXH32 content checksum
        #expect(throws: StoreError.corrupt(nil)) { try LZ4FrameCodec.decompress(frame) }
    }

    @Test func truncatedFrameIsCorrupt() {
        let frame = LZ4FrameCodec.compress(Fixtures.text(100_000))
        for cut in [1, 4, 5, frame.count / 2, frame.count - 3] {
            let truncated = Array(frame.dropLast(cut))
            #expect(throws: StoreError.corrupt(nil), "cut \(cut)") { try LZ4FrameCodec.decompress(truncated) }
        }
    }

    @Test func trailingBytesAreCorrupt() {
        let frame = LZ4FrameCodec.compress(Fixtures.text(1000)) + [0, 1, 2]
        #expect(throws: StoreError.corrupt(nil)) { try LZ4FrameCodec.decompress(frame) }
    }

    @Test func garbageIsCorrupt() {
        #expect(throws: StoreError.corrupt(nil)) { try LZ4FrameCodec.decompress([]) }
        #expect(throws: StoreError.corrupt(nil)) { try LZ4FrameCodec.decompress(Array("not a frame".utf8)) }
        #expect(throws: StoreError.corrupt(nil)) { try LZ4FrameCodec.decompress(Fixtures.randomBytes(4096)) }
        #expect(LZ4FrameCodec.contentSize(ofFrameHeader: Array("hello".utf8)) == nil)
        #expect(LZ4FrameCodec.contentSize(ofFrameHeader: []) == nil)
    }

    /// Our frame with another content size in its header (and the header checksum made to match, so that only
    /// the size lies): magic(4) FLG BD size(8) HC, HC = second byte of XXH32(FLG…size).
    static func frame(_ frame: [UInt8], declaring size: UInt64) -> [UInt8] {
        var frame = frame
        withUnsafeBytes(of: size.littleEndian) { frame.replaceSubrange(6..<14, with: $0) }
        let checksum = frame[4..<14].withUnsafeBytes { XXH32($0.baseAddress, $0.count, 0) }
        frame[14] = UInt8(truncatingIfNeeded: checksum >> 8)
        return frame
    }

    @Test func headerDeclaringAnImplausibleSizeIsRefusedBeforeAllocating() {
        let original = LZ4FrameCodec.compress(Fixtures.text(1000))
        #expect(Self.frame(original, declaring: 1000) == original, "the header rewrite reproduces liblz4's")
        let lying = Self.frame(original, declaring: 1 << 40)  // 1 TiB
        #expect(LZ4FrameCodec.contentSize(ofFrameHeader: lying) == 1 << 40)
        let error = #expect(throws: StoreError.self) { try LZ4FrameCodec.decompress(lying) }
        #expect(error?.isCorrupt == true)
        #expect(error?.description.contains("declares") == true, "refused by the size check, not by liblz4")
    }

    @Test func headerDeclaringAWrongSizeIsCorrupt() {
        let original = LZ4FrameCodec.compress(Fixtures.text(100_000))
        for declared: UInt64 in [99_999, 100_001, 1, 150_000] {
            #expect(throws: StoreError.corrupt(nil), "declared \(declared)") {
                try LZ4FrameCodec.decompress(Self.frame(original, declaring: declared))
            }
        }
    }

    static let lz4CLI = "/usr/bin/lz4"

    @Test(
        "the lz4 CLI decodes our frames byte for byte",
        .enabled(if: FileManager.default.isExecutableFile(atPath: lz4CLI), "\(lz4CLI) is not installed")
    )
    func cliDecodesOurFrames() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for (name, bytes) in [("text", Fixtures.text(1 << 20)), ("wav", Fixtures.wav(seconds: 2)), ("one", [0x2A])] {
            let framePath = directory.path + "/\(name).lz4"
            try Fixtures.write(LZ4FrameCodec.compress(bytes), to: framePath)
            let (status, output) = try Fixtures.run(Self.lz4CLI, ["-d", "-c", framePath])
            #expect(status == 0, "lz4 -d failed on \(name)")
            #expect([UInt8](output) == bytes, "\(name)")
            let (testStatus, _) = try Fixtures.run(Self.lz4CLI, ["-t", framePath])
            #expect(testStatus == 0, "lz4 -t (checksum test) failed on \(name)")
        }
    }

    @Test(
        "frames from the lz4 CLI (no size in the header) decode",
        .enabled(if: FileManager.default.isExecutableFile(atPath: lz4CLI), "\(lz4CLI) is not installed")
    )
    func weDecodeCLIFrames() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let bytes = Fixtures.text(700_000) + Fixtures.randomBytes(300_000)
        let inputPath = directory.path + "/input"
        try Fixtures.write(bytes, to: inputPath)
        // --no-frame-crc off by default: the CLI writes a content checksum; -BD linked blocks like ours.
        let (status, output) = try Fixtures.run(Self.lz4CLI, ["-c", "-BD", inputPath])
        #expect(status == 0)
        let frame = [UInt8](output)
        #expect(LZ4FrameCodec.contentSize(ofFrameHeader: Array(frame.prefix(LZ4FrameCodec.maximumHeaderSize))) == nil)
        #expect(try LZ4FrameCodec.decompress(frame) == bytes)
        let (sizedStatus, sizedOutput) = try Fixtures.run(Self.lz4CLI, ["-c", "--content-size", inputPath])
        #expect(sizedStatus == 0)
        #expect(try LZ4FrameCodec.decompress([UInt8](sizedOutput)) == bytes)
    }
}
