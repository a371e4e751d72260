import Testing

@testable import RelayCore

@Suite struct JSONWriterTests {
    // MARK: Numbers

    @Test(
        arguments: [
            (0.0, "0"),
            (-0.0, "0"),
            (1, "1"),
            (-1, "-1"),
            (100, "100"),
            (123_456_789, "123456789"),
            (1.5, "1.5"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (0.5, "0.5"),
            (4.35, "4.35"),
            (0.1 + 0.2, "0.30000000000000004"),
            (12_345_678.9, "12345678.9"),
            (1e15, "1000000000000000"),
            (1e16, "10000000000000000"),
            (1.5e16, "15000000000000000"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (123e18, "123000000000000000000"),
            (1_152_921_504_606_846_976, "1152921504606847000"),  // 2^60: shortest digits, then zeros
            (9_007_199_254_740_992, "9007199254740992"),
            (-9_007_199_254_740_992, "-9007199254740992"),
            (9_007_199_254_740_994, "9007199254740994"),
            (1e-6, "0.000001"),
            (0.000001, "0.000001"),
            (1.2e-6, "0.0000012"),
            (0.0001, "0.0001"),
            (0.001234, "0.001234"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (-1e-7, "-1e-7"),
            (123e-20, "1.23e-18"),
            (1.5e300, "1.5e+300"),
            (1e23, "1e+23"),
            (.leastNonzeroMagnitude, "5e-324"),
            (-.leastNonzeroMagnitude, "-5e-324"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-1.7976931348623157e308, "-1.7976931348623157e+308"),
            (1_234_567.125, "1234567.125"),
            (333_333_333.333_333_3, "333333333.3333333"),
        ] as [(Double, String)]
    )
    func numbersUseECMAScriptForm(value: Double, expected: String) {
        #expect(JSONValue.number(value).serializedString == expected)
    }

    /// RFC 8785 Appendix B: IEEE 754 bit patterns and their JCS serialisation.
    @Test(
        arguments: [
            (0x0000_0000_0000_0000, "0"),
            (0x8000_0000_0000_0000, "0"),
            (0x0000_0000_0000_0001, "5e-324"),
            (0x8000_0000_0000_0001, "-5e-324"),
            (0x7FEF_FFFF_FFFF_FFFF, "1.7976931348623157e+308"),
            (0xFFEF_FFFF_FFFF_FFFF, "-1.7976931348623157e+308"),
            (0x4340_0000_0000_0000, "9007199254740992"),
            (0xC340_0000_0000_0000, "-9007199254740992"),
            (0x4430_0000_0000_0000, "295147905179352830000"),
            (0x44B5_2D02_C7E1_4AF5, "9.999999999999997e+22"),
            (0x44B5_2D02_C7E1_4AF6, "1e+23"),
            (0x44B5_2D02_C7E1_4AF7, "1.0000000000000001e+23"),
            (0x444B_1AE4_D6E2_EF4E, "999999999999999700000"),
            (0x444B_1AE4_D6E2_EF4F, "999999999999999900000"),
            (0x444B_1AE4_D6E2_EF50, "1e+21"),
            (0x3EB0_C6F7_A0B5_ED8C, "9.999999999999997e-7"),
            (0x3EB0_C6F7_A0B5_ED8D, "0.000001"),
            (0x41B3_DE43_5555_5553, "333333333.3333332"),
            (0x41B3_DE43_5555_5554, "333333333.33333325"),
            (0x41B3_DE43_5555_5555, "333333333.3333333"),
            (0x41B3_DE43_5555_5556, "333333333.3333334"),
            (0x41B3_DE43_5555_5557, "333333333.33333343"),
            (0xBECB_F647_612F_3696, "-0.0000033333333333333333"),
            (0x4314_3FF3_C1CB_0959, "1424953923781206.2"),
        ] as [(UInt64, String)]
    )
    func rfc8785AppendixB(bits: UInt64, expected: String) {
        #expect(JSONValue.number(Double(bitPattern: bits)).serializedString == expected)
    }

    @Test func nonFiniteNumbersBecomeNull() {
        #expect(JSONValue.number(.nan).serializedString == "null")
        #expect(JSONValue.number(.infinity).serializedString == "null")
        #expect(JSONValue.array([.number(-.infinity)]).canonicalBytes() == Array("[null]".utf8))
    }

    /// RFC 8785 §3.2.2.3 examples, parsed from text then serialised.
    @Test(arguments: [
        ("333333333.33333329", "333333333.3333333"),
        ("1E30", "1e+30"),
        ("4.50", "4.5"),
        ("2e-3", "0.002"),
        ("0.000000000000000000000000001", "1e-27"),
        ("-0", "0"),
        ("9007199254740992", "9007199254740992"),
        ("1e21", "1e+21"),
        ("1e20", "100000000000000000000"),
        ("5e-324", "5e-324"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("0.000001", "0.000001"),
        ("1e-7", "1e-7"),
        ("1.5e300", "1.5e+300"),
        ("100e-2", "1"),
        ("-0.0", "0"),
    ])
    func parsedNumbersReserialise(text: String, expected: String) throws {
        #expect(try JSONValue(parsing: text).serializedString == expected)
    }

    // MARK: Strings

    @Test(arguments: [
        ("", #""""#),
        ("plain", #""plain""#),
        ("\"\\", #""\"\\""#),
        ("\u{8}\u{C}\n\r\t", #""\b\f\n\r\t""#),
        ("\u{0}", #""\u0000""#),
        ("\u{1}\u{B}\u{E}\u{1B}\u{1F}", #""\u0001\u000b\u000e\u001b\u001f""#),
        ("/", #""/""#),
        ("\u{7F}", "\"\u{7F}\""),
        ("\u{2028}\u{2029}", "\"\u{2028}\u{2029}\""),
        ("é€😀\u{FFFF}", "\"é€😀\u{FFFF}\""),
        ("a\"b\\c\nd", #""a\"b\\c\nd""#),
    ])
    func stringsUseJCSEscaping(string: String, expected: String) {
        #expect(JSONValue.string(string).serializedString == expected)
    }

    @Test func escapedStringsRoundTrip() throws {
        let text = String((0..<0x80).map { Character(Unicode.Scalar(UInt8($0))) }) + "é€😀\u{2028}"
        let serialized = JSONValue.string(text).serialized()
        #expect(try JSONValue(parsing: serialized) == .string(text))
    }

    // MARK: Structure

    @Test func compactOutputKeepsInsertionOrder() {
        var object = JSONObject()
        object["z"] = 1
        object["a"] = [true, false, nil]
        object["m"] = ["y": "1", "b": [:]]
        #expect(JSONValue.object(object).serializedString == #"{"z":1,"a":[true,false,null],"m":{"y":"1","b":{}}}"#)
    }

    @Test func writeAppendsToExistingOutput() {
        var output = Array("prefix:".utf8)
        JSONValue.array([1, "x"]).write(into: &output)
        #expect(String(decoding: output, as: UTF8.self) == #"prefix:[1,"x"]"#)
    }

    @Test func canonicalSortsRecursively() {
        let value: JSONValue = [
            "b": [["z": 1, "a": 2], 3],
            "a": ["d": ["y": nil, "x": true], "c": []],
            "": 0,
            "B": 1,
        ]
        #expect(
            String(decoding: value.canonicalBytes(), as: UTF8.self)
                == #"{"":0,"B":1,"a":{"c":[],"d":{"x":true,"y":null}},"b":[{"a":2,"z":1},3]}"#
        )
        // The compact form is untouched by canonicalisation.
        #expect(value.serializedString.hasPrefix(#"{"b":[{"z":1"#))
    }

    @Test func canonicalOrderIsUTF16NotCodePoint() {
        // U+10000 is D800 DC00 in UTF-16, so it sorts before U+E000...U+FFFF but after U+D7FF.
        let value: JSONValue = [
            "\u{FFFF}": 1, "\u{10000}": 2, "\u{E000}": 3, "\u{D7FF}": 4, "\u{10FFFF}": 5, "\u{1F600}": 6,
        ]
        #expect(
            String(decoding: value.canonicalBytes(), as: UTF8.self)
                == "{\"\u{D7FF}\":4,\"\u{10000}\":2,\"\u{1F600}\":6,\"\u{10FFFF}\":5,\"\u{E000}\":3,\"\u{FFFF}\":1}"
        )
    }

    /// RFC 8785 §3.2.2 sample: the input, and its canonical output from the RFC.
    @Test func rfc8785SampleObject() throws {
        let input = #"""
            {
              "numbers": [333333333.33333329, 1E30, 4.50,
                          2e-3, 0.000000000000000000000000001],
              "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
              "literals": [null, true, false]
            }
            """#
        let expected =
            #"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        #expect(String(decoding: try JSONValue(parsing: input).canonicalBytes(), as: UTF8.self) == expected)
    }

    /// RFC 8785 §3.2.3 sorting sample.
    @Test func rfc8785SortingSample() throws {
        let input = #"""
            {
              "\u20ac": "Euro Sign",
              "\r": "Carriage Return",
              "\ufb33": "Hebrew Letter Dalet With Dagesh",
              "1": "One",
              "\ud83d\ude00": "Emoji: Grinning Face",
              "\u0080": "Control",
              "\u00f6": "Latin Small Letter O With Diaeresis"
            }
            """#
        let value = try JSONValue(parsing: input)
        let canonical = try JSONValue(parsing: value.canonicalBytes())
        #expect(
            canonical.objectValue?.keys == ["\r", "1", "\u{80}", "\u{F6}", "\u{20AC}", "\u{1F600}", "\u{FB33}"]
        )
        let expected =
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\","
            + "\"\u{F6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20AC}\":\"Euro Sign\","
            + "\"\u{1F600}\":\"Emoji: Grinning Face\",\"\u{FB33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        #expect(String(decoding: value.canonicalBytes(), as: UTF8.self) == expected)
    }

    @Test func utf16OrderMatchesTheStandardLibraryOnRandomStrings() {
        let alphabet: [Unicode.Scalar] = [
            "a", "b", "\u{7F}", "\u{80}", "\u{7FF}", "\u{800}", "\u{D7FF}", "\u{E000}", "\u{FFFF}", "\u{10000}",
            "\u{10FFFF}", "\u{1F600}",
        ]
        var random = JSONSeededRandom(seed: 7)
        func randomString() -> String {
            var string = ""
            for _ in 0..<random.below(5) {
                string.unicodeScalars.append(alphabet[random.below(alphabet.count)])
            }
            return string
        }
        for _ in 0..<20_000 {
            let a = randomString()
            let b = randomString()
            let expected = a.utf16.lexicographicallyPrecedes(b.utf16)
            #expect(
                JSONKey.utf16Precedes(a, b) == expected,
                "\(a.unicodeScalars.map(\.value)) vs \(b.unicodeScalars.map(\.value))"
            )
            if JSONKey.utf16Precedes(a, b) != expected { break }
        }
    }

    @Test func canonicalBytesAreIdempotent() throws {
        var generator = JSONDocumentGenerator(seed: 99)
        for _ in 0..<500 {
            let canonical = try JSONValue(parsing: generator.document()).canonicalBytes()
            let again = try JSONValue(parsing: canonical).canonicalBytes()
            #expect(canonical == again)
        }
    }
}
