import Foundation
import Testing

@testable import RelayCore

@Suite struct MessagePackTests {
    // MARK: - Encoding: exact bytes at every format boundary

    @Test func integersUseTheSmallestFormat() throws {
        let cases: [(Double, String)] = [
            (0, "00"),
            (1, "01"),
            (127, "7f"),
            (128, "cc 80"),
            (255, "cc ff"),
            (256, "cd 01 00"),
            (65535, "cd ff ff"),
            (65536, "ce 00 01 00 00"),
            (4_294_967_295, "ce ff ff ff ff"),
            (4_294_967_296, "cf 00 00 00 01 00 00 00 00"),
            (0x1p53, "cf 00 20 00 00 00 00 00 00"),
            (0x1p53 + 2, "cf 00 20 00 00 00 00 00 02"),
            (0x1p63, "cf 80 00 00 00 00 00 00 00"),
            (0x1p64 - 2048, "cf ff ff ff ff ff ff f8 00"),  // the largest Double below 2^64
            (0x1p64, "cb 43 f0 00 00 00 00 00 00"),  // fits neither Int64 nor UInt64
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0 df"),
            (-128, "d0 80"),
            (-129, "d1 ff 7f"),
            (-32768, "d1 80 00"),
            (-32769, "d2 ff ff 7f ff"),
            (-2_147_483_648, "d2 80 00 00 00"),
            (-2_147_483_649, "d3 ff ff ff ff 7f ff ff ff"),
            (-0x1p63, "d3 80 00 00 00 00 00 00 00"),
            (-0x1p63 - 2048, "cb c3 e0 00 00 00 00 00 01"),  // the next Double below Int64.min
            (-0.0, "00"),
            (1.0, "01"),
            (1.5, "cb 3f f8 00 00 00 00 00 00"),
            (0.1, "cb 3f b9 99 99 99 99 99 9a"),
            (-1.5, "cb bf f8 00 00 00 00 00 00"),
            (.leastNonzeroMagnitude, "cb 00 00 00 00 00 00 00 01"),
            (1.7976931348623157e308, "cb 7f ef ff ff ff ff ff ff"),
        ]
        for (number, hex) in cases {
            let encoded = MessagePack.encode(.number(number))
            #expect(encoded == Self.bytes(hex), "\(number): got \(Self.hex(encoded))")
            #expect(try MessagePack.decode(encoded) == .number(number), "\(number) does not round-trip")
        }
    }

    @Test func nonFiniteNumbersEncodeAsNilLikeTheJSONWriter() throws {
        #expect(MessagePack.encode(.number(.nan)) == [0xC0])
        #expect(MessagePack.encode(.number(.infinity)) == [0xC0])
        #expect(MessagePack.encode(.number(-.infinity)) == [0xC0])
        #expect(JSONValue.number(.nan).serializedString == "null")
    }

    @Test func scalarsEncodeToTheirFormats() throws {
        #expect(MessagePack.encode(.null) == [0xC0])
        #expect(MessagePack.encode(.bool(false)) == [0xC2])
        #expect(MessagePack.encode(.bool(true)) == [0xC3])
        #expect(MessagePack.encode(.string("")) == [0xA0])
        #expect(MessagePack.encode(.string("é")) == [0xA2, 0xC3, 0xA9])
        #expect(MessagePack.encode(.string("\u{1F600}")) == [0xA4, 0xF0, 0x9F, 0x98, 0x80])
    }

    @Test func stringHeadersAtEveryLengthBoundary() throws {
        let cases: [(Int, String)] = [
            (0, "a0"), (1, "a1"), (31, "bf"), (32, "d9 20"), (255, "d9 ff"), (256, "da 01 00"),
            (65535, "da ff ff"), (65536, "db 00 01 00 00"), (70000, "db 00 01 11 70"),
        ]
        for (length, header) in cases {
            let string = String(repeating: "x", count: length)
            let encoded = MessagePack.encode(.string(string))
            let expectedHeader = Self.bytes(header)
            #expect(Array(encoded.prefix(expectedHeader.count)) == expectedHeader, "length \(length)")
            #expect(encoded.count == expectedHeader.count + length, "length \(length)")
            #expect(try MessagePack.decode(encoded) == .string(string), "length \(length)")
        }
        // The header counts UTF-8 bytes, not characters: 16 two-byte characters are 32 bytes.
        let accented = String(repeating: "é", count: 16)
        #expect(Array(MessagePack.encode(.string(accented)).prefix(2)) == [0xD9, 32])
    }

