import Testing

@testable import RelayCore

@Suite struct JSONValueTests {
    // MARK: JSONObject

    @Test func objectSubscriptSetsReplacesAndRemoves() {
        var object = JSONObject()
        #expect(object.isEmpty)
        object["a"] = 1
        object["b"] = 2
        object["c"] = 3
        object["a"] = "one"  // replaces in place
        #expect(object.keys == ["a", "b", "c"])
        #expect(object["a"] == "one")
        object["b"] = nil
        #expect(object.keys == ["a", "c"])
        #expect(object.count == 2)
        object["b"] = 4  // a new key appends
        #expect(object.keys == ["a", "c", "b"])
        object["missing"] = nil
        #expect(object.count == 3)
        #expect(object["missing"] == nil)
        // A stored JSON null is a present member, distinct from absence.
        object["n"] = .null
        #expect(object["n"] == .some(.null))
        #expect(object.count == 4)
    }

    @Test func laterDuplicatesReplaceEarlierOnes() {
        let object = JSONObject([("a", 1), ("b", 2), ("a", 3)])
        #expect(object.keys == ["a", "b"])
        #expect(object["a"] == 3)
        let literal: JSONObject = ["x": 1, "y": 2]
        #expect(literal.keys == ["x", "y"])
    }

    @Test func iterationFollowsStoredOrder() {
        let object: JSONObject = ["k": 1, "j": 2, "i": 3]
        var seen: [String] = []
        for (key, value) in object {
            seen.append("\(key)=\(value)")
        }
        #expect(seen == ["k=1", "j=2", "i=3"])
        #expect(object.map(\.key) == ["k", "j", "i"])
    }

    @Test func objectMatchesAReferenceModelAcrossTheIndexThreshold() {
        // Random inserts, replacements and removals, with sizes on both sides of the index threshold.
        var random = JSONSeededRandom(seed: 1)
        var object = JSONObject()
        var model: [(String, JSONValue)] = []
        for step in 0..<5000 {
            let key = "k\(random.below(40))"
            let existing = model.firstIndex { $0.0 == key }
            if random.below(3) == 0 {
                object[key] = nil
                if let existing { model.remove(at: existing) }
            } else {
                let value = JSONValue.number(Double(step))
                object[key] = value
                if let existing { model[existing].1 = value } else { model.append((key, value)) }
            }
            #expect(object.keys == model.map(\.0))
            if object.keys != model.map(\.0) { return }
        }
        for index in 0..<40 {
            let key = "k\(index)"
            #expect(object[key] == model.first { $0.0 == key }?.1)
        }
    }

    @Test func keysCompareByExactScalars() {
        var object = JSONObject()
        object["\u{E9}"] = 1
        object["e\u{301}"] = 2
        #expect(object.count == 2)
        #expect(object["\u{E9}"] == 1)
        #expect(object["e\u{301}"] == 2)
    }

    // MARK: Equality and hashing

    @Test func equalityIgnoresMemberOrderButNotArrayOrder() {
        let a: JSONValue = ["x": 1, "y": [1, 2]]
        let b: JSONValue = ["y": [1, 2], "x": 1]
        #expect(a == b)
        #expect(a.hashValue == b.hashValue)
        #expect(JSONValue.array([1, 2]) != [2, 1])
        #expect((["x": 1] as JSONValue) != ["x": 1, "y": 2])
        #expect((["x": 1] as JSONValue) != ["x": 2])
        #expect((["x": 1] as JSONValue) != ["z": 1])
    }

    @Test func stringsCompareByExactScalars() {
        #expect(JSONValue.string("\u{E9}") != .string("e\u{301}"))
        #expect(Set<JSONValue>([.string("\u{E9}"), .string("e\u{301}")]).count == 2)
    }

    @Test func numbersCompareByValue() {
        #expect(JSONValue.number(0) == .number(-0.0))
        #expect(JSONValue.number(0).hashValue == JSONValue.number(-0.0).hashValue)
        #expect(JSONValue.number(.nan) == .number(.nan))
        #expect(JSONValue.number(1) != .bool(true))
        #expect(JSONValue.null != .number(0))
        #expect(JSONValue.string("1") != .number(1))
    }

    @Test func hashingIsConsistentWithEquality() throws {
        var generator = JSONDocumentGenerator(seed: 3)
        var set = Set<JSONValue>()
        var documents: [JSONValue] = []
        for _ in 0..<200 {
            let value = try JSONValue(parsing: generator.document())
            documents.append(value)
            set.insert(value)
        }
        for value in documents {
            // Reparsing the canonical form reorders members: still equal, same hash.
            let reordered = try JSONValue(parsing: value.canonicalBytes())
            #expect(reordered == value)
            #expect(set.contains(reordered))
        }
    }

    // MARK: Literals and accessors

