extension JSONValue {
    /// Parses one JSON text (RFC 8259 with the I-JSON restrictions of RFC 7493).
    ///
    /// Leading and trailing whitespace is allowed, nothing else after the value. Rejected: invalid
    /// UTF-8, unescaped control characters, unknown escapes, unpaired surrogate escapes, duplicate
    /// keys, numbers beyond the range of a Double (underflow to zero is accepted), non-JSON number
    /// forms (`01`, `+1`, `.5`, `1.`, `NaN`), trailing commas, and nesting deeper than `maxDepth`
    /// arrays/objects (a scalar is depth 0). Parsing recurses once per level, so keep `maxDepth` modest.
    public init(parsing bytes: UnsafeRawBufferPointer, maxDepth: Int = 128) throws(JSONError) {
        var parser = JSONParser(bytes: bytes, maxDepth: maxDepth)
        self = try parser.parseDocument()
    }

    /// Parses one JSON text; the rules are those of the `UnsafeRawBufferPointer` overload.
    public init(parsing bytes: [UInt8], maxDepth: Int = 128) throws(JSONError) {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(JSONError) -> JSONValue in
                try JSONValue(parsing: buffer, maxDepth: maxDepth)
            }
        }
        self = try result.get()
    }

    /// Parses one JSON text from its UTF-8 form; the rules are those of the `UnsafeRawBufferPointer` overload.
    public init(parsing text: String, maxDepth: Int = 128) throws(JSONError) {
        var text = text
        let result = text.withUTF8 { buffer in
            Result { () throws(JSONError) -> JSONValue in
                try JSONValue(parsing: UnsafeRawBufferPointer(buffer), maxDepth: maxDepth)
            }
        }
        self = try result.get()
    }
}