    @Test func arrayAndMapHeadersAtEveryCountBoundary() throws {
        let arrayCases: [(Int, String)] = [
            (0, "90"), (15, "9f"), (16, "dc 00 10"), (65535, "dc ff ff"), (65536, "dd 00 01 00 00"),
        ]
        for (count, header) in arrayCases {
            let value = JSONValue.array(Array(repeating: .null, count: count))
            let encoded = MessagePack.encode(value)
            let expectedHeader = Self.bytes(header)
            #expect(Array(encoded.prefix(expectedHeader.count)) == expectedHeader, "array of \(count)")
            #expect(encoded.count == expectedHeader.count + count, "array of \(count)")
            #expect(try MessagePack.decode(encoded) == value, "array of \(count)")
        }
        let mapCases: [(Int, String)] = [
            (0, "80"), (15, "8f"), (16, "de 00 10"), (65535, "de ff ff"), (65536, "df 00 01 00 00"),
        ]
        for (count, header) in mapCases {
            let object = JSONObject((0..<count).map { ("k\($0)", JSONValue.number(Double($0 % 100))) })
            let encoded = MessagePack.encode(.object(object))
            let expectedHeader = Self.bytes(header)
            #expect(Array(encoded.prefix(expectedHeader.count)) == expectedHeader, "map of \(count)")
            let decoded = try MessagePack.decode(encoded)
            #expect(decoded == .object(object), "map of \(count)")
            #expect(decoded.objectValue?.keys == object.keys, "map of \(count) keeps member order")
        }
    }

    /// The example on msgpack.org: {"compact":true,"schema":0} in 18 bytes.
    @Test func specificationExample() throws {
        let value: JSONValue = ["compact": true, "schema": 0]
        let expected = Self.bytes("82 a7 63 6f 6d 70 61 63 74 c3 a6 73 63 68 65 6d 61 00")
        #expect(MessagePack.encode(value) == expected)
        #expect(try MessagePack.decode(expected) == value)
    }

    @Test func encodeIntoAppends() throws {
        var output: [UInt8] = [0xAA]
        MessagePack.encode([1, "a"], into: &output)
        #expect(output == [0xAA, 0x92, 0x01, 0xA1, 0x61])
    }

    // MARK: - Decoding every format

    @Test func decodesEveryIntegerFormatIncludingNonMinimalOnes() throws {
        let cases: [(String, Double)] = [
            ("00", 0), ("7f", 127), ("e0", -32), ("ff", -1),
            ("cc 00", 0), ("cc ff", 255),
            ("cd 00 01", 1), ("cd ff ff", 65535),
            ("ce 00 00 00 01", 1), ("ce ff ff ff ff", 4_294_967_295),
            ("cf 00 00 00 00 00 00 00 01", 1),
            ("cf 00 1f ff ff ff ff ff ff", 9_007_199_254_740_991),
            ("cf 00 20 00 00 00 00 00 01", 9_007_199_254_740_992),  // 2^53 + 1 rounds to even
            ("cf ff ff ff ff ff ff ff ff", 0x1p64),  // UInt64.max rounds up to 2^64
            ("d0 7f", 127), ("d0 80", -128), ("d0 ff", -1),
            ("d1 7f ff", 32767), ("d1 80 00", -32768),
            ("d2 7f ff ff ff", 2_147_483_647), ("d2 80 00 00 00", -2_147_483_648),
            ("d3 7f ff ff ff ff ff ff ff", 0x1p63), ("d3 80 00 00 00 00 00 00 00", -0x1p63),
            ("d3 ff ff ff ff ff ff ff ff", -1),
        ]
        for (hex, number) in cases {
            #expect(try MessagePack.decode(Self.bytes(hex)) == .number(number), "\(hex)")
        }
    }

