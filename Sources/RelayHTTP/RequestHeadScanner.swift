import NIOCore
import NIOHTTP1

/// Reads HTTP/1.1 request heads straight from the bytes for the fast lane (`FastLane`), and tells where each message
/// ends so that the rest can be handed to NIO's parser (llhttp) a whole message at a time.
///
/// Deliberately strict and small: it accepts only the plainest form of a request head (`METHOD SP target SP
/// HTTP/1.1 CRLF`, `name: value CRLF` fields of token names and visible values, a blank line) and calls everything
/// else `opaque`, which hands the connection to NIO for good — so a request it does not understand is answered
/// exactly as before (400, 431, chunked bodies, upgrades, HTTP/1.0), never differently.
struct RequestHeadScanner {
    /// A head the fast lane may answer itself: `GET` or `HEAD`, HTTP/1.1, keep-alive, no body, no upgrade.
    struct FastHead {
        var method: HTTPMethod
        var uri: String
        var host: String?
        var authorization: String?
        var ifNoneMatch: String?
        var range: String?
        var ifRange: String?
        /// An SSE client resuming a status stream.
        var lastEventID: String?
    }

    enum Verdict {
        /// No blank line yet: wait for more bytes.
        case incomplete
        /// A head of `length` bytes the fast lane may answer (nothing follows it).
        case fast(FastHead, length: Int)
        /// A well-framed request for NIO: a head of `length` bytes followed by `bodyLength` bytes of body.
        case slow(length: Int, bodyLength: Int)
        /// A message whose end the scanner cannot tell (chunked body, anything unusual): NIO takes the connection
        /// from here on.
        case opaque
        /// A well-formed head asking to switch protocols (`Upgrade`): NIO's upgrade handler takes the connection.
        case upgrade
    }

    /// Heads longer than this are opaque (NIO answers 431).
    let maxHeadBytes: Int
    /// Targets longer than this are not fast (NIO's pipeline answers 414).
    let maxTargetBytes: Int

    init(maxHeadBytes: Int, maxTargetBytes: Int = .max) {
        self.maxHeadBytes = maxHeadBytes
        self.maxTargetBytes = maxTargetBytes
    }

    func scan(_ buffer: ByteBuffer) -> Verdict {
        buffer.withUnsafeReadableBytes { scan($0) }
    }

    func scan(_ bytes: UnsafeRawBufferPointer) -> Verdict {
        let count = bytes.count
        // The request line.
        var index = 0
        while index < count, Self.isTokenByte(bytes[index]) { index += 1 }
        guard index < count else { return count > maxHeadBytes ? .opaque : .incomplete }
        guard index > 0, bytes[index] == Self.space else { return .opaque }
        let method: HTTPMethod?
        switch index {
        case 3 where bytes[0] == 0x47 && bytes[1] == 0x45 && bytes[2] == 0x54: method = .GET
        case 4 where bytes[0] == 0x48 && bytes[1] == 0x45 && bytes[2] == 0x41 && bytes[3] == 0x44: method = .HEAD
        default: method = nil
        }
        index += 1
        let targetStart = index
        while index < count, bytes[index] > 0x20, bytes[index] < 0x7F { index += 1 }
        guard index < count else { return count > maxHeadBytes ? .opaque : .incomplete }
        guard index > targetStart, bytes[index] == Self.space else { return .opaque }
        let targetEnd = index
        index += 1
        guard count - index >= 10 else { return count > maxHeadBytes ? .opaque : .incomplete }
        guard Self.matches(bytes, at: index, "HTTP/1.1\r\n") else { return .opaque }
        index += 10

        // Header fields, up to the blank line.
        var fast = method != nil && targetEnd - targetStart <= maxTargetBytes
        var host: Range<Int>?
        var authorization: Range<Int>?
        var ifNoneMatch: Range<Int>?
        var range: Range<Int>?
        var ifRange: Range<Int>?
        var lastEventID: Range<Int>?
        var contentLength: Int?
        var upgrade = false
        while true {
            guard index + 1 < count else { return count > maxHeadBytes ? .opaque : .incomplete }
            if bytes[index] == Self.cr {
                guard bytes[index + 1] == Self.lf else { return .opaque }
                index += 2
                break
            }
            let nameStart = index
            while index < count, Self.isTokenByte(bytes[index]) { index += 1 }
            guard index < count else { return count > maxHeadBytes ? .opaque : .incomplete }
            guard index > nameStart, bytes[index] == Self.colon else { return .opaque }
            let name = nameStart..<index
            index += 1
            while index < count, bytes[index] == Self.space || bytes[index] == Self.tab { index += 1 }
            let valueStart = index
            while index < count, Self.isValueByte(bytes[index]) { index += 1 }
            guard index + 1 < count else { return count > maxHeadBytes ? .opaque : .incomplete }
            guard bytes[index] == Self.cr, bytes[index + 1] == Self.lf else { return .opaque }
            var valueEnd = index
            while valueEnd > valueStart, bytes[valueEnd - 1] == Self.space || bytes[valueEnd - 1] == Self.tab {
                valueEnd -= 1
            }
            index += 2
            guard index <= maxHeadBytes else { return .opaque }
            let value = valueStart..<valueEnd

            switch Self.field(bytes, name) {
            case .other:
                break
            case .host:
                guard host == nil else { return .opaque }
                host = value
            case .authorization:
                guard authorization == nil else { return .opaque }
                authorization = value
            case .ifNoneMatch:
                guard ifNoneMatch == nil else { return .opaque }
                ifNoneMatch = value
            case .range:
                guard range == nil else { return .opaque }
                range = value
            case .ifRange:
                guard ifRange == nil else { return .opaque }
                ifRange = value
            case .lastEventID:
                guard lastEventID == nil else { return .opaque }
                lastEventID = value
            case .contentLength:
                guard let length = Self.decimal(bytes, value), contentLength == nil || contentLength == length else {
                    return .opaque
                }
                contentLength = length
                if length > 0 { fast = false }
            case .transferEncoding:
                return .opaque
            case .upgrade:
                upgrade = true
            case .connection:
                // `close` (or anything but plain keep-alive) goes to NIO, which closes after the response.
                if !Self.equalsIgnoringCase(bytes, value, "keep-alive") { fast = false }
            case .expect:
                fast = false
            }
        }
        guard index <= maxHeadBytes else { return .opaque }
        if upgrade { return .upgrade }
        // No Host: NIO's pipeline answers the 400 HTTP/1.1 requires (RFC 9112 §3.2).
        guard fast, host != nil, let method else { return .slow(length: index, bodyLength: contentLength ?? 0) }
        func string(_ range: Range<Int>?) -> String? {
            range.map { String(decoding: UnsafeRawBufferPointer(rebasing: bytes[$0]), as: UTF8.self) }
        }
        let head = FastHead(
            method: method,
            uri: string(targetStart..<targetEnd)!,
            host: string(host),
            authorization: string(authorization),
            ifNoneMatch: string(ifNoneMatch),
            range: string(range),
            ifRange: string(ifRange),
            lastEventID: string(lastEventID)
        )
        return .fast(head, length: index)
    }