/// A recursive-descent JSON parser over a byte buffer; one instance parses one document.
struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    let maxDepth: Int
    var position = 0
    var depth = 0
    /// Reused for strings with escapes, so unescaping does not allocate per string.
    var scratch: [UInt8] = []

    init(bytes: UnsafeRawBufferPointer, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    mutating func parseDocument() throws(JSONError) -> JSONValue {
        skipWhitespace()
        guard position < bytes.count else {
            throw JSONError(.emptyInput, at: position, "empty input: expected a JSON value")
        }
        let value = try parseValue()
        skipWhitespace()
        guard position == bytes.count else {
            throw JSONError(.trailingData, at: position, "unexpected \(describe(position)) after the JSON value")
        }
        return value
    }

    // MARK: - Values

    mutating func parseValue() throws(JSONError) -> JSONValue {
        guard position < bytes.count else {
            throw JSONError(.unexpectedEnd, at: position, "unexpected end of input: expected a value")
        }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            return try parseObject()
        case UInt8(ascii: "["):
            return try parseArray()
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .number(try parseNumber())
        case UInt8(ascii: "+"):
            throw JSONError(.invalidNumber, at: position, "invalid number: a leading '+' is not allowed")
        case UInt8(ascii: "."):
            throw JSONError(
                .invalidNumber,
                at: position,
                "invalid number: a digit is required before the decimal point"
            )
        case UInt8(ascii: "N"), UInt8(ascii: "I"):
            throw JSONError(
                .unexpectedCharacter,
                at: position,
                "unexpected \(describe(position)): NaN and Infinity are not JSON values"
            )
        default:
            throw JSONError(.unexpectedCharacter, at: position, "unexpected \(describe(position)): expected a value")
        }
    }

    mutating func expectLiteral(_ literal: StaticString) throws(JSONError) {
        let start = position
        let count = literal.utf8CodeUnitCount
        let matches = literal.withUTF8Buffer { expected in
            bytes.count - start >= count && expected.indices.allSatisfy { expected[$0] == bytes[start + $0] }
        }
        guard matches else {
            throw JSONError(.unexpectedCharacter, at: start, "invalid literal: expected '\(literal)'")
        }
        position += count
    }

    mutating func enterContainer() throws(JSONError) {
        depth += 1
        guard depth <= maxDepth else {
            throw JSONError(.tooDeep, at: position, "arrays and objects nested deeper than \(maxDepth) levels")
        }
    }

    mutating func parseArray() throws(JSONError) -> JSONValue {
        let open = position
        try enterContainer()
        position += 1
        skipWhitespace()
        var elements: [JSONValue] = []
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
            position += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            elements.append(try parseValue())
            skipWhitespace()
            guard position < bytes.count else {
                throw JSONError(
                    .unexpectedEnd,
                    at: position,
                    "unexpected end of input: array opened at byte \(open) needs ',' or ']'"
                )
            }
            switch bytes[position] {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
                if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
                    throw JSONError(.trailingComma, at: position, "trailing comma before ']'")
                }
            case UInt8(ascii: "]"):
                position += 1
                depth -= 1
                return .array(elements)
            default:
                throw JSONError(
                    .unexpectedCharacter,
                    at: position,
                    "unexpected \(describe(position)): expected ',' or ']' after an array element"
                )
            }
        }
    }

    mutating func parseObject() throws(JSONError) -> JSONValue {
        let open = position
        try enterContainer()
        position += 1
        skipWhitespace()
        var object = JSONObject()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
            position += 1
            depth -= 1
            return .object(object)
        }
        while true {
            guard position < bytes.count else {
                throw JSONError(
                    .unexpectedEnd,
                    at: position,
                    "unexpected end of input: object opened at byte \(open) needs a key"
                )
            }
            guard bytes[position] == UInt8(ascii: "\"") else {
                throw JSONError(
                    .unexpectedCharacter,
                    at: position,
                    "unexpected \(describe(position)): expected an object key in double quotes"
                )
            }
            let keyStart = position
            let key = try parseString()
            skipWhitespace()
            guard position < bytes.count else {
                throw JSONError(
                    .unexpectedEnd,
                    at: position,
                    "unexpected end of input: expected ':' after an object key"
                )
            }
            guard bytes[position] == UInt8(ascii: ":") else {
                throw JSONError(
                    .unexpectedCharacter,
                    at: position,
                    "unexpected \(describe(position)): expected ':' after an object key"
                )
            }
            position += 1
            skipWhitespace()
            let value = try parseValue()
            guard object.appendIfAbsent(key, value) else {
                throw JSONError(.duplicateKey, at: keyStart, "duplicate key \(Self.quoted(key))")
            }
            skipWhitespace()
            guard position < bytes.count else {
                throw JSONError(
                    .unexpectedEnd,
                    at: position,
                    "unexpected end of input: object opened at byte \(open) needs ',' or '}'"
                )
            }
            switch bytes[position] {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
                if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                    throw JSONError(.trailingComma, at: position, "trailing comma before '}'")
                }
            case UInt8(ascii: "}"):
                position += 1
                depth -= 1
                return .object(object)
            default:
                throw JSONError(
                    .unexpectedCharacter,
                    at: position,
                    "unexpected \(describe(position)): expected ',' or '}' after an object member"
                )
            }
        }
    }

    // MARK: - Strings

    /// Parses a string starting at its opening quote.
    mutating func parseString() throws(JSONError) -> String {
        let open = position
        var index = position + 1
        var usesScratch = false
        while true {
            // A run of bytes copied verbatim: everything up to a quote or backslash.
            let runStart = index
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 {
                    throw JSONError(
                        .controlCharacter,
                        at: index,
                        "control character 0x\(Self.hex(byte)) must be escaped in a string"
                    )
                }
                index += byte < 0x80 ? 1 : try utf8SequenceLength(at: index)
            }
            guard index < bytes.count else {
                throw JSONError(
                    .unexpectedEnd,
                    at: index,
                    "unexpected end of input: string opened at byte \(open) is not terminated"
                )
            }
            let run = UnsafeRawBufferPointer(rebasing: bytes[runStart..<index])
            if bytes[index] == UInt8(ascii: "\"") {
                position = index + 1
                if !usesScratch {
                    return String(decoding: run, as: UTF8.self)
                }
                scratch.append(contentsOf: run)
                return String(decoding: scratch, as: UTF8.self)
            }
            if !usesScratch {
                usesScratch = true
                scratch.removeAll(keepingCapacity: true)
            }
            scratch.append(contentsOf: run)
            index = try unescape(at: index)
        }
    }

    /// Appends the character escaped at `index` (a backslash) to `scratch`; returns the index after the escape.
    mutating func unescape(at index: Int) throws(JSONError) -> Int {
        guard index + 1 < bytes.count else {
            throw JSONError(.unexpectedEnd, at: index, "unexpected end of input inside an escape")
        }
        let simple: UInt8
        switch bytes[index + 1] {
        case UInt8(ascii: "\""): simple = 0x22
        case UInt8(ascii: "\\"): simple = 0x5C
        case UInt8(ascii: "/"): simple = 0x2F
        case UInt8(ascii: "b"): simple = 0x08
        case UInt8(ascii: "f"): simple = 0x0C
        case UInt8(ascii: "n"): simple = 0x0A
        case UInt8(ascii: "r"): simple = 0x0D
        case UInt8(ascii: "t"): simple = 0x09
        case UInt8(ascii: "u"):
            return try unescapeUnicode(at: index)
        default:
            let shown =
                bytes[index + 1] >= 0x20 && bytes[index + 1] < 0x7F
                ? "'\\\(Character(Unicode.Scalar(bytes[index + 1])))'"
                : "backslash before byte 0x\(Self.hex(bytes[index + 1]))"
            throw JSONError(
                .invalidEscape,
                at: index,
                "invalid escape \(shown): only \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX are allowed"
            )
        }
        scratch.append(simple)
        return index + 2
    }

    /// Decodes `\uXXXX`, or a `\uD8xx\uDCxx` surrogate pair, at `index`.
    mutating func unescapeUnicode(at index: Int) throws(JSONError) -> Int {
        let unit = try hexQuad(at: index + 2, escapeAt: index)
        switch unit {
        case 0xD800...0xDBFF:
            guard index + 7 < bytes.count,
                bytes[index + 6] == UInt8(ascii: "\\"),
                bytes[index + 7] == UInt8(ascii: "u")
            else {
                throw JSONError(
                    .loneSurrogate,
                    at: index,
                    "unpaired surrogate \\u\(Self.hex(unit)): a high surrogate must be followed by a \\uDC00-\\uDFFF escape"
                )
            }
            let low = try hexQuad(at: index + 8, escapeAt: index + 6)
            guard (0xDC00...0xDFFF).contains(low) else {
                throw JSONError(
                    .loneSurrogate,
                    at: index,
                    "unpaired surrogate \\u\(Self.hex(unit)): followed by \\u\(Self.hex(low)), not a low surrogate"
                )
            }
            appendUTF8(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
            return index + 12
        case 0xDC00...0xDFFF:
            throw JSONError(
                .loneSurrogate,
                at: index,
                "unpaired surrogate \\u\(Self.hex(unit)): a low surrogate must follow a high one"
            )
        default:
            appendUTF8(unit)
            return index + 6
        }
    }

    func hexQuad(at index: Int, escapeAt escape: Int) throws(JSONError) -> UInt32 {
        var value: UInt32 = 0
        for offset in 0..<4 {
            guard index + offset < bytes.count, let digit = Hex.value(bytes[index + offset]) else {
                throw JSONError(.invalidEscape, at: escape, "invalid escape: \\u must be followed by four hex digits")
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    mutating func appendUTF8(_ scalar: UInt32) {
        switch scalar {
        case 0..<0x80:
            scratch.append(UInt8(scalar))
        case 0x80..<0x800:
            scratch.append(UInt8(0xC0 | scalar >> 6))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            scratch.append(UInt8(0xE0 | scalar >> 12))
            scratch.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        default:
            scratch.append(UInt8(0xF0 | scalar >> 18))
            scratch.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            scratch.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or values past
    /// U+10FFFF) that starts with the non-ASCII byte at `index`.
    func utf8SequenceLength(at index: Int) throws(JSONError) -> Int {
        let lead = bytes[index]
        let length: Int
        var secondRange: ClosedRange<UInt8> = 0x80...0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0:
            length = 3
            secondRange = 0xA0...0xBF
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED:
            length = 3
            secondRange = 0x80...0x9F
        case 0xF0:
            length = 4
            secondRange = 0x90...0xBF
        case 0xF1...0xF3: length = 4
        case 0xF4:
            length = 4
            secondRange = 0x80...0x8F
        default:
            throw JSONError(
                .invalidUTF8,
                at: index,
                "invalid UTF-8 in string: byte 0x\(Self.hex(lead)) cannot start a character"
            )
        }
        guard index + length <= bytes.count, secondRange.contains(bytes[index + 1]) else {
            throw JSONError(
                .invalidUTF8,
                at: index,
                "invalid UTF-8 in string: malformed sequence starting with 0x\(Self.hex(lead))"
            )
        }
        for offset in 2..<length where bytes[index + offset] & 0xC0 != 0x80 {
            throw JSONError(
                .invalidUTF8,
                at: index,
                "invalid UTF-8 in string: malformed sequence starting with 0x\(Self.hex(lead))"
            )
        }
        return length
    }

    // MARK: - Helpers

    mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    /// A byte named for an error message.
    func describe(_ index: Int) -> String {
        let byte = bytes[index]
        if byte > 0x20 && byte < 0x7F {
            return "'\(Character(Unicode.Scalar(byte)))'"
        }
        return "byte 0x\(Self.hex(byte))"
    }

    static func hex<T: BinaryInteger>(_ value: T) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        let width = T.self == UInt8.self ? 2 : 4
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// A key as JSON string syntax, shortened for error messages.
    static func quoted(_ key: String) -> String {
        var output: [UInt8] = []
        JSONWriter.appendString(key, into: &output)
        let shown = String(decoding: output, as: UTF8.self)
        return abbreviated(shown)
    }

    static func abbreviated(_ text: String) -> String {
        text.count <= 64 ? text : String(text.prefix(60)) + "…"
    }
}
