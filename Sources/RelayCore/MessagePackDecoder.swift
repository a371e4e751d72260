/// A recursive-descent MessagePack decoder over a byte buffer; one instance decodes one document.
struct MessagePackDecoder {
    /// What a bin payload becomes: JSONValue has no bytes type (see ``MessagePack``).
    static let binaryPrefix = "data:application/octet-stream;base64,"

    private let bytes: UnsafeRawBufferPointer
    private let maxDepth: Int
    private let maxCollectionCount: Int
    private var position = 0
    private var depth = 0

    init(bytes: UnsafeRawBufferPointer, maxDepth: Int, maxCollectionCount: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
        self.maxCollectionCount = maxCollectionCount
    }

    mutating func decodeDocument() throws(MessagePackError) -> JSONValue {
        guard !bytes.isEmpty else {
            throw MessagePackError(.unexpectedEnd, at: 0, "empty input: expected a MessagePack value")
        }
        let value = try decodeValue()
        guard position == bytes.count else {
            let count = bytes.count - position
            throw MessagePackError(
                .trailingData,
                at: position,
                "\(count) trailing byte\(count == 1 ? "" : "s") after the value"
            )
        }
        return value
    }

    private var remaining: Int { bytes.count - position }

    // MARK: - Values

    private mutating func decodeValue() throws(MessagePackError) -> JSONValue {
        let start = position
        guard position < bytes.count else {
            throw MessagePackError(.unexpectedEnd, at: start, "unexpected end of input: expected a value")
        }
        let format = bytes[position]
        position += 1
        switch format {
        case 0x00...0x7F:
            return .number(Double(format))
        case 0x80...0x8F:
            return try decodeMap(count: Int(format & 0x0F), at: start)
        case 0x90...0x9F:
            return try decodeArray(count: Int(format & 0x0F), at: start)
        case 0xA0...0xBF, 0xD9...0xDB:
            return .string(try decodeString(at: start))
        case 0xC0:
            return .null
        case 0xC1:
            throw MessagePackError(.invalidFormat, at: start, "format byte 0xC1 is never used")
        case 0xC2:
            return .bool(false)
        case 0xC3:
            return .bool(true)
        case 0xC4:
            return try decodeBinary(length: Int(try read(UInt8.self, at: start)), at: start)
        case 0xC5:
            return try decodeBinary(length: Int(try read(UInt16.self, at: start)), at: start)
        case 0xC6:
            return try decodeBinary(length: Int(try read(UInt32.self, at: start)), at: start)
        case 0xC7...0xC9, 0xD4...0xD8:
            throw MessagePackError(
                .unsupportedExtension,
                at: start,
                "ext types are not supported (\(Self.formatName(format)))"
            )
        case 0xCA:
            let value = Float(bitPattern: try read(UInt32.self, at: start))
            return .number(try finite(Double(value), at: start))
        case 0xCB:
            let value = Double(bitPattern: try read(UInt64.self, at: start))
            return .number(try finite(value, at: start))
        case 0xCC:
            return .number(Double(try read(UInt8.self, at: start)))
        case 0xCD:
            return .number(Double(try read(UInt16.self, at: start)))
        case 0xCE:
            return .number(Double(try read(UInt32.self, at: start)))
        case 0xCF:
            // Beyond 2^53 this rounds to the nearest Double, as a JSON parser does with such a number.
            return .number(Double(try read(UInt64.self, at: start)))
        case 0xD0:
            return .number(Double(try read(Int8.self, at: start)))
        case 0xD1:
            return .number(Double(try read(Int16.self, at: start)))
        case 0xD2:
            return .number(Double(try read(Int32.self, at: start)))
        case 0xD3:
            return .number(Double(try read(Int64.self, at: start)))
        case 0xDC:
            return try decodeArray(count: Int(try read(UInt16.self, at: start)), at: start)
        case 0xDD:
            return try decodeArray(count: Int(try read(UInt32.self, at: start)), at: start)
        case 0xDE:
            return try decodeMap(count: Int(try read(UInt16.self, at: start)), at: start)
        case 0xDF:
            return try decodeMap(count: Int(try read(UInt32.self, at: start)), at: start)
        default:
            // 0xE0...0xFF: negative fixint.
            return .number(Double(Int8(bitPattern: format)))
        }
    }

    /// Reads the big-endian field that follows the format byte at `start`.
    private mutating func read<T: FixedWidthInteger>(_ type: T.Type, at start: Int) throws(MessagePackError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else {
            throw MessagePackError(
                .unexpectedEnd,
                at: start,
                "unexpected end of input: \(Self.formatName(bytes[start])) needs \(size) more byte\(size == 1 ? "" : "s"), \(remaining) remain"
            )
        }
        let value = T(bigEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        position += size
        return value
    }

    private func finite(_ value: Double, at start: Int) throws(MessagePackError) -> Double {
        guard value.isFinite else {
            throw MessagePackError(
                .nonFiniteNumber,
                at: start,
                "\(Self.formatName(bytes[start])) \(value.isNaN ? "NaN" : "infinity") cannot be represented in JSON"
            )
        }
        return value
    }

    /// Claims the next `length` payload bytes of the value at `start`, after checking that they exist.
    private mutating func payload(length: Int, at start: Int) throws(MessagePackError) -> UnsafeRawBufferPointer {
        guard length <= remaining else {
            throw MessagePackError(
                .unexpectedEnd,
                at: start,
                "unexpected end of input: \(Self.formatName(bytes[start])) declares \(length) bytes, \(remaining) remain"
            )
        }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[position..<position + length])
        position += length
        return payload
    }

