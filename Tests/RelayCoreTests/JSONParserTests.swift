import Testing

@testable import RelayCore

@Suite struct JSONParserTests {
    // MARK: Accepted input

    @Test(
        arguments: [
            ("null", JSONValue.null),
            ("true", .bool(true)),
            ("false", .bool(false)),
            ("0", .number(0)),
            ("-0", .number(-0.0)),
            ("1", .number(1)),
            ("-1", .number(-1)),
            ("1.5", .number(1.5)),
            ("-12.25", .number(-12.25)),
            ("1e5", .number(100_000)),
            ("1E5", .number(100_000)),
            ("1e+5", .number(100_000)),
            ("1e-5", .number(0.00001)),
            ("0.0", .number(0)),
            ("0e0", .number(0)),
            ("-0.0e-0", .number(0)),
            ("1e007", .number(10_000_000)),
            ("\"\"", .string("")),
            ("\"abc\"", .string("abc")),
            ("[]", .array([])),
            ("{}", .object(JSONObject())),
            (" \t\r\n [ 1 , \"a\" ] \n\t ", .array([1, "a"])),
            ("{\"a\":[1,{\"b\":null}],\"c\":\"d\"}", ["a": [1, ["b": nil]], "c": "d"]),
            ("[[[[]]]]", [[[[]]]]),
            ("{ \"x\" : { } , \"y\" : [ ] }", ["x": [:], "y": []]),
        ] as [(String, JSONValue)]
    )
    func acceptsValidDocuments(text: String, expected: JSONValue) throws {
        #expect(try JSONValue(parsing: text) == expected)
    }

    @Test func negativeZeroKeepsItsSign() throws {
        let value = try JSONValue(parsing: "-0")
        #expect(value.doubleValue?.sign == .minus)
        #expect(value.serializedString == "0")
    }

    @Test func stringEscapesDecode() throws {
        #expect(try JSONValue(parsing: #""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{8}\u{C}\n\r\t"))
        #expect(try JSONValue(parsing: #""\u0041\u00e9\u00E9\u20AC\u0000""#) == .string("A\u{E9}\u{E9}\u{20AC}\u{0}"))
        #expect(try JSONValue(parsing: #""\ud83d\ude00 \uD83D\uDE00""#) == .string("\u{1F600} \u{1F600}"))
        #expect(try JSONValue(parsing: #""\udbff\udfff\ud800\udc00""#) == .string("\u{10FFFF}\u{10000}"))
        #expect(try JSONValue(parsing: #""a\nb""#) == .string("a\nb"))
        // Text around escapes is kept, including multi-byte text.
        #expect(try JSONValue(parsing: #""€x\ty😀""#) == .string("€x\ty😀"))
    }

    @Test func rawUTF8AndUnusualCharactersAreAccepted() throws {
        let text = "\"é中😀\u{7F}\u{2028}\u{2029}\u{FEFF}\u{FFFF}\u{10FFFF}\""
        #expect(try JSONValue(parsing: text) == .string(String(text.dropFirst().dropLast())))
    }

    @Test func memberOrderIsKept() throws {
        let value = try JSONValue(parsing: #"{"b":1,"a":2,"c":3}"#)
        #expect(value.objectValue?.keys == ["b", "a", "c"])
        #expect(value.serializedString == #"{"b":1,"a":2,"c":3}"#)
    }

    @Test func canonicallyEquivalentKeysAreDistinct() throws {
        // U+00E9 and e + U+0301 are different scalars, hence different keys for JSON (and for node).
        let value = try JSONValue(parsing: "{\"\u{E9}\":1,\"e\u{301}\":2}")
        #expect(value.objectValue?.count == 2)
        #expect(value["\u{E9}"] == 1)
        #expect(value["e\u{301}"] == 2)
    }

    @Test func largeObjectsUseTheIndexCorrectly() throws {
        let members = (0..<100).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        let value = try JSONValue(parsing: "{\(members)}")
        #expect(value.objectValue?.count == 100)
        for index in 0..<100 {
            #expect(value["k\(index)"] == .number(Double(index)))
        }
        let error = #expect(throws: JSONError.self) {
            try JSONValue(parsing: "{\(members),\"k3\":0}")
        }
        #expect(error?.kind == .duplicateKey)
        #expect(error?.message == #"duplicate key "k3""#)
    }

