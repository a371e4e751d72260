import Testing

@testable import RelayHTTP

@Suite struct ByteRangeTests {
    // MARK: - Parsing

    @Test(arguments: [
        ("bytes=0-499", ByteRange.from(0, through: 499)),
        ("bytes=500-999", .from(500, through: 999)),
        ("bytes=9500-", .from(9500, through: nil)),
        ("bytes=0-", .from(0, through: nil)),
        ("bytes=-500", .suffix(500)),
        ("bytes=-0", .suffix(0)),
        ("bytes=5-5", .from(5, through: 5)),
        ("bytes=007-010", .from(7, through: 10)),
        ("Bytes=1-2", .from(1, through: 2)),
        ("BYTES=1-2", .from(1, through: 2)),
        (" bytes=1-2 ", .from(1, through: 2)),
        ("\tbytes=1-2\t", .from(1, through: 2)),
        ("bytes= 1-2", .from(1, through: 2)),
        ("bytes=1-2 ,", .from(1, through: 2)),
        ("bytes=, 1-2", .from(1, through: 2)),
        ("bytes=,,1-2,,", .from(1, through: 2)),
        ("bytes=\t1-2\t,\t", .from(1, through: 2)),
        ("bytes=9223372036854775806-9223372036854775807", .from(Int.max - 1, through: Int.max)),
        ("bytes=-9223372036854775807", .suffix(Int.max)),
    ])
    func singleRange(field: String, expected: ByteRange) {
        #expect(ByteRange.parse(field) == .single(expected))
        #expect(ByteRange(field: field) == expected)
    }

    @Test(arguments: [
        ("bytes=0-1,5-6", 2),
        ("bytes=0-1, 5-6", 2),
        ("bytes=0-1 ,5-6", 2),
        ("bytes=0-0,-1", 2),
        ("bytes=0-, 0-", 2),
        ("bytes=1-2,3-4,5-6,7-8", 4),
        ("bytes=500-600,601-999", 2),
        ("bytes=-1,-1,-1", 3),
    ])
    func multipleRangesAreServedWhole(field: String, count: Int) {
        #expect(ByteRange.parse(field) == .multiple(count: count))
        #expect(ByteRange(field: field) == nil)
    }

    @Test(arguments: [
        "",
        " ",
        "bytes",
        "bytes=",
        "bytes= ",
        "bytes=,",
        "bytes=-",
        "bytes=--1",
        "bytes=1--2",
        "bytes=1-2-3",
        "bytes=a-b",
        "bytes=1-b",
        "bytes=0x10-0x20",
        "bytes=+1-2",
        "bytes=-+1",
        "bytes=1.5-2",
        "bytes=1e3-",
        "bytes=5-4",  // last < first
        "bytes=100-0",
        "bytes=1 -2",  // no white space inside a range-spec
        "bytes=1- 2",
        "bytes =1-2",
        "bytes= =1-2",
        "bytes==1-2",
        "bytes:1-2",
        "bytes 1-2",
        "byte=1-2",
        "bytess=1-2",
        "items=1-2",  // another unit: ignored
        "none=1-2",
        "=1-2",
        "1-2",
        "bytes=1-2,garbage",
        "bytes=1-2;3-4",
        "bytes=1-2,bytes=3-4",  // two field lines joined
        "bytes=9223372036854775808-",  // Int.max + 1
        "bytes=0-9223372036854775808",
        "bytes=-9223372036854775808",
        "bytes=99999999999999999999999999999-",
        "bytes=0-99999999999999999999999999999",
        "bytes=\u{0}1-2",
        "bytes=１-２",  // full-width digits
        "bytes=٣-٤",  // Arabic-Indic digits
    ])
    func invalidRangesAreIgnored(field: String) {
        #expect(ByteRange.parse(field) == .invalid)
        #expect(ByteRange(field: field) == nil)
    }

    // MARK: - Resolving