    // MARK: - Strings and bytes

    /// Decodes a str whose format byte, at `start`, has been consumed.
    private mutating func decodeString(at start: Int) throws(MessagePackError) -> String {
        let format = bytes[start]
        let length: Int
        switch format {
        case 0xD9: length = Int(try read(UInt8.self, at: start))
        case 0xDA: length = Int(try read(UInt16.self, at: start))
        case 0xDB: length = Int(try read(UInt32.self, at: start))
        default: length = Int(format & 0x1F)
        }
        let utf8 = try payload(length: length, at: start)
        let string = utf8.withMemoryRebound(to: UInt8.self) { String(validating: $0, as: UTF8.self) }
        guard let string else {
            throw MessagePackError(.invalidUTF8, at: start, "\(Self.formatName(format)) is not well-formed UTF-8")
        }
        return string
    }

    private mutating func decodeBinary(length: Int, at start: Int) throws(MessagePackError) -> JSONValue {
        let data = try payload(length: length, at: start)
        return .string(Self.binaryPrefix + Base64.encode([UInt8](data)))
    }

    // MARK: - Collections

    /// Checks a declared element count against the limits and the input left, where every element
    /// takes at least `minimumSize` bytes; this runs before anything is allocated for the elements.
    private mutating func enterCollection(count: Int, minimumSize: Int, at start: Int) throws(MessagePackError) {
        let name = Self.formatName(bytes[start])
        depth += 1
        guard depth <= maxDepth else {
            throw MessagePackError(.tooDeep, at: start, "arrays and maps nested deeper than \(maxDepth) levels")
        }
        guard count <= maxCollectionCount else {
            throw MessagePackError(
                .tooLarge,
                at: start,
                "\(name) of \(count) elements exceeds the limit of \(maxCollectionCount)"
            )
        }
        guard count <= remaining / minimumSize else {
            throw MessagePackError(
                .unexpectedEnd,
                at: start,
                "unexpected end of input: \(name) declares \(count) elements, \(remaining) bytes remain"
            )
        }
    }

    private mutating func decodeArray(count: Int, at start: Int) throws(MessagePackError) -> JSONValue {
        try enterCollection(count: count, minimumSize: 1, at: start)
        var elements: [JSONValue] = []
        elements.reserveCapacity(count)
        for _ in 0..<count {
            elements.append(try decodeValue())
        }
        depth -= 1
        return .array(elements)
    }

    private mutating func decodeMap(count: Int, at start: Int) throws(MessagePackError) -> JSONValue {
        try enterCollection(count: count, minimumSize: 2, at: start)
        var object = JSONObject()
        for _ in 0..<count {
            let keyStart = position
            guard keyStart < bytes.count else {
                throw MessagePackError(.unexpectedEnd, at: keyStart, "unexpected end of input: expected a map key")
            }
            let format = bytes[keyStart]
            guard (0xA0...0xBF).contains(format) || (0xD9...0xDB).contains(format) else {
                throw MessagePackError(
                    .nonStringKey,
                    at: keyStart,
                    "map key must be a string, found \(Self.formatName(format))"
                )
            }
            position += 1
            let key = try decodeString(at: keyStart)
            let value = try decodeValue()
            guard object.appendIfAbsent(key, value) else {
                throw MessagePackError(.duplicateKey, at: keyStart, "duplicate key \(Self.quoted(key))")
            }
        }
        depth -= 1
        return .object(object)
    }

    // MARK: - Messages

    /// The specification's name for the format that `byte` starts.
    static func formatName(_ byte: UInt8) -> String {
        switch byte {
        case 0x00...0x7F: "positive fixint"
        case 0x80...0x8F: "fixmap"
        case 0x90...0x9F: "fixarray"
        case 0xA0...0xBF: "fixstr"
        case 0xC0: "nil"
        case 0xC1: "0xC1"
        case 0xC2, 0xC3: "bool"
        case 0xC4: "bin8"
        case 0xC5: "bin16"
        case 0xC6: "bin32"
        case 0xC7: "ext8"
        case 0xC8: "ext16"
        case 0xC9: "ext32"
        case 0xCA: "float32"
        case 0xCB: "float64"
        case 0xCC: "uint8"
        case 0xCD: "uint16"
        case 0xCE: "uint32"
        case 0xCF: "uint64"
        case 0xD0: "int8"
        case 0xD1: "int16"
        case 0xD2: "int32"
        case 0xD3: "int64"
        case 0xD4: "fixext1"
        case 0xD5: "fixext2"
        case 0xD6: "fixext4"
        case 0xD7: "fixext8"
        case 0xD8: "fixext16"
        case 0xD9: "str8"
        case 0xDA: "str16"
        case 0xDB: "str32"
        case 0xDC: "array16"
        case 0xDD: "array32"
        case 0xDE: "map16"
        case 0xDF: "map32"
        default: "negative fixint"
        }
    }

    /// A key as JSON string syntax, shortened for error messages.
    private static func quoted(_ key: String) -> String {
        var output: [UInt8] = []
        JSONWriter.appendString(key, into: &output)
        let shown = String(decoding: output, as: UTF8.self)
        return shown.count <= 64 ? shown : String(shown.prefix(60)) + "…"
    }
}
