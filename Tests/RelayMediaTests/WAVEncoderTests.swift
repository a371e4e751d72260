import Foundation
import RelayMedia
import Testing

@Suite("WAVEncoder")
struct WAVEncoderTests {
    static func littleEndian32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
            | UInt32(bytes[offset + 3]) << 24
    }

    static func littleEndian16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    static func ascii(_ bytes: [UInt8], _ offset: Int) -> String {
        String(decoding: bytes[offset..<(offset + 4)], as: UTF8.self)
    }

    @Test("header fields and little-endian samples")
    func header() {
        let samples: [Int16] = [0, 1, -1, 32_767, -32_768, 0x1234]
        let wav = WAVEncoder.encode(samples: samples, sampleRate: 22_050)
        #expect(wav.count == 44 + 12)
        #expect(Self.ascii(wav, 0) == "RIFF")
        #expect(Self.littleEndian32(wav, 4) == UInt32(wav.count - 8))
        #expect(Self.ascii(wav, 8) == "WAVE")
        #expect(Self.ascii(wav, 12) == "fmt ")
        #expect(Self.littleEndian32(wav, 16) == 16)
        #expect(Self.littleEndian16(wav, 20) == 1)  // PCM
        #expect(Self.littleEndian16(wav, 22) == 1)  // channels
        #expect(Self.littleEndian32(wav, 24) == 22_050)
        #expect(Self.littleEndian32(wav, 28) == 44_100)  // byte rate
        #expect(Self.littleEndian16(wav, 32) == 2)  // block align
        #expect(Self.littleEndian16(wav, 34) == 16)
        #expect(Self.ascii(wav, 36) == "data")
        #expect(Self.littleEndian32(wav, 40) == 12)
        #expect(Array(wav[44...]) == [0, 0, 1, 0, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x80, 0x34, 0x12])
    }

    @Test("stereo: block align and byte rate double; a trailing half frame is dropped")
    func stereo() {
        let wav = WAVEncoder.encode(samples: [1, 2, 3, 4, 5], sampleRate: 48_000, channels: 2)
        #expect(Self.littleEndian16(wav, 22) == 2)
        #expect(Self.littleEndian32(wav, 28) == 192_000)
        #expect(Self.littleEndian16(wav, 32) == 4)
        #expect(Self.littleEndian32(wav, 40) == 8)
        #expect(wav.count == 52)
    }

    @Test("no samples is a valid empty file")
    func empty() {
        let wav = WAVEncoder.encode(samples: [], sampleRate: 24_000)
        #expect(wav.count == 44)
        #expect(Self.littleEndian32(wav, 4) == 36)
        #expect(Self.littleEndian32(wav, 40) == 0)
    }

    @Test(
        "Python's wave module reads it back",
        .enabled(if: ExternalTool.python3 != nil, "python3 is not installed")
    )
    func pythonReads() throws {
        let samples = SyntheticAudio.render(text: "hello world", seed: 7, seconds: 0.5, sampleRate: 16_000)
        let wav = WAVEncoder.encode(samples: samples, sampleRate: 16_000)
        let path = try ExternalTool.temporaryFile(wav, suffix: ".wav")
        defer { ExternalTool.remove(path) }
        let script = """
            import struct, sys, wave
            w = wave.open(sys.argv[1], 'rb')
            n = w.getnframes()
            frames = struct.unpack('<%dh' % n, w.readframes(n))
            print(w.getnchannels(), w.getsampwidth(), w.getframerate(), n, sum(frames), max(frames))
            """
        let result = try ExternalTool.run(ExternalTool.python3!, ["-c", script, path])
        #expect(result.status == 0, "python3 failed: \(result.error)")
        let sum = samples.reduce(0) { $0 + Int($1) }
        let expected = "1 2 16000 \(samples.count) \(sum) \(samples.max()!)"
        #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines) == expected)
    }
}