    // MARK: - Bytes

    private static let space: UInt8 = 0x20
    private static let tab: UInt8 = 0x09
    private static let cr: UInt8 = 0x0D
    private static let lf: UInt8 = 0x0A
    private static let colon: UInt8 = 0x3A

    /// RFC 9110 `tchar`.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"),
            UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    /// Visible ASCII, space, tab and obs-text: no control bytes (CR, LF and NUL among them).
    private static func isValueByte(_ byte: UInt8) -> Bool {
        byte >= 0x20 ? byte != 0x7F : byte == tab
    }

    private static func matches(_ bytes: UnsafeRawBufferPointer, at index: Int, _ literal: StaticString) -> Bool {
        literal.withUTF8Buffer { expected in
            guard index + expected.count <= bytes.count else { return false }
            for offset in 0..<expected.count where bytes[index + offset] != expected[offset] { return false }
            return true
        }
    }

    private static func equalsIgnoringCase(
        _ bytes: UnsafeRawBufferPointer,
        _ range: Range<Int>,
        _ lowercase: StaticString
    ) -> Bool {
        lowercase.withUTF8Buffer { expected in
            guard range.count == expected.count else { return false }
            for offset in 0..<expected.count where bytes[range.lowerBound + offset] | 0x20 != expected[offset] {
                // `| 0x20` folds letters; the literals hold letters and `-` (0x2D, which `| 0x20` keeps).
                return false
            }
            return true
        }
    }

    /// 1 to 18 decimal digits; nil otherwise (as NIO, a malformed length is an error for it to answer).
    private static func decimal(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard (1...18).contains(range.count) else { return nil }
        var value = 0
        for index in range {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            value = value * 10 + Int(digit)
        }
        return value
    }

    private enum Field {
        case host, authorization, ifNoneMatch, range, ifRange, lastEventID, contentLength, transferEncoding, upgrade,
            connection, expect, other
    }

    private static func field(_ bytes: UnsafeRawBufferPointer, _ name: Range<Int>) -> Field {
        // Dispatch on length first: most fields are none of these and cost one comparison.
        switch name.count {
        case 4: return equalsIgnoringCase(bytes, name, "host") ? .host : .other
        case 5: return equalsIgnoringCase(bytes, name, "range") ? .range : .other
        case 6: return equalsIgnoringCase(bytes, name, "expect") ? .expect : .other
        case 7: return equalsIgnoringCase(bytes, name, "upgrade") ? .upgrade : .other
        case 8: return equalsIgnoringCase(bytes, name, "if-range") ? .ifRange : .other
        case 10: return equalsIgnoringCase(bytes, name, "connection") ? .connection : .other
        case 13:
            if equalsIgnoringCase(bytes, name, "authorization") { return .authorization }
            if equalsIgnoringCase(bytes, name, "last-event-id") { return .lastEventID }
            return equalsIgnoringCase(bytes, name, "if-none-match") ? .ifNoneMatch : .other
        case 14: return equalsIgnoringCase(bytes, name, "content-length") ? .contentLength : .other
        case 17: return equalsIgnoringCase(bytes, name, "transfer-encoding") ? .transferEncoding : .other
        default: return .other
        }
    }
}
