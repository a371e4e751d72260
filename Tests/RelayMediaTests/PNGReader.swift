internal import CZlib
import Foundation

/// A small, independent PNG reader for the tests: checks the signature and every chunk's CRC
/// (with its own CRC-32, not zlib's), inflates with zlib and undoes all five filter types.
struct PNGReader {
    struct Chunk {
        var type: String
        var data: [UInt8]
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let chunks: [Chunk]

    init(_ bytes: [UInt8]) throws {
        guard bytes.count >= 8, Array(bytes[0..<8]) == [137, 80, 78, 71, 13, 10, 26, 10] else {
            throw Failure(description: "bad PNG signature")
        }
        var chunks: [Chunk] = []
        var offset = 8
        while offset < bytes.count {
            guard offset + 12 <= bytes.count else { throw Failure(description: "truncated chunk header") }
            let length = Int(Self.bigEndian32(bytes, offset))
            guard offset + 12 + length <= bytes.count else { throw Failure(description: "truncated chunk") }
            let typeBytes = Array(bytes[(offset + 4)..<(offset + 8)])
            let data = Array(bytes[(offset + 8)..<(offset + 8 + length)])
            let stored = Self.bigEndian32(bytes, offset + 8 + length)
            let computed = Self.crc32(typeBytes + data)
            let type = String(decoding: typeBytes, as: UTF8.self)
            guard stored == computed else {
                throw Failure(description: "CRC mismatch in \(type): stored \(stored), computed \(computed)")
            }
            chunks.append(Chunk(type: type, data: data))
            offset += 12 + length
        }
        self.chunks = chunks
    }

    var types: [String] { chunks.map(\.type) }

    func first(_ type: String) -> Chunk? { chunks.first { $0.type == type } }

    var width: Int { Int(Self.bigEndian32(first("IHDR")!.data, 0)) }
    var height: Int { Int(Self.bigEndian32(first("IHDR")!.data, 4)) }

    /// The still image a plain (non-APNG) reader sees: the IDAT chunks.
    func pixels() throws -> [UInt8] {
        let data = chunks.filter { $0.type == "IDAT" }.flatMap(\.data)
        return try Self.unfilter(Self.inflate(data, expected: height * (width * 3 + 1)), width: width, height: height)
    }

    /// Pixels of an fdAT chunk's frame (its data after the 4-byte sequence number).
    func framePixels(fdAT chunk: Chunk) throws -> [UInt8] {
        let data = Array(chunk.data.dropFirst(4))
        return try Self.unfilter(Self.inflate(data, expected: height * (width * 3 + 1)), width: width, height: height)
    }

    /// Filter-type byte of each row of the IDAT image.
    func filterTypes() throws -> [UInt8] {
        let data = chunks.filter { $0.type == "IDAT" }.flatMap(\.data)
        let raw = try Self.inflate(data, expected: height * (width * 3 + 1))
        return (0..<height).map { raw[$0 * (width * 3 + 1)] }
    }

    static func inflate(_ data: [UInt8], expected: Int) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: expected + 1)
        var outputLength = uLongf(output.count)
        let status = output.withUnsafeMutableBufferPointer { out in
            data.withUnsafeBufferPointer { input in
                uncompress(out.baseAddress, &outputLength, input.baseAddress, uLong(input.count))
            }
        }
        guard status == Z_OK else { throw Failure(description: "uncompress failed: \(status)") }
        guard Int(outputLength) == expected else {
            throw Failure(description: "inflated \(outputLength) bytes, expected \(expected)")
        }
        return Array(output.prefix(expected))
    }

    static func unfilter(_ raw: [UInt8], width: Int, height: Int) throws -> [UInt8] {
        let stride = width * 3
        var pixels = [UInt8](repeating: 0, count: stride * height)
        for y in 0..<height {
            let filter = raw[y * (stride + 1)]
            for i in 0..<stride {
                let x = Int(raw[y * (stride + 1) + 1 + i])
                let a = i >= 3 ? Int(pixels[y * stride + i - 3]) : 0
                let b = y > 0 ? Int(pixels[(y - 1) * stride + i]) : 0
                let c = (i >= 3 && y > 0) ? Int(pixels[(y - 1) * stride + i - 3]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4:
                    let p = a + b - c
                    let pa = abs(p - a)
                    let pb = abs(p - b)
                    let pc = abs(p - c)
                    predictor = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c)
                default: throw Failure(description: "unknown filter \(filter) on row \(y)")
                }
                pixels[y * stride + i] = UInt8((x + predictor) & 0xFF)
            }
        }
        return pixels
    }

    static func bigEndian32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16
            | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }

    static func bigEndian16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    /// Bitwise CRC-32 (poly 0xEDB88320), deliberately not zlib's.
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1
            }
        }
        return ~crc
    }
}