    @Test func decodesFloatsAndRejectsNonFiniteOnes() throws {
        #expect(try MessagePack.decode(Self.bytes("ca 3f c0 00 00")) == .number(1.5))
        #expect(try MessagePack.decode(Self.bytes("ca 3d cc cc cd")) == .number(Double(Float(0.1))))
        #expect(try MessagePack.decode(Self.bytes("ca 80 00 00 00")) == .number(0))
        #expect(try MessagePack.decode(Self.bytes("cb 40 09 21 fb 54 44 2d 18")) == .number(Double.pi))
        #expect(try MessagePack.decode(Self.bytes("cb 00 00 00 00 00 00 00 01")) == .number(.leastNonzeroMagnitude))
        for hex in [
            "ca 7f c0 00 00", "ca 7f 80 00 00", "ca ff 80 00 00", "ca 7f 80 00 01",
            "cb 7f f8 00 00 00 00 00 00", "cb 7f f0 00 00 00 00 00 00", "cb ff f0 00 00 00 00 00 00",
        ] {
            Self.expectError(.nonFiniteNumber, at: 0, decoding: hex)
        }
    }

    @Test func decodesNilBoolStringsArraysAndMaps() throws {
        #expect(try MessagePack.decode(Self.bytes("c0")) == .null)
        #expect(try MessagePack.decode(Self.bytes("c2")) == false)
        #expect(try MessagePack.decode(Self.bytes("c3")) == true)
        #expect(try MessagePack.decode(Self.bytes("a3 61 62 63")) == "abc")
        #expect(try MessagePack.decode(Self.bytes("d9 01 61")) == "a")
        #expect(try MessagePack.decode(Self.bytes("da 00 01 61")) == "a")
        #expect(try MessagePack.decode(Self.bytes("db 00 00 00 01 61")) == "a")
        #expect(try MessagePack.decode(Self.bytes("d9 00")) == "")
        #expect(try MessagePack.decode(Self.bytes("dc 00 02 01 c0")) == [1, nil])
        #expect(try MessagePack.decode(Self.bytes("dd 00 00 00 01 90")) == [[]])
        #expect(try MessagePack.decode(Self.bytes("de 00 01 a1 61 80")) == ["a": [:]])
        #expect(try MessagePack.decode(Self.bytes("df 00 00 00 01 d9 01 62 c3")) == ["b": true])
        // Keys in other str formats than fixstr.
        #expect(try MessagePack.decode(Self.bytes("81 db 00 00 00 01 6b 01")) == ["k": 1])
    }

    /// bin has no JSON counterpart: it becomes a data URI (fal realtime apps send images as bytes).
    @Test func binaryBecomesADataURI() throws {
        let prefix = "data:application/octet-stream;base64,"
        #expect(try MessagePack.decode(Self.bytes("c4 00")) == .string(prefix))
        #expect(try MessagePack.decode(Self.bytes("c4 03 01 02 03")) == .string(prefix + "AQID"))
        #expect(try MessagePack.decode(Self.bytes("c5 00 01 ff")) == .string(prefix + "/w=="))
        #expect(try MessagePack.decode(Self.bytes("c6 00 00 00 02 ff ef")) == .string(prefix + "/+8="))
        let png: [UInt8] = [0xC4, 8, 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        #expect(
            try MessagePack.decode([0x81, 0xA5] + Array("image".utf8) + png) == [
                "image": .string(prefix + "iVBORw0KGgo=")
            ]
        )
    }

    @Test func extensionTypesAreRejected() throws {
        for hex in [
            "c7 01 05 aa", "c8 00 01 05 aa", "c9 00 00 00 01 05 aa", "d4 05 aa", "d5 05 aa bb",
            "d6 05 aa bb cc dd", "d7 05 00 00 00 00 00 00 00 00", "d8 05" + String(repeating: " 00", count: 16),
            "d6 ff 00 00 00 00",  // the timestamp extension (-1)
            "c7",  // even truncated
        ] {
            let error = Self.expectError(.unsupportedExtension, at: 0, decoding: hex)
            #expect(error?.message.hasPrefix("ext types are not supported") == true)
        }
        Self.expectError(.unsupportedExtension, at: 1, decoding: "91 d4 00 00")
    }

    @Test func rejectsTheNeverUsedFormatByte() throws {
        Self.expectError(.invalidFormat, at: 0, decoding: "c1")
        Self.expectError(.invalidFormat, at: 3, decoding: "81 a1 61 c1")
    }

