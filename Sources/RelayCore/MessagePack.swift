/// MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md) to and from JSONValue, for fal realtime frames.
///
/// fal's realtime WebSocket carries one msgpack value per binary frame in both directions; the Python
/// client packs with `use_bin_type=True` (strings as str, bytes as bin) and unpacks with `raw=False`.
///
/// Encoding writes the smallest header for every value: integral numbers that fit `Int64` or
/// `UInt64` as the smallest int format (`1.0` and `1` both become positive fixint 1, `-0.0` becomes 0),
/// other numbers as float64, strings as str (never bin), objects as maps with string keys in stored
/// order. NaN and ±infinity are written as nil, as ``JSONValue/serialized()`` writes them as `null`.
///
/// Decoding accepts every format except ext and fixext, with these mappings onto JSON:
/// - integers become `Double`s (int64/uint64 beyond ±2^53 are rounded to the nearest one);
/// - float32 is widened; a NaN or infinite float32/float64 is an error;
/// - str must be well-formed UTF-8;
/// - bin8/16/32 becomes a string `data:application/octet-stream;base64,<payload>`, because JSONValue
///   has no bytes type and fal realtime apps send images as bytes; a data URI is what the rest of the
///   relay already handles for inline media. (Encoding that string again yields a str, not a bin.)
/// - map keys must be strings and unique (I-JSON, as `JSONValue(parsing:)` requires).
public enum MessagePack {
    /// The MessagePack form of `value`.
    public static func encode(_ value: JSONValue) -> [UInt8] {
        var output: [UInt8] = []
        encode(value, into: &output)
        return output
    }

    /// Appends the MessagePack form of `value` to `output`.
    ///
    /// A string of 2^32 bytes or more, or an array or object of 2^32 elements or more, has no
    /// MessagePack form; passing one traps.
    public static func encode(_ value: JSONValue, into output: inout [UInt8]) {
        switch value {
        case .null:
            output.append(0xC0)
        case .bool(let value):
            output.append(value ? 0xC3 : 0xC2)
        case .number(let value):
            appendNumber(value, into: &output)
        case .string(let value):
            appendString(value, into: &output)
        case .array(let elements):
            appendHeader(count: elements.count, fix: 0x90, fixLimit: 16, wide16: 0xDC, wide32: 0xDD, into: &output)
            for element in elements {
                encode(element, into: &output)
            }
        case .object(let object):
            appendHeader(count: object.count, fix: 0x80, fixLimit: 16, wide16: 0xDE, wide32: 0xDF, into: &output)
            for (key, value) in object {
                appendString(key, into: &output)
                encode(value, into: &output)
            }
        }
    }

    /// Decodes exactly one value (trailing bytes are an error).
    ///
    /// Limits: arrays and maps nested deeper than `maxDepth` (a scalar is depth 0) and collections of
    /// more than `maxCollectionCount` elements are errors; a declared length or count that the
    /// remaining input cannot hold (every element takes at least one byte) is an error before
    /// anything is allocated, so memory stays proportional to the input's size. Decoding recurses
    /// once per level, so keep `maxDepth` modest.
    public static func decode(
        _ bytes: UnsafeRawBufferPointer,
        maxDepth: Int = 64,
        maxCollectionCount: Int = .max
    ) throws(MessagePackError) -> JSONValue {
        var decoder = MessagePackDecoder(bytes: bytes, maxDepth: maxDepth, maxCollectionCount: maxCollectionCount)
        return try decoder.decodeDocument()
    }

    /// Decodes exactly one value; the rules are those of the `UnsafeRawBufferPointer` overload.
    public static func decode(
        _ bytes: [UInt8],
        maxDepth: Int = 64,
        maxCollectionCount: Int = .max
    ) throws(MessagePackError) -> JSONValue {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(MessagePackError) -> JSONValue in
                try decode(buffer, maxDepth: maxDepth, maxCollectionCount: maxCollectionCount)
            }
        }
        return try result.get()
    }

    // MARK: - Encoding

    private static func appendNumber(_ value: Double, into output: inout [UInt8]) {
        guard value.isFinite else {
            output.append(0xC0)
            return
        }
        if let integer = Int64(exactly: value) {
            if integer >= 0 {
                appendUnsigned(UInt64(integer), into: &output)
            } else {
                appendNegative(integer, into: &output)
            }
        } else if let unsigned = UInt64(exactly: value) {
            appendUnsigned(unsigned, into: &output)
        } else {
            output.append(0xCB)
            appendBigEndian(value.bitPattern, into: &output)
        }
    }

    private static func appendUnsigned(_ value: UInt64, into output: inout [UInt8]) {
        switch value {
        case 0...0x7F:
            output.append(UInt8(value))
        case 0x80...0xFF:
            output.append(0xCC)
            output.append(UInt8(value))
        case 0x100...0xFFFF:
            output.append(0xCD)
            appendBigEndian(UInt16(value), into: &output)
        case 0x1_0000...0xFFFF_FFFF:
            output.append(0xCE)
            appendBigEndian(UInt32(value), into: &output)
        default:
            output.append(0xCF)
            appendBigEndian(value, into: &output)
        }
    }

    /// `value` is negative.
    private static func appendNegative(_ value: Int64, into output: inout [UInt8]) {
        switch value {
        case -32..<0:
            output.append(UInt8(truncatingIfNeeded: value))
        case Int64(Int8.min) ..< -32:
            output.append(0xD0)
            output.append(UInt8(truncatingIfNeeded: value))
        case Int64(Int16.min)..<Int64(Int8.min):
            output.append(0xD1)
            appendBigEndian(Int16(value), into: &output)
        case Int64(Int32.min)..<Int64(Int16.min):
            output.append(0xD2)
            appendBigEndian(Int32(value), into: &output)
        default:
            output.append(0xD3)
            appendBigEndian(value, into: &output)
        }
    }

    private static func appendString(_ value: String, into output: inout [UInt8]) {
        let utf8 = value.utf8
        let count = utf8.count
        switch count {
        case 0..<32:
            output.append(0xA0 | UInt8(count))
        case 32...0xFF:
            output.append(0xD9)
            output.append(UInt8(count))
        default:
            appendWideHeader(count: count, wide16: 0xDA, wide32: 0xDB, into: &output)
        }
        output.append(contentsOf: utf8)
    }

    private static func appendHeader(
        count: Int,
        fix: UInt8,
        fixLimit: Int,
        wide16: UInt8,
        wide32: UInt8,
        into output: inout [UInt8]
    ) {
        if count < fixLimit {
            output.append(fix | UInt8(count))
        } else {
            appendWideHeader(count: count, wide16: wide16, wide32: wide32, into: &output)
        }
    }

    private static func appendWideHeader(count: Int, wide16: UInt8, wide32: UInt8, into output: inout [UInt8]) {
        if count <= 0xFFFF {
            output.append(wide16)
            appendBigEndian(UInt16(count), into: &output)
        } else {
            precondition(count <= 0xFFFF_FFFF, "MessagePack cannot represent \(count) bytes or elements")
            output.append(wide32)
            appendBigEndian(UInt32(count), into: &output)
        }
    }

    private static func appendBigEndian<T: FixedWidthInteger>(_ value: T, into output: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { output.append(contentsOf: $0) }
    }
}