    @Test func intRangesClampToTheEnd() {
        #expect(ByteRange.from(0, through: 499).resolved(length: 10_000) == .satisfiable(0...499))
        #expect(ByteRange.from(0, through: nil).resolved(length: 10_000) == .satisfiable(0...9_999))
        #expect(ByteRange.from(9_500, through: nil).resolved(length: 10_000) == .satisfiable(9_500...9_999))
        #expect(ByteRange.from(9_500, through: 20_000).resolved(length: 10_000) == .satisfiable(9_500...9_999))
        #expect(ByteRange.from(9_999, through: 9_999).resolved(length: 10_000) == .satisfiable(9_999...9_999))
        #expect(ByteRange.from(0, through: Int.max).resolved(length: 1) == .satisfiable(0...0))
        #expect(
            ByteRange.from(Int.max - 1, through: Int.max).resolved(length: Int.max)
                == .satisfiable((Int.max - 1)...(Int.max - 1))
        )
    }

    @Test func startAtOrPastTheEndIsUnsatisfiable() {
        #expect(ByteRange.from(10_000, through: nil).resolved(length: 10_000) == .unsatisfiable)
        #expect(ByteRange.from(10_000, through: 10_005).resolved(length: 10_000) == .unsatisfiable)
        #expect(ByteRange.from(Int.max, through: nil).resolved(length: 10) == .unsatisfiable)
        #expect(ByteRange.from(0, through: nil).resolved(length: 0) == .unsatisfiable)
        #expect(ByteRange.from(0, through: 0).resolved(length: 0) == .unsatisfiable)
    }

    @Test func suffixRanges() {
        #expect(ByteRange.suffix(500).resolved(length: 10_000) == .satisfiable(9_500...9_999))
        #expect(ByteRange.suffix(1).resolved(length: 10_000) == .satisfiable(9_999...9_999))
        #expect(ByteRange.suffix(10_000).resolved(length: 10_000) == .satisfiable(0...9_999))
        // A suffix longer than the representation selects all of it.
        #expect(ByteRange.suffix(10_001).resolved(length: 10_000) == .satisfiable(0...9_999))
        #expect(ByteRange.suffix(Int.max).resolved(length: 10_000) == .satisfiable(0...9_999))
        // bytes=-0 selects nothing.
        #expect(ByteRange.suffix(0).resolved(length: 10_000) == .unsatisfiable)
        #expect(ByteRange.suffix(0).resolved(length: 0) == .unsatisfiable)
        // A suffix of an empty representation: nothing to cut, served whole.
        #expect(ByteRange.suffix(5).resolved(length: 0) == .whole)
    }

    @Test func negativeLengthIsNeverSatisfiable() {
        #expect(ByteRange.from(0, through: nil).resolved(length: -1) == .unsatisfiable)
        #expect(ByteRange.suffix(3).resolved(length: -1) == .unsatisfiable)
    }

    /// Every int-range `bytes=a-b` / `bytes=a-` over small lengths against a direct model of RFC 9110 §14.1.2.
    @Test func exhaustiveSmallRangesMatchTheModel() {
        let lasts: [Int?] = [nil] + (0...14).map { $0 }
        for length in 0...12 {
            for first in 0...14 {
                for last in lasts {
                    let field = "bytes=\(first)-" + (last.map(String.init) ?? "")
                    let expected: ByteRange.Resolution?
                    if let last, last < first {
                        expected = nil  // invalid: ignored
                    } else if first >= length {
                        expected = .unsatisfiable
                    } else {
                        expected = .satisfiable(first...min(last ?? length - 1, length - 1))
                    }
                    #expect(ByteRange(field: field)?.resolved(length: length) == expected, "\(field) of \(length)")
                }
            }
            for suffixLength in 0...14 {
                let expected: ByteRange.Resolution
                if suffixLength == 0 {
                    expected = .unsatisfiable
                } else if length == 0 {
                    expected = .whole
                } else {
                    expected = .satisfiable(max(0, length - suffixLength)...(length - 1))
                }
                #expect(ByteRange(field: "bytes=-\(suffixLength)")?.resolved(length: length) == expected)
            }
        }
    }

    // MARK: - Garbage

    /// Hundreds of generated field values, hostile and random: parsing never traps, and whatever resolves lies inside
    /// the representation.
    @Test func garbageCorpusNeverCrashesOrEscapesTheBounds() {
        let corpus = RangeCorpus.make()
        #expect(corpus.count >= 500)
        var singles = 0
        for field in corpus {
            let parsed = ByteRange.parse(field)
            if case .single = parsed { singles += 1 }
            for length in RangeCorpus.lengths {
                guard let range = ByteRange(field: field) else { continue }
                switch range.resolved(length: length) {
                case .satisfiable(let bytes):
                    #expect(bytes.lowerBound >= 0 && bytes.upperBound < length, "\(field) of \(length) → \(bytes)")
                case .whole:
                    #expect(length == 0, "\(field) of \(length)")
                case .unsatisfiable:
                    break
                }
            }
        }
        #expect(singles > 50, "the corpus also holds valid ranges")
    }
}

