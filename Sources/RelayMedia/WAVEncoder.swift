/// Encodes 16-bit PCM samples as a RIFF/WAVE file (little-endian, 44-byte header).
public enum WAVEncoder {
    /// - Parameters:
    ///   - samples: interleaved when `channels` > 1; a trailing partial frame is dropped.
    ///   - sampleRate: clamped to 1 ... 2³¹-1 / 4 per channel.
    ///   - channels: clamped to 1 ... 65 535.
    public static func encode(samples: [Int16], sampleRate: Int, channels: Int = 1) -> [UInt8] {
        let channelCount = min(max(channels, 1), Int(UInt16.max))
        let rate = min(max(sampleRate, 1), Int(UInt32.max) / (2 * channelCount))
        let sampleCount = samples.count - samples.count % channelCount
        let dataBytes = sampleCount * 2
        precondition(dataBytes <= Int(UInt32.max) - 36, "too many samples for one WAV file")

        var bytes: [UInt8] = []
        bytes.reserveCapacity(44 + dataBytes)
        bytes += Array("RIFF".utf8)
        appendLittleEndian(UInt32(36 + dataBytes), to: &bytes)
        bytes += Array("WAVEfmt ".utf8)
        appendLittleEndian(UInt32(16), to: &bytes)  // fmt chunk size
        appendLittleEndian(UInt16(1), to: &bytes)  // PCM
        appendLittleEndian(UInt16(channelCount), to: &bytes)
        appendLittleEndian(UInt32(rate), to: &bytes)
        appendLittleEndian(UInt32(rate * channelCount * 2), to: &bytes)  // byte rate
        appendLittleEndian(UInt16(channelCount * 2), to: &bytes)  // block align
        appendLittleEndian(UInt16(16), to: &bytes)  // bits per sample
        bytes += Array("data".utf8)
        appendLittleEndian(UInt32(dataBytes), to: &bytes)
        samples.withUnsafeBufferPointer { source in
            var index = 0
            while index < sampleCount {
                let value = UInt16(bitPattern: source[index])
                bytes.append(UInt8(truncatingIfNeeded: value))
                bytes.append(UInt8(truncatingIfNeeded: value >> 8))
                index += 1
            }
        }
        return bytes
    }

    private static func appendLittleEndian(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value >> 16))
        bytes.append(UInt8(truncatingIfNeeded: value >> 24))
    }

    private static func appendLittleEndian(_ value: UInt16, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    }
}
