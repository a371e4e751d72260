import Foundation
import Testing

@testable import RelayCore

/// Compares `canonicalBytes()` with node's JSON.parse + JCS (Tests/clients/jcs_reference.mjs) on
/// thousands of generated documents: this checks number parsing (correct rounding), number
/// formatting (Number::toString), string unescaping/escaping and UTF-16 key order against V8.
@Suite struct JSONDifferentialTests {
    @Test(.enabled(if: JSONNodeReference.isAvailable, "node not found on PATH (`/usr/bin/env node --version` failed)"))
    func canonicalBytesMatchNode() throws {
        var generator = JSONDocumentGenerator(seed: 0x5EED_0000_8785)
        var documents: [String] = []
        for _ in 0..<3000 {
            documents.append(generator.document())
        }
        // Number-dense documents: 20,000 more numbers in many textual forms.
        for _ in 0..<200 {
            documents.append("[" + (0..<100).map { _ in generator.numberText() }.joined(separator: ",") + "]")
        }

        let reference = try JSONNodeReference.canonicalize(documents)
        try #require(
            reference.count == documents.count,
            "node returned \(reference.count) lines for \(documents.count) documents"
        )

        var mismatches = 0
        for (index, document) in documents.enumerated() {
            let ours: String
            do {
                ours = String(decoding: try JSONValue(parsing: document).canonicalBytes(), as: UTF8.self)
            } catch {
                ours = "ERROR \(error)"
            }
            if ours.utf8.elementsEqual(reference[index].utf8) { continue }
            Issue.record("\(Self.mismatch(index: index, document: document, ours: ours, reference: reference[index]))")
            mismatches += 1
            if mismatches == 5 { break }
        }
    }

    /// A readable report: the document (shortened) and both outputs around their first difference.
    static func mismatch(index: Int, document: String, ours: String, reference: String) -> String {
        let a = Array(ours.unicodeScalars)
        let b = Array(reference.unicodeScalars)
        var first = 0
        while first < min(a.count, b.count), a[first] == b[first] { first += 1 }
        func excerpt(_ scalars: [Unicode.Scalar]) -> String {
            let start = max(0, first - 40)
            let end = min(scalars.count, first + 60)
            var text = String(String.UnicodeScalarView(scalars[start..<end]))
            if start > 0 { text = "…" + text }
            if end < scalars.count { text += "…" }
            return text.debugDescription
        }
        let shown = document.count > 300 ? String(document.prefix(300)) + "…" : document
        return """
            document \(index) differs at scalar \(first): \(shown.debugDescription)
              swift: \(excerpt(a))
              node:  \(excerpt(b))
            """
    }

    /// Guards the guard: the generator must produce every feature the comparison is meant to cover.
    @Test func generatorCoversTheInterestingCases() throws {
        var generator = JSONDocumentGenerator(seed: 0x5EED_0000_8785)
        let text = (0..<300).map { _ in generator.document() }.joined(separator: "\n")
        for needle in [
            "\\u", "\\ud8", "\\\"", "\\\\", "\\n", "e-", "e+", "E", "\u{2028}", "\u{FFFF}", "\u{10000}", "\t",
        ] {
            #expect(text.contains(needle), "no \(needle.debugDescription) in 300 generated documents")
        }
        #expect(text.unicodeScalars.contains { $0.value >= 0x1_0000 })
    }
}

/// Runs Tests/clients/jcs_reference.mjs under node.
enum JSONNodeReference {
    static let isAvailable: Bool = {
        guard let status = try? run(["node", "--version"], quiet: true) else { return false }
        return status == 0
    }()