    @Test func literalsBuildTheExpectedCases() {
        let value: JSONValue = ["s": "text", "i": 42, "d": 2.5, "b": true, "a": [1, nil], "o": ["k": false], "n": nil]
        #expect(value["s"] == .string("text"))
        #expect(value["i"] == .number(42))
        #expect(value["d"] == .number(2.5))
        #expect(value["b"] == .bool(true))
        #expect(value["a"] == .array([.number(1), .null]))
        #expect(value["o"] == .object(JSONObject([("k", .bool(false))])))
        #expect(value["n"] == .null)
        #expect(value["absent"] == nil)
    }

    @Test func typedAccessors() {
        let value: JSONValue = ["s": "text", "n": 3, "f": 3.5, "b": false, "a": [1], "o": [:]]
        #expect(value["s"]?.stringValue == "text")
        #expect(value["n"]?.stringValue == nil)
        #expect(value["n"]?.doubleValue == 3)
        #expect(value["n"]?.intValue == 3)
        #expect(value["f"]?.intValue == nil)
        #expect(value["f"]?.doubleValue == 3.5)
        #expect(value["b"]?.boolValue == false)
        #expect(value["s"]?.boolValue == nil)
        #expect(value["a"]?.arrayValue == [1])
        #expect(value["o"]?.objectValue == JSONObject())
        #expect(value["s"]?.objectValue == nil)
        #expect(value.objectValue?.count == 6)
        #expect(value.arrayValue == nil)
        // Subscripting a non-object is nil, not a trap.
        #expect(JSONValue.array([1])["0"] == nil)
        #expect(JSONValue.string("x")["x"] == nil)
    }

    @Test(
        arguments: [
            (3.0, 3),
            (-0.0, 0),
            (-7.0, -7),
            (9_007_199_254_740_992.0, 9_007_199_254_740_992),
            (-9_223_372_036_854_775_808.0, Int.min),
        ] as [(Double, Int)]
    )
    func intValueForIntegralNumbers(number: Double, expected: Int) {
        #expect(JSONValue.number(number).intValue == expected)
    }

    @Test(arguments: [3.5, 1e-300, 9_223_372_036_854_775_808.0, 1e300, -1e19, Double.nan, Double.infinity])
    func intValueIsNilOtherwise(number: Double) {
        #expect(JSONValue.number(number).intValue == nil)
    }

    @Test func descriptionIsTheCompactForm() {
        let value: JSONValue = ["a": [1, "b"]]
        #expect(value.description == #"{"a":[1,"b"]}"#)
        #expect("\(value)" == #"{"a":[1,"b"]}"#)
        #expect(value.objectValue?.description == #"{"a":[1,"b"]}"#)
    }

    // MARK: Round trips

    @Test func randomValuesRoundTripExactly() throws {
        var random = JSONSeededRandom(seed: 11)
        for _ in 0..<500 {
            let value = Self.randomValue(&random, depth: 0)
            let parsed = try JSONValue(parsing: value.serialized())
            #expect(Self.identical(parsed, value), "\(value)")
            #expect(parsed.serialized() == value.serialized())
            let canonical = try JSONValue(parsing: value.canonicalBytes())
            #expect(canonical == value)
        }
    }

    @Test func errorDescriptionCombinesMessageAndOffset() {
        let error = #expect(throws: JSONError.self) { try JSONValue(parsing: "[1,2,,]") }
        #expect(error?.offset == 5)
        #expect(error?.kind == .unexpectedCharacter)
        #expect(error?.description == "\(error?.message ?? "") at byte 5")
    }

    /// Equality that also distinguishes number bit patterns (except the sign of zero, which JSON text drops).
    static func identical(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.number(let x), .number(let y)):
            return x == 0 ? y == 0 : x.bitPattern == y.bitPattern
        case (.array(let x), .array(let y)):
            return x.count == y.count && zip(x, y).allSatisfy(identical)
        case (.object(let x), .object(let y)):
            return x.keys == y.keys && zip(x, y).allSatisfy { identical($0.value, $1.value) }
        default:
            return a == b
        }
    }

    static func randomValue(_ random: inout JSONSeededRandom, depth: Int) -> JSONValue {
        switch random.below(depth > 3 ? 5 : 7) {
        case 0: return .null
        case 1: return .bool(random.chance(0.5))
        case 2:
            var number: Double
            repeat { number = Double(bitPattern: random.next()) } while !number.isFinite
            return .number(number)
        case 3: return .number(Double(random.below(2000)) - 1000)
        case 4:
            var string = ""
            for _ in 0..<random.below(10) {
                let scalar = Unicode.Scalar(UInt32(random.below(0x11_0000))) ?? "\u{FFFD}"
                string.unicodeScalars.append(random.chance(0.5) ? scalar : Unicode.Scalar(UInt8(random.below(0x80))))
            }
            return .string(string)
        case 5:
            return .array((0..<random.below(6)).map { _ in randomValue(&random, depth: depth + 1) })
        default:
            var object = JSONObject()
            for _ in 0..<random.below(random.chance(0.1) ? 40 : 6) {
                object["\(random.below(100))\u{1F600}\(random.below(3))"] = randomValue(&random, depth: depth + 1)
            }
            return .object(object)
        }
    }
}