/// Generated `Range` values: traversal strings, encodings, huge numbers, separators and random bytes (deterministic).
enum RangeCorpus {
    static let lengths = [0, 1, 2, 3, 100, 4096, 1 << 20, Int.max - 1, Int.max]

    static func make() -> [String] {
        var corpus: [String] = [
            "../../../../etc/passwd", "bytes=../../etc/passwd", "bytes=0-../1", "%2e%2e%2f", "bytes=%30-%31",
            "bytes=0-1%00", "bytes=0-1\r\nX-Injected: 1", "bytes=0-1\n", "bytes=\r\n0-1", "bytes=0-1\u{0}",
            "bytes=0-1\u{FEFF}", "\u{FEFF}bytes=0-1", "bytes=0‐1", "bytes=0−1", "bytes=0–1",
            "bytes=" + String(repeating: "9", count: 400) + "-",
            "bytes=-" + String(repeating: "9", count: 400),
            "bytes=" + String(repeating: "0", count: 400) + "1-2",
            "bytes=" + String(repeating: ",", count: 1000) + "0-1",
            "bytes=" + Array(repeating: "0-1", count: 300).joined(separator: ","),
            "bytes=" + Array(repeating: "-1", count: 300).joined(separator: ", "),
            String(repeating: "bytes=", count: 50),
            "bytes=-9223372036854775807", "bytes=9223372036854775807-", "bytes=9223372036854775807-9223372036854775807",
            "bytes=-9223372036854775806", "bytes=9223372036854775806-", "bytes=0-9223372036854775807",
            "bytes=18446744073709551615-", "bytes=-18446744073709551615", "bytes=-1-2", "bytes=1--", "bytes=--",
            "bytes=\t", "bytes=\t-\t", "bytes=😀-😀", "bytes=0-😀", "ｂｙｔｅｓ=0-1", "bytes＝0-1", "bytes=0-1;q=1",
            "bytes=0-1 bytes=2-3", "bytes=0-1\"", "\"bytes=0-1\"", "bytes=(0)-(1)", "bytes=[0-1]", "bytes={0-1}",
        ]
        let pieces = [
            "bytes", "BYTES", "Bytes", "items", "=", "-", ",", " ", "\t", "0", "1", "7", "42", "499", "500", "999",
            "1000", "4095", "4096", "65536", "1048576", "9223372036854775807", "9223372036854775808",
            "99999999999999999999", "..", "/", "%2F", "%00", ";", "\"", "W/", "*", "\r", "\n", "é", "\u{0}", "+", ".",
            "e", "x", "0x",
        ]
        var generator = SplitMix64(seed: 0x0052_414E_4745)
        // Concatenations of grammar pieces: mostly near-misses of the real syntax.
        for _ in 0..<400 {
            var field = ""
            for _ in 0..<Int(generator.next() % 8 + 1) {
                field += pieces[Int(generator.next() % UInt64(pieces.count))]
            }
            corpus.append(field)
        }
        // Well-formed prefixes with random tails and random numbers, so many values are valid ranges.
        for _ in 0..<200 {
            let first = generator.next() % 5000
            let last = generator.next() % 5000
            switch generator.next() % 4 {
            case 0: corpus.append("bytes=\(first)-\(last)")
            case 1: corpus.append("bytes=\(first)-")
            case 2: corpus.append("bytes=-\(last)")
            default: corpus.append("bytes=\(first)-\(last)" + pieces[Int(generator.next() % UInt64(pieces.count))])
            }
        }
        // Random bytes decoded leniently as UTF-8.
        for _ in 0..<200 {
            let count = Int(generator.next() % 24)
            let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            corpus.append("bytes=" + String(decoding: bytes, as: UTF8.self))
        }
        return corpus
    }
}

/// A deterministic 64-bit generator for test corpora.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
