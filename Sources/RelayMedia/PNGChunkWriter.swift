/// Builds a PNG byte stream: the signature, then chunks of length, type, data and CRC-32.
struct PNGChunkWriter {
    static let signature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]

    private(set) var bytes: [UInt8]

    init(reservingCapacity capacity: Int = 0) {
        bytes = Self.signature
        bytes.reserveCapacity(capacity + 64)
    }

    /// Appends one chunk whose data is `prefix` followed by `data` (fdAT's sequence number
    /// travels as a prefix so the compressed frame is never copied into a temporary).
    mutating func append(_ type: StaticString, prefix: [UInt8] = [], data: [UInt8] = []) {
        precondition(type.utf8CodeUnitCount == 4, "PNG chunk types are four letters")
        let length = prefix.count + data.count
        precondition(length <= Int(Int32.max), "PNG chunk too large")
        Self.appendBigEndian(UInt32(length), to: &bytes)
        let typeBytes = UnsafeRawBufferPointer(start: type.utf8Start, count: 4)
        bytes.append(contentsOf: typeBytes)
        bytes.append(contentsOf: prefix)
        bytes.append(contentsOf: data)
        var crc = Deflater.crc32(typeBytes)
        crc = Deflater.crc32(prefix, continuing: crc)
        crc = Deflater.crc32(data, continuing: crc)
        Self.appendBigEndian(crc, to: &bytes)
    }

    static func appendBigEndian(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value >> 24))
        bytes.append(UInt8(truncatingIfNeeded: value >> 16))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    static func appendBigEndian(_ value: UInt16, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    /// IHDR data for an 8-bit truecolour, non-interlaced image.
    static func header(width: Int, height: Int) -> [UInt8] {
        var data: [UInt8] = []
        appendBigEndian(UInt32(width), to: &data)
        appendBigEndian(UInt32(height), to: &data)
        // bit depth 8, colour type 2 (RGB), compression 0, filter method 0, no interlace.
        data += [8, 2, 0, 0, 0]
        return data
    }
}
