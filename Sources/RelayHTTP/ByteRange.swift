/// One `Range: bytes=…` request (RFC 9110 §14.1.2): an int-range (`bytes=a-b`, `bytes=a-`) or a suffix-range
/// (`bytes=-n`), before it is resolved against a representation's length.
///
/// Only a single range is ever served. A request for several (`bytes=0-1,5-6`) is answered whole with 200, which
/// RFC 9110 §14.2 allows, and spares the relay multipart/byteranges and the overlapping-range amplification attacks
/// that come with it. Anything that is not a well-formed `bytes` range — another unit, bad syntax, `a > b`, a number
/// that does not fit an `Int` — is ignored (200 whole), never an error: the field is only ever a hint.
public enum ByteRange: Sendable, Hashable {
    /// `bytes=first-last` (`last` given) or `bytes=first-` (`last` nil): from `first` to `last` inclusive.
    case from(Int, through: Int?)
    /// `bytes=-length`: the final `length` bytes.
    case suffix(Int)

    /// What a `Range` field value asks for.
    public enum Request: Sendable, Hashable {
        /// Exactly one range: the only form that is served as 206.
        case single(ByteRange)
        /// Two or more well-formed ranges: served whole (200).
        case multiple(count: Int)
        /// Not a well-formed `bytes` ranges-specifier (including other units): ignored, served whole (200).
        case invalid
    }

    /// A range resolved against a representation's length.
    public enum Resolution: Sendable, Hashable {
        /// These bytes (a closed range inside `0..<length`): 206 with `Content-Range: bytes a-b/length`.
        case satisfiable(ClosedRange<Int>)
        /// No byte of the range exists: 416 with `Content-Range: bytes */length`.
        case unsatisfiable
        /// A non-zero suffix of an empty representation: there is nothing to cut, so it is served whole (200), as
        /// a 206 could not even write its `Content-Range`.
        case whole
    }

    /// The single range in a `Range` field value; nil when the request is to be served whole (absent, several
    /// ranges, or invalid).
    public init?(field value: some StringProtocol) {
        guard case .single(let range) = Self.parse(value) else { return nil }
        self = range
    }

    /// Parses a `Range` field value: `range-unit "=" range-set` with the unit compared case-insensitively, list
    /// elements separated by commas with optional white space around them and empty elements skipped (RFC 9110
    /// §5.6.1); no white space inside a range-spec, as the grammar allows none. Field lines given more than once
    /// are to be joined with `,` first (`bytes=0-1,bytes=2-3` is then invalid, as it should be).
    public static func parse(_ value: some StringProtocol) -> Request {
        var utf8 = Substring(value).utf8[...]
        utf8 = trimmingWhitespace(utf8)
        guard let equals = utf8.firstIndex(of: UInt8(ascii: "=")) else { return .invalid }
        guard isBytesUnit(utf8[..<equals]) else { return .invalid }

        var single: ByteRange?
        var count = 0
        for element in utf8[utf8.index(after: equals)...].split(
            separator: UInt8(ascii: ","),
            omittingEmptySubsequences: false
        ) {
            let spec = trimmingWhitespace(element)
            if spec.isEmpty { continue }  // empty list elements are legal and ignored
            guard let range = rangeSpec(spec) else { return .invalid }
            count += 1
            single = range
        }
        switch count {
        case 0: return .invalid
        case 1: return single.map(Request.single) ?? .invalid
        default: return .multiple(count: count)
        }
    }

    /// The bytes this range selects of a representation of `length` bytes (RFC 9110 §14.1.2): a first position at
    /// or past the end is unsatisfiable, a last position past the end is clamped to it, a suffix longer than the
    /// representation selects all of it, and `bytes=-0` selects nothing (unsatisfiable).
    public func resolved(length: Int) -> Resolution {
        guard length >= 0 else { return .unsatisfiable }
        switch self {
        case .from(let first, let last):
            guard first < length else { return .unsatisfiable }
            let end = min(last ?? (length - 1), length - 1)
            guard first <= end else { return .unsatisfiable }  // unreachable for a parsed range (last ≥ first)
            return .satisfiable(first...end)
        case .suffix(let suffixLength):
            guard suffixLength > 0 else { return .unsatisfiable }
            guard length > 0 else { return .whole }
            return .satisfiable(max(0, length - suffixLength)...(length - 1))
        }
    }

    // MARK: - Grammar

    /// `int-range = first-pos "-" [ last-pos ]` / `suffix-range = "-" suffix-length`; nil when invalid.
    private static func rangeSpec(_ spec: Substring.UTF8View.SubSequence) -> ByteRange? {
        guard let dash = spec.firstIndex(of: UInt8(ascii: "-")) else { return nil }
        let before = spec[..<dash]
        let after = spec[spec.index(after: dash)...]
        if before.isEmpty {
            guard let suffixLength = decimal(after) else { return nil }
            return .suffix(suffixLength)
        }
        guard let first = decimal(before) else { return nil }
        if after.isEmpty { return .from(first, through: nil) }
        guard let last = decimal(after), last >= first else { return nil }
        return .from(first, through: last)
    }

    /// `1*DIGIT` as an `Int`; nil when empty, not all digits, or too large for an `Int`.
    private static func decimal(_ digits: Substring.UTF8View.SubSequence) -> Int? {
        guard !digits.isEmpty else { return nil }
        var value = 0
        for byte in digits {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (shifted, overflowShift) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflowAdd) = shifted.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            guard !overflowShift, !overflowAdd else { return nil }
            value = sum
        }
        return value
    }

    /// `bytes`, case-insensitively (range units are case-insensitive tokens, RFC 9110 §14.1).
    private static func isBytesUnit(_ unit: Substring.UTF8View.SubSequence) -> Bool {
        guard unit.count == 5 else { return false }
        return zip(unit, "bytes".utf8).allSatisfy { byte, expected in byte | 0x20 == expected }
    }

    /// Without leading and trailing OWS (space and horizontal tab).
    private static func trimmingWhitespace(_ bytes: Substring.UTF8View.SubSequence) -> Substring.UTF8View.SubSequence {
        var bytes = bytes
        while let first = bytes.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { bytes.removeFirst() }
        while let last = bytes.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { bytes.removeLast() }
        return bytes
    }
}