    @Test func entryPointsAgree() throws {
        let text = #"{"a":[1,2.5,"x\u00e9"],"b":{"c":null}}"#
        let fromString = try JSONValue(parsing: text)
        let fromArray = try JSONValue(parsing: Array(text.utf8))
        let fromBuffer = try Array(text.utf8).withUnsafeBytes { buffer throws(JSONError) in
            try JSONValue(parsing: buffer)
        }
        #expect(fromString == fromArray)
        #expect(fromString == fromBuffer)
    }

    @Test func emptyBufferWithoutBaseAddressIsEmptyInput() {
        let error = #expect(throws: JSONError.self) {
            try JSONValue(parsing: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        #expect(error?.kind == .emptyInput)
        #expect(error?.offset == 0)
    }

    // MARK: Depth

    @Test func depthLimit() throws {
        let deepest = String(repeating: "[", count: 128) + String(repeating: "]", count: 128)
        #expect(throws: Never.self) { try JSONValue(parsing: deepest) }

        let tooDeep = String(repeating: "[", count: 129) + String(repeating: "]", count: 129)
        let error = #expect(throws: JSONError.self) { try JSONValue(parsing: tooDeep) }
        #expect(error?.kind == .tooDeep)
        #expect(error?.offset == 128)

        let objects = String(repeating: "{\"a\":", count: 4) + "1" + String(repeating: "}", count: 4)
        #expect(throws: Never.self) { try JSONValue(parsing: objects, maxDepth: 4) }
        #expect(throws: JSONError.self) { try JSONValue(parsing: objects, maxDepth: 3) }

        // Depth counts nesting, not the number of containers.
        #expect(throws: Never.self) { try JSONValue(parsing: "[[],[],{},[[]]]", maxDepth: 3) }
        #expect(throws: Never.self) { try JSONValue(parsing: "1", maxDepth: 0) }
        #expect(throws: JSONError.self) { try JSONValue(parsing: "[]", maxDepth: 0) }
    }

    @Test func veryDeepInputFailsCleanly() {
        // Far past the limit: must be an error, not a stack overflow.
        let text = String(repeating: "[", count: 1_000_000)
        let error = #expect(throws: JSONError.self) { try JSONValue(parsing: text) }
        #expect(error?.kind == .tooDeep)
    }

    // MARK: Rejected input

    struct Rejection: Sendable, CustomTestStringConvertible {
        let input: [UInt8]
        let kind: JSONError.Kind
        let offset: Int

        init(_ text: String, _ kind: JSONError.Kind, at offset: Int) {
            self.init(Array(text.utf8), kind, at: offset)
        }

        init(_ bytes: [UInt8], _ kind: JSONError.Kind, at offset: Int) {
            self.input = bytes
            self.kind = kind
            self.offset = offset
        }

        var testDescription: String {
            let shown =
                String(validating: input, as: UTF8.self)?.debugDescription
                ?? input.map { "0x" + String($0, radix: 16) }.joined(separator: " ")
            return "\(shown) → \(kind) at \(offset)"
        }
    }

    static let structuralRejections: [Rejection] = [
        Rejection("", .emptyInput, at: 0),
        Rejection("  \n\t", .emptyInput, at: 4),
        Rejection("nul", .unexpectedCharacter, at: 0),
        Rejection("nulL", .unexpectedCharacter, at: 0),
        Rejection("True", .unexpectedCharacter, at: 0),
        Rejection("[tru]", .unexpectedCharacter, at: 1),
        Rejection("[1,]", .trailingComma, at: 3),
        Rejection("[1, ]", .trailingComma, at: 4),
        Rejection(#"{"a":1,}"#, .trailingComma, at: 7),
        Rejection("[,1]", .unexpectedCharacter, at: 1),
        Rejection("[1 2]", .unexpectedCharacter, at: 3),
        Rejection("[1:2]", .unexpectedCharacter, at: 2),
        Rejection(#"{"a" 1}"#, .unexpectedCharacter, at: 5),
        Rejection(#"{"a":1 "b":2}"#, .unexpectedCharacter, at: 7),
        Rejection("{a:1}", .unexpectedCharacter, at: 1),
        Rejection("{'a':1}", .unexpectedCharacter, at: 1),
        Rejection("{1:1}", .unexpectedCharacter, at: 1),
        Rejection(#"{"a":1,,"b":2}"#, .unexpectedCharacter, at: 7),
        Rejection("[1", .unexpectedEnd, at: 2),
        Rejection("[", .unexpectedEnd, at: 1),
        Rejection("{", .unexpectedEnd, at: 1),
        Rejection(#"{"a""#, .unexpectedEnd, at: 4),
        Rejection(#"{"a":"#, .unexpectedEnd, at: 5),
        Rejection(#"{"a":1"#, .unexpectedEnd, at: 6),
        Rejection(#"{"a":1,"#, .unexpectedEnd, at: 7),
        Rejection("\"abc", .unexpectedEnd, at: 4),
        Rejection("\"abc\\", .unexpectedEnd, at: 4),
        Rejection("1 2", .trailingData, at: 2),
        Rejection("{} x", .trailingData, at: 3),
        Rejection("[]]", .trailingData, at: 2),
        Rejection("\"a\"\"b\"", .trailingData, at: 3),
        Rejection("1.5.3", .trailingData, at: 3),
        Rejection("0x10", .trailingData, at: 1),
        Rejection("1\u{0}", .trailingData, at: 1),
        Rejection("truefalse", .trailingData, at: 4),
        Rejection([0xEF, 0xBB, 0xBF, 0x31], .unexpectedCharacter, at: 0),  // a byte-order mark
        Rejection([0xFF], .unexpectedCharacter, at: 0),
        Rejection("NaN", .unexpectedCharacter, at: 0),
        Rejection("Infinity", .unexpectedCharacter, at: 0),
        Rejection("[1,NaN]", .unexpectedCharacter, at: 3),
        Rejection("undefined", .unexpectedCharacter, at: 0),
        Rejection("// comment\n1", .unexpectedCharacter, at: 0),
        Rejection("\u{A0}1", .unexpectedCharacter, at: 0),  // only JSON's four whitespace bytes count
        Rejection("\u{C}1", .unexpectedCharacter, at: 0),
    ]

    static let numberRejections: [Rejection] = [
        Rejection("01", .invalidNumber, at: 0),
        Rejection("-01", .invalidNumber, at: 0),
        Rejection("00", .invalidNumber, at: 0),
        Rejection("[007]", .invalidNumber, at: 1),
        Rejection("+1", .invalidNumber, at: 0),
        Rejection(".5", .invalidNumber, at: 0),
        Rejection("-.5", .invalidNumber, at: 1),
        Rejection("1.", .invalidNumber, at: 2),
        Rejection("[1.]", .invalidNumber, at: 3),
        Rejection("1.e5", .invalidNumber, at: 2),
        Rejection("1e", .invalidNumber, at: 2),
        Rejection("1e+", .invalidNumber, at: 3),
        Rejection("1e-", .invalidNumber, at: 3),
        Rejection("1ee5", .invalidNumber, at: 2),
        Rejection("-", .invalidNumber, at: 1),
        Rejection("--1", .invalidNumber, at: 1),
        Rejection("-Infinity", .invalidNumber, at: 1),
        Rejection("- 1", .invalidNumber, at: 1),
        Rejection("1e400", .numberOutOfRange, at: 0),
        Rejection("-1e400", .numberOutOfRange, at: 0),
        Rejection("[1, 1e309]", .numberOutOfRange, at: 4),
        Rejection("1.8e308", .numberOutOfRange, at: 0),
        // Just above the midpoint between the largest double and 2^1024.
        Rejection("1.7976931348623159e308", .numberOutOfRange, at: 0),
        Rejection("1e99999999999999999999", .numberOutOfRange, at: 0),
        Rejection(String(repeating: "9", count: 400), .numberOutOfRange, at: 0),
    ]

    static let stringRejections: [Rejection] = [
        Rejection("\"a\u{1}b\"", .controlCharacter, at: 2),
        Rejection("\"a\nb\"", .controlCharacter, at: 2),
        Rejection("\"a\tb\"", .controlCharacter, at: 2),
        Rejection("\"\u{0}\"", .controlCharacter, at: 1),
        Rejection("\"\u{1F}\"", .controlCharacter, at: 1),
        Rejection(#"{"a\u0000":"\u001f","b":"x"#, .unexpectedEnd, at: 26),  // escaped controls are fine
        Rejection(#""\x""#, .invalidEscape, at: 1),
        Rejection(#""\a""#, .invalidEscape, at: 1),
        Rejection(#""\'""#, .invalidEscape, at: 1),
        Rejection(#""\0""#, .invalidEscape, at: 1),
        Rejection(#""\U0041""#, .invalidEscape, at: 1),
        Rejection(#""\u12""#, .invalidEscape, at: 1),
        Rejection(#""\u12G4""#, .invalidEscape, at: 1),
        Rejection(#""\u""#, .invalidEscape, at: 1),
        Rejection("\"\\\u{E9}\"", .invalidEscape, at: 1),
        Rejection(#""ab\ud800""#, .loneSurrogate, at: 3),
        Rejection(#""\ud800x""#, .loneSurrogate, at: 1),
        Rejection(#""\uD800\u0041""#, .loneSurrogate, at: 1),
        Rejection(#""\ud800\ud800""#, .loneSurrogate, at: 1),
        Rejection(#""\ud800\n""#, .loneSurrogate, at: 1),
        Rejection(#""\udc00""#, .loneSurrogate, at: 1),
        Rejection(#""\uDFFF\uD800""#, .loneSurrogate, at: 1),
        Rejection(#""\udc00\ud800""#, .loneSurrogate, at: 1),
        Rejection(#"{"\ud800":1}"#, .loneSurrogate, at: 2),
        Rejection(#""\ud800\u12""#, .invalidEscape, at: 7),
    ]

    static let utf8Rejections: [Rejection] = [
        Rejection([0x22, 0xFF, 0x22], .invalidUTF8, at: 1),
        Rejection([0x22, 0x61, 0x80, 0x22], .invalidUTF8, at: 2),  // lone continuation byte
        Rejection([0x22, 0xC0, 0x80, 0x22], .invalidUTF8, at: 1),  // overlong NUL
        Rejection([0x22, 0xC1, 0xBF, 0x22], .invalidUTF8, at: 1),  // overlong
        Rejection([0x22, 0xE0, 0x80, 0x80, 0x22], .invalidUTF8, at: 1),  // overlong 3-byte
        Rejection([0x22, 0xF0, 0x80, 0x80, 0x80, 0x22], .invalidUTF8, at: 1),  // overlong 4-byte
        Rejection([0x22, 0xED, 0xA0, 0x80, 0x22], .invalidUTF8, at: 1),  // encoded surrogate U+D800
        Rejection([0x22, 0xED, 0xBF, 0xBF, 0x22], .invalidUTF8, at: 1),  // encoded surrogate U+DFFF
        Rejection([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], .invalidUTF8, at: 1),  // above U+10FFFF
        Rejection([0x22, 0xF5, 0x80, 0x80, 0x80, 0x22], .invalidUTF8, at: 1),
        Rejection([0x22, 0xE2, 0x82, 0x22], .invalidUTF8, at: 1),  // truncated €
        Rejection([0x22, 0xE2, 0x22, 0xAC, 0x22], .invalidUTF8, at: 1),
        Rejection([0x22, 0xF0, 0x9F, 0x98, 0x22], .invalidUTF8, at: 1),  // truncated 😀
        Rejection([0x22, 0xC3], .invalidUTF8, at: 1),  // truncated by end of input
        Rejection([0x22, 0x5C, 0x6E, 0xFE, 0x22], .invalidUTF8, at: 3),  // after an escape
        Rejection([0x7B, 0x22, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D], .invalidUTF8, at: 2),  // in a key
    ]

    static let duplicateRejections: [Rejection] = [
        Rejection(#"{"a":1,"a":2}"#, .duplicateKey, at: 7),
        Rejection(#"{"a":1,"b":2,"a":1}"#, .duplicateKey, at: 13),
        Rejection(#"{"a":1,"\u0061":2}"#, .duplicateKey, at: 7),
        Rejection(#"{"😀":1,"\ud83d\ude00":2}"#, .duplicateKey, at: 10),
        Rejection(#"[{"x":{"y":1,"y":1}}]"#, .duplicateKey, at: 13),
        Rejection(#"{"":1,"":2}"#, .duplicateKey, at: 6),
    ]

    @Test(arguments: structuralRejections + numberRejections + stringRejections + utf8Rejections + duplicateRejections)
    func rejects(_ rejection: Rejection) {
        let error = #expect(throws: JSONError.self) {
            try JSONValue(parsing: rejection.input)
        }
        #expect(error?.kind == rejection.kind, "\(error?.description ?? "no error")")
        #expect(error?.offset == rejection.offset, "\(error?.description ?? "no error")")
    }

    @Test func messagesSayWhatAndWhere() {
        func failure(_ text: String) -> JSONError? {
            #expect(throws: JSONError.self) { try JSONValue(parsing: text) }
        }
        let duplicate = failure(#"{"a":1,"a":2}"#)
        #expect(duplicate?.message == #"duplicate key "a""#)
        #expect(duplicate?.description == #"duplicate key "a" at byte 7"#)
        #expect(failure("[1,]")?.description == "trailing comma before ']' at byte 3")
        #expect(failure("01")?.message == "invalid number: leading zeros are not allowed")
        #expect(failure("1e400")?.message.hasPrefix("number 1e400 is out of range") == true)
        #expect(failure(#""\ud800""#)?.message.contains("unpaired surrogate \\uD800") == true)
        #expect(failure("\"a\u{1}\"")?.message == "control character 0x01 must be escaped in a string")
        #expect(failure("[1 2]")?.message == "unexpected '2': expected ',' or ']' after an array element")
        #expect(failure("1 x")?.message == "unexpected 'x' after the JSON value")
        #expect(
            failure(String(repeating: "[", count: 200))?.message == "arrays and objects nested deeper than 128 levels"
        )
        // Keys in messages are escaped and shortened.
        let longKey = String(repeating: "k", count: 200)
        let long = failure("{\"\(longKey)\":1,\"\(longKey)\":2}")
        #expect(long.map { $0.message.count < 80 } == true)
        #expect(failure("{\"\\n\":1,\"\\n\":2}")?.message == #"duplicate key "\n""#)
    }

    // MARK: Numbers

    @Test(
        arguments: [
            ("0.1", 0.1),
            ("333333333.33333329", 333_333_333.333_333_3),
            ("1E30", 1e30),
            ("4.50", 4.5),
            ("2e-3", 0.002),
            ("0.000000000000000000000000001", 1e-27),
            ("1e23", 1e23),  // not exact: beyond the fast path's powers of ten
            ("8.41e21", 8.41e21),
            ("9007199254740993", 9_007_199_254_740_992),  // halfway: ties to even
            ("9007199254740995", 9_007_199_254_740_996),
            ("9007199254740993.0000000001", 9_007_199_254_740_994),  // just above halfway
            ("18446744073709551615", 18_446_744_073_709_551_616),
            ("123456789012345678901234567890", 1.2345678901234568e29),
            ("0.1000000000000000055511151231257827021181583404541015625", 0.1),
            ("2.2250738585072011e-308", Double(bitPattern: 0x000F_FFFF_FFFF_FFFF)),  // the largest subnormal
            ("2.2250738585072014e-308", 2.2250738585072014e-308),  // smallest normal
            ("4.9406564584124654e-324", .leastNonzeroMagnitude),
            ("2.4703282292062328e-324", .leastNonzeroMagnitude),  // just above half the smallest subnormal
            ("2.4703282292062327e-324", 0),  // just below: underflows to zero
            ("1e-400", 0),
            ("1.7976931348623157e308", 1.7976931348623157e308),
            ("1.7976931348623158e308", 1.7976931348623157e308),  // below the overflow midpoint
            ("-1.5e300", -1.5e300),
            ("1e-7", 1e-7),
            ("12345678901234567890e-10", 1_234_567_890.123_456_789),
            ("0.30000000000000004", 0.30000000000000004),
        ] as [(String, Double)]
    )
    func numbersAreCorrectlyRounded(text: String, expected: Double) throws {
        let parsed = try #require(try JSONValue(parsing: text).doubleValue)
        #expect(parsed.bitPattern == expected.bitPattern, "\(text) parsed as \(parsed), expected \(expected)")
    }

    @Test func negativeUnderflowIsNegativeZero() throws {
        let parsed = try #require(try JSONValue(parsing: "-1e-400").doubleValue)
        #expect(parsed == 0 && parsed.sign == .minus)
    }

    @Test func fastPathAgreesWithTheStandardLibrary() throws {
        // Short significands with small exponents take Clinger's fast path; compare it with the slow path.
        var random = JSONSeededRandom(seed: 42)
        for _ in 0..<20_000 {
            let significand = random.next() >> UInt64(11 + random.below(40))
            let exponent = random.below(45) - 22
            let text = "\(significand)e\(exponent)"
            let parsed = try #require(try JSONValue(parsing: text).doubleValue)
            let reference = try #require(Double(text))
            #expect(parsed.bitPattern == reference.bitPattern, "\(text)")
            if parsed.bitPattern != reference.bitPattern { break }
        }
    }

    @Test func longNumbersAndExponentsStayBounded() throws {
        let manyDigits = "0." + String(repeating: "0", count: 5000) + "1"
        #expect(try JSONValue(parsing: manyDigits) == .number(0))
        let hugeNegativeExponent = "1e-" + String(repeating: "9", count: 50)
        #expect(try JSONValue(parsing: hugeNegativeExponent) == .number(0))
        let zeroWithHugeExponent = "0e" + String(repeating: "9", count: 50)
        #expect(try JSONValue(parsing: zeroWithHugeExponent) == .number(0))
    }
}