    @Test func stringsMustBeWellFormedUTF8() {
        for hex in [
            "a1 ff", "a1 80", "a2 c3 28", "a2 c0 80", "a3 ed a0 80", "a4 f4 90 80 80", "a1 c3", "d9 02 e2 82",
        ] {
            Self.expectError(.invalidUTF8, at: 0, decoding: hex)
        }
        Self.expectError(.invalidUTF8, at: 1, decoding: "81 a1 ff 01")
    }

    @Test func mapKeysMustBeStrings() throws {
        Self.expectError(.nonStringKey, at: 1, decoding: "81 01 02")
        Self.expectError(.nonStringKey, at: 1, decoding: "81 c0 c0")
        Self.expectError(.nonStringKey, at: 1, decoding: "81 c4 01 61 01")  // bin key
        Self.expectError(.nonStringKey, at: 1, decoding: "81 90 01")
        Self.expectError(.nonStringKey, at: 4, decoding: "82 a1 61 01 cc 80 01")
    }

    @Test func duplicateKeysAreRejected() throws {
        let error = Self.expectError(.duplicateKey, at: 4, decoding: "82 a1 61 01 a1 61 02")
        #expect(error?.message == #"duplicate key "a""#)
        // Keys compare by exact scalars: "é" and "e\u{301}" are different keys.
        #expect(
            try MessagePack.decode(Self.bytes("82 a2 c3 a9 01 a3 65 cc 81 02")) == ["\u{E9}": 1, "e\u{301}": 2]
        )
        // Past JSONObject's index threshold too.
        var bytes: [UInt8] = [0xDE, 0x00, 40]
        for index in 0..<40 {
            MessagePack.encode(.string("k\(index == 39 ? 3 : index)"), into: &bytes)
            bytes.append(0xC0)
        }
        Self.expectError(.duplicateKey, decoding: bytes)
    }

    @Test func trailingBytesAndEmptyInput() throws {
        let error = Self.expectError(.trailingData, at: 1, decoding: "c0 c0")
        #expect(error?.message == "1 trailing byte after the value")
        Self.expectError(.trailingData, at: 3, decoding: "92 01 02 00 00")
        Self.expectError(.unexpectedEnd, at: 0, decoding: [])
    }

    @Test func depthLimit() throws {
        func nested(_ depth: Int, open: [UInt8]) -> [UInt8] {
            Array(repeating: open, count: depth).flatMap { $0 } + [0xC0]
        }
        #expect(throws: Never.self) { try MessagePack.decode(nested(64, open: [0x91])) }
        Self.expectError(.tooDeep, at: 64, decoding: nested(65, open: [0x91]))
        #expect(throws: Never.self) { try MessagePack.decode(nested(64, open: [0x81, 0xA0])) }
        Self.expectError(.tooDeep, at: 128, decoding: nested(65, open: [0x81, 0xA0]))
        #expect(try MessagePack.decode([0xC0], maxDepth: 0) == .null)
        Self.expectError(.tooDeep, decoding: [0x90], maxDepth: 0)
        #expect(try MessagePack.decode(nested(3, open: [0x91]), maxDepth: 3) == [[[nil]]])
        Self.expectError(.tooDeep, decoding: nested(4, open: [0x91]), maxDepth: 3)
        // A hostile depth fails fast without exhausting the stack.
        Self.expectError(.tooDeep, decoding: nested(1_000_000, open: [0x91]))
        // Depth is nesting, not the number of containers: siblings do not add up.
        let siblings: [UInt8] = [0xDC, 0x01, 0x00] + Array(repeating: 0x90, count: 256)
        #expect(try MessagePack.decode(siblings, maxDepth: 2).arrayValue?.count == 256)
    }

    @Test func collectionCountLimit() throws {
        #expect(try MessagePack.decode(Self.bytes("93 01 02 03"), maxCollectionCount: 3) == [1, 2, 3])
        Self.expectError(.tooLarge, at: 0, decoding: Self.bytes("93 01 02 03"), maxCollectionCount: 2)
        Self.expectError(.tooLarge, at: 1, decoding: Self.bytes("91 82 a1 61 01 a1 62 02"), maxCollectionCount: 1)
    }

    @Test func bufferPointerOverloadDecodesASliceOfALargerBuffer() throws {
        let bytes: [UInt8] = [0xFF, 0x92, 0x01, 0xA1, 0x61, 0xFF]
        let value = try bytes.withUnsafeBytes { buffer throws(MessagePackError) in
            try MessagePack.decode(UnsafeRawBufferPointer(rebasing: buffer[1..<5]))
        }
        #expect(value == [1, "a"])
    }

    @Test func errorsDescribeWhatAndWhere() throws {
        let error = Self.expectError(.unexpectedEnd, at: 0, decoding: "db ff ff ff ff 61")
        #expect(error?.description == "unexpected end of input: str32 declares 4294967295 bytes, 1 remain at byte 0")
        let kind = Self.expectError(.unexpectedEnd, at: 2, decoding: "92 01 cd 00")
        #expect(kind?.message == "unexpected end of input: uint16 needs 2 more bytes, 1 remain")
        #expect(MessagePackError.Kind.duplicateKey.description == "duplicateKey")
    }

    // MARK: - Round trips

    @Test func roundTrips() throws {
        let values: [JSONValue] = [
            nil, true, false, 0, -1, 1e300, -1e-300, 123.456, "", "hello", "\u{0}\u{7F}\u{FFFF}\u{10FFFF}",
            [], [:], [nil, [nil, [nil]]],
            ["request_id": "abc", "prompt": "a cat", "seed": 42, "strength": 0.75, "sizes": [512, 768]],
            .object(JSONObject((0..<40).map { ("key \($0)", .number(Double($0) * 1.5)) })),
        ]
        for value in values {
            let encoded = MessagePack.encode(value)
            let decoded = try MessagePack.decode(encoded)
            #expect(decoded == value, "\(value)")
            #expect(MessagePack.encode(decoded) == encoded, "\(value) re-encodes differently")
        }
        var generator = MessagePackValueGenerator(seed: 0x4D50_0001)
        for _ in 0..<500 {
            let value = generator.value()
            let encoded = MessagePack.encode(value)
            #expect(try MessagePack.decode(encoded) == value, "\(value)")
        }
    }

    // MARK: - Hostile input

    /// Every strict prefix of a valid document is an error (MessagePack is prefix-free), never a crash.
    @Test func truncatedInputsAtEveryOffset() throws {
        let ints: JSONValue = [
            0, 127, 128, 255, 256, 65535, 65536, 4_294_967_296, -1, -33, -129, -32769, -2_147_483_649,
        ]
        let strings: JSONValue = [
            "", "é", .string(String(repeating: "s", count: 40)), .string(String(repeating: "m", count: 300)),
        ]
        let deep: JSONValue = [[[["x": [1]]]]]
        let encoded = MessagePack.encode([
            "nil": nil, "bools": [true, false], "ints": ints, "floats": [1.5, -0.25, 1e300], "strings": strings,
            "big array": .array(Array(repeating: 1, count: 20)),
            "big map": .object(JSONObject((0..<20).map { ("\($0)", nil) })), "deep": deep,
        ])
        try #require(encoded.first == 0x88)
        // The formats the encoder never writes (or only for huge values), in their smallest examples.
        let extras: [(String, String)] = [
            ("bin8", "c4 02 01 02"), ("bin16", "c5 00 03 01 02 03"), ("bin32", "c6 00 00 00 01 ff"),
            ("f32", "ca 3f c0 00 00"), ("str16", "da 00 01 61"), ("str32", "db 00 00 00 03 61 62 63"),
            ("arr32", "dd 00 00 00 02 c0 c3"), ("map16", "de 00 01 a1 6b c2"), ("map32", "df 00 00 00 01 a1 6b c2"),
            ("i8", "d0 01"), ("i16", "d1 00 01"), ("i32", "d2 00 00 00 01"), ("i64", "d3 ff ff ff ff ff ff ff ff"),
            ("u64", "cf 00 00 00 00 00 00 00 01"),
        ]
        var document: [UInt8] = [0xDE, 0x00, UInt8(8 + extras.count)] + encoded.dropFirst()
        for (key, hex) in extras {
            MessagePack.encode(.string(key), into: &document)
            document += Self.bytes(hex)
        }
        let full = try MessagePack.decode(document)
        #expect(full["bin16"] == "data:application/octet-stream;base64,AQID")
        #expect(full["f32"] == 1.5)
        #expect(full["str32"] == "abc")
        #expect(full["i64"] == -1)
        #expect(full["map32"] == ["k": false])

        var failures = 0
        document.withUnsafeBytes { buffer in
            for length in 0..<buffer.count {
                do throws(MessagePackError) {
                    let value = try MessagePack.decode(UnsafeRawBufferPointer(rebasing: buffer[..<length]))
                    Issue.record("prefix of \(length) bytes decoded to \(value)")
                    failures += 1
                } catch {
                    if error.kind != .unexpectedEnd {
                        Issue.record("prefix of \(length) bytes: \(error) (\(error.kind))")
                        failures += 1
                    }
                }
                if failures == 5 { break }
            }
        }
        Self.expectError(.trailingData, at: document.count, decoding: document + [0xC0])
    }

    /// Declared lengths beyond the input are rejected before anything is allocated for them.
    @Test func hostileLengthsFailFast() throws {
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for hex in [
                "db ff ff ff ff 61 62",  // str32 claiming 4 GiB
                "c6 ff ff ff ff 00",  // bin32 claiming 4 GiB
                "dd ff ff ff ff c0 c0",  // array32 claiming 4 billion elements
                "df ff ff ff ff a0 c0",  // map32 claiming 4 billion members
                "df 00 00 00 02 a0 c0 a1",  // map32 of 2 members needs at least 4 bytes
                "91 91 91 dd 7f ff ff ff 00",  // nested
                "81 db ff ff ff ff 61",  // as a key
                "dc ff ff" + String(repeating: " c0", count: 65534),  // one element short
                "da ff ff 61",
                "c5 ff ff 61",
            ] {
                Self.expectError(.unexpectedEnd, decoding: hex)
            }
        }
        #expect(elapsed < .seconds(1), "hostile lengths took \(elapsed)")
    }

    /// Random corruptions of valid documents: never a crash, and whatever decodes re-encodes stably.
    @Test func mutatedInputsNeverCrash() throws {
        var generator = MessagePackValueGenerator(seed: 0x4D50_0002)
        var random = JSONSeededRandom(seed: 0x4D50_0003)
        var decodedCount = 0
        for _ in 0..<300 {
            let original = MessagePack.encode(generator.value())
            for _ in 0..<30 {
                var bytes = original
                for _ in 0...random.below(3) {
                    switch random.below(4) {
                    case 0 where !bytes.isEmpty:
                        bytes[random.below(bytes.count)] = UInt8(truncatingIfNeeded: random.next())
                    case 1 where !bytes.isEmpty:
                        bytes[random.below(bytes.count)] ^= 1 << UInt8(random.below(8))
                    case 2 where !bytes.isEmpty:
                        bytes.remove(at: random.below(bytes.count))
                    default:
                        bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: random.below(bytes.count + 1))
                    }
                }
                guard let value = try? MessagePack.decode(bytes) else { continue }
                decodedCount += 1
                let again = MessagePack.encode(value)
                #expect(try MessagePack.decode(again) == value, "\(Self.hex(bytes))")
            }
        }
        #expect(decodedCount > 0)
    }

    // MARK: - Helpers

    static func bytes(_ hex: String) -> [UInt8] {
        hex.split(separator: " ").map { UInt8($0, radix: 16)! }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
    }

    @discardableResult
    static func expectError(
        _ kind: MessagePackError.Kind,
        at offset: Int? = nil,
        decoding hex: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> MessagePackError? {
        expectError(kind, at: offset, decoding: bytes(hex), sourceLocation: sourceLocation)
    }

    @discardableResult
    static func expectError(
        _ kind: MessagePackError.Kind,
        at offset: Int? = nil,
        decoding bytes: [UInt8],
        maxDepth: Int = 64,
        maxCollectionCount: Int = .max,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> MessagePackError? {
        do {
            let value = try MessagePack.decode(bytes, maxDepth: maxDepth, maxCollectionCount: maxCollectionCount)
            Issue.record("decoded \(value) instead of failing with \(kind)", sourceLocation: sourceLocation)
            return nil
        } catch {
            #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
            if let offset {
                #expect(error.offset == offset, "\(error)", sourceLocation: sourceLocation)
            }
            return error
        }
    }
}