    static var scriptURL: URL {
        // The test directory may be reached through a symlink (scratch packages); resolve it to find Tests/clients.
        URL(fileURLWithPath: #filePath)
            .resolvingSymlinksInPath()
            .deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("clients/jcs_reference.mjs")
    }

    /// Canonical forms from node, one per document ("ERROR …" where node rejects one).
    static func canonicalize(_ documents: [String]) throws -> [String] {
        let script = scriptURL
        try #require(FileManager.default.fileExists(atPath: script.path), "missing \(script.path)")
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("jcs-differential-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("input.jsonl")
        let output = directory.appendingPathComponent("output.jsonl")
        try Data((documents.joined(separator: "\n") + "\n").utf8).write(to: input)

        let status = try run(["node", script.path, input.path, output.path])
        try #require(status == 0, "node exited with status \(status)")

        var lines = try Data(contentsOf: output)
            .split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    private static func run(_ arguments: [String], quiet: Bool = false) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        if quiet { process.standardError = FileHandle.nullDevice }
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// Deterministic random JSON texts written directly as text (not through JSONWriter), so escapes,
/// number spellings and whitespace vary the way other producers' output does.
struct JSONDocumentGenerator {
    var random: JSONSeededRandom

    init(seed: UInt64) {
        random = JSONSeededRandom(seed: seed)
    }

    mutating func document() -> String {
        let body = random.chance(0.1) ? value(depth: 4) : container(depth: 0)
        return whitespace() + body + whitespace()
    }

    mutating func value(depth: Int) -> String {
        let roll = random.below(depth >= 4 ? 6 : 10)
        switch roll {
        case 0: return "null"
        case 1: return random.chance(0.5) ? "true" : "false"
        case 2, 3: return numberText()
        case 4, 5: return stringText(scalars(count: random.below(12)))
        default: return container(depth: depth + 1)
        }
    }

    mutating func container(depth: Int) -> String {
        if random.chance(0.5) {
            let count = random.below(7)
            let elements = (0..<count).map { _ in whitespace() + value(depth: depth) + whitespace() }
            return "[" + whitespace() + elements.joined(separator: ",") + "]"
        }
        // Mostly small objects, sometimes past JSONObject.indexThreshold.
        let count = random.chance(0.05) ? 17 + random.below(30) : random.below(9)
        var seen: Set<[UInt32]> = []
        var members: [String] = []
        for _ in 0..<count {
            let key = keyScalars()
            guard seen.insert(key.map(\.value)).inserted else { continue }
            members.append(
                whitespace() + stringText(key) + whitespace() + ":" + whitespace() + value(depth: depth) + whitespace()
            )
        }
        return "{" + whitespace() + members.joined(separator: ",") + "}"
    }

    // MARK: Numbers

    mutating func numberText() -> String {
        switch random.below(9) {
        case 0, 1:
            return randomBitsDouble().description
        case 2:
            // Shortest digits with noise appended: long inputs that land between neighbours.
            let text = randomBitsDouble().description
            let parts = text.split(separator: "e", maxSplits: 1)
            var significand = String(parts[0])
            if !significand.contains(".") { significand += "." }
            significand += digits(count: 1 + random.below(25))
            return significand + (parts.count > 1 ? "e" + parts[1] : "")
        case 3:
            return String(Int(random.below(2001)) - 1000)
        case 4:
            let edges = [
                "0", "-0", "0.0", "-0.0", "0e0", "0E-0", "1e21", "1e20", "999999999999999999999", "1e-7", "1e-6",
                "0.000001", "1E30", "4.50", "2e-3", "0.000000000000000000000000001", "333333333.33333329",
                "9007199254740992", "9007199254740993", "-9007199254740993", "18446744073709551615",
                "5e-324", "4.9406564584124654e-324", "2.4703282292062328e-324", "1e-400", "-1e-400",
                "1.7976931348623157e308", "1.7976931348623158e308", "2.2250738585072011e-308",
                "2.2250738585072014e-308", "1.5e300", "123e-20", "1e23", "8.41e21", "5e-1",
            ]
            return edges[random.below(edges.count)]
        case 5:
            // Arbitrary decimal spellings whose magnitude stays below 1e308.
            let integerDigits = 1 + random.below(25)
            var text = random.chance(0.3) ? "-" : ""
            text += String(1 + random.below(9)) + digits(count: integerDigits - 1)
            if random.chance(0.6) { text += "." + digits(count: 1 + random.below(25)) }
            if random.chance(0.7) {
                let exponent = random.below(640) - 340
                let bounded = min(exponent, 307 - integerDigits)
                let marker = random.chance(0.5) ? "e" : "E"
                let sign = bounded < 0 ? "-" : (random.chance(0.5) ? "+" : "")
                text += marker + sign + String(bounded.magnitude)
            }
            return text
        case 6:
            let value = Int64(bitPattern: random.next())
            return String(value >> UInt64(random.below(64)))
        case 7:
            return (Double(random.next() >> 11) * 0x1p-53 * 2_000_000 - 1_000_000).description
        default:
            // Integers around 2^53 and the 1e21 boundary, where layout switches.
            let bases: [Double] = [9_007_199_254_740_992, 1e21, 1e16, 1e15]
            let base = bases[random.below(bases.count)]
            return String(format: "%.0f", base + Double(random.below(9)) - 4)
        }
    }

    private mutating func randomBitsDouble() -> Double {
        while true {
            let value = Double(bitPattern: random.next())
            if value.isFinite { return value }
        }
    }

    private mutating func digits(count: Int) -> String {
        String((0..<count).map { _ in Character(Unicode.Scalar(UInt8(ascii: "0") + UInt8(random.below(10)))) })
    }

    // MARK: Strings

    private static let keyAlphabet: [Unicode.Scalar] = [
        "a", "b", "A", "1", "_", "\u{E000}", "\u{FFFF}", "\u{10000}", "\u{1F600}", "\u{FB33}", "é", "\u{301}",
    ]

    private mutating func keyScalars() -> [Unicode.Scalar] {
        if random.chance(0.5) {
            return (0..<random.below(4)).map { _ in Self.keyAlphabet[random.below(Self.keyAlphabet.count)] }
        }
        return scalars(count: random.below(7))
    }

    private mutating func scalars(count: Int) -> [Unicode.Scalar] {
        (0..<count).map { _ in scalar() }
    }

    private mutating func scalar() -> Unicode.Scalar {
        let special: [UInt32] = [
            0x22, 0x5C, 0x2F, 0x00, 0x08, 0x09, 0x0A, 0x0C, 0x0D, 0x1F, 0x7F, 0xE9, 0x301, 0x4E2D, 0x2028, 0x2029,
            0xFEFF, 0xFFFD, 0xFFFF, 0xE000, 0xD7FF, 0x1_0000, 0x1_F600, 0x10_FFFF,
        ]
        let value: UInt32
        switch random.below(10) {
        case 0...3: value = 0x20 + UInt32(random.below(0x5F))
        case 4: value = UInt32(random.below(0x20))
        case 5, 6: value = special[random.below(special.count)]
        case 7:
            let candidate = UInt32(random.below(0x1_0000))
            value = (0xD800...0xDFFF).contains(candidate) ? 0xFFFD : candidate
        default: value = 0x1_0000 + UInt32(random.below(0x10_0000))
        }
        return Unicode.Scalar(value) ?? "?"
    }

    /// A JSON string literal for `scalars`, each one raw or escaped at random (controls, quote and backslash always escaped).
    private mutating func stringText(_ scalars: [Unicode.Scalar]) -> String {
        var text = "\""
        for scalar in scalars {
            let shortEscapes: [UInt32: String] = [
                0x22: "\\\"", 0x5C: "\\\\", 0x2F: "\\/", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r",
                0x09: "\\t",
            ]
            let mustEscape = scalar.value < 0x20 || scalar == "\"" || scalar == "\\"
            if !mustEscape && random.chance(0.7) {
                text.unicodeScalars.append(scalar)
            } else if let short = shortEscapes[scalar.value], random.chance(0.6) {
                text += short
            } else {
                for unit in String(scalar).utf16 {
                    text += "\\u" + hex4(unit)
                }
            }
        }
        return text + "\""
    }

    private mutating func hex4(_ unit: UInt16) -> String {
        let digits = String(unit, radix: 16, uppercase: random.chance(0.5))
        return String(repeating: "0", count: 4 - digits.count) + digits
    }

    private mutating func whitespace() -> String {
        // No line feeds: documents are line-separated for node.
        let pieces = ["", "", "", " ", "\t", "\r", "  ", " \t\r "]
        return pieces[random.below(pieces.count)]
    }
}

/// SplitMix64: a fixed sequence for a seed, on every platform and Swift version.
struct JSONSeededRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound (bound > 0); modulo bias is irrelevant here.
    mutating func below(_ bound: Int) -> Int {
        Int(next() % UInt64(bound))
    }

    mutating func chance(_ probability: Double) -> Bool {
        Double(next() >> 11) * 0x1p-53 < probability
    }
}
