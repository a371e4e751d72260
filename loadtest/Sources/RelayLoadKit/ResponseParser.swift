public import NIOCore

/// An incremental HTTP/1.1 response parser for the load generator: it frames responses (Content-Length, chunked,
/// read-until-close, bodiless statuses), counts their bytes and picks out at most one watched header, without
/// allocating per response on the hot path.
///
/// A benchmark client must cost less per request than the servers it measures, or every server looks the same;
/// NIOHTTP1's decoder builds an `HTTPResponseHead` with all headers as `String`s for every response, which the
/// load loop never needs. Heads and bodies are surfaced only when `Options` asks for them (setup requests, SSE).
public struct ResponseParser {
    /// What to surface besides the end of each response.
    public struct Options: Sendable {
        /// Lowercased name of a header whose value is reported in `ResponseSummary.watchedValue`.
        public var watchedHeader: String?
        /// Emit `.head` with every header.
        public var emitHead: Bool
        /// Emit `.body` slices as they arrive.
        public var emitBody: Bool

        public init(watchedHeader: String? = nil, emitHead: Bool = false, emitBody: Bool = false) {
            self.watchedHeader = watchedHeader
            self.emitHead = emitHead
            self.emitBody = emitBody
        }
    }

    /// What the parser found in the bytes it was given.
    public enum Event: Sendable {
        case head(ResponseHead)
        case body(ByteBuffer)
        case end(ResponseSummary)
    }

    private enum State {
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
    }

    /// Heads and framing lines longer than this are malformed for our purposes.
    static let maximumHeadBytes = 64 * 1024

    private let options: Options
    private let watched: [UInt8]?
    private var state = State.head
    /// Bytes of an unfinished head or framing line, kept until the rest arrives.
    private var carry: ByteBuffer?
    private var summary = ResponseSummary()
    /// The next response answers a HEAD request (no body whatever its headers say).
    public var expectsNoBody = false

    public init(options: Options = Options()) {
        self.options = options
        self.watched = options.watchedHeader.map { Array($0.lowercased().utf8) }
    }

    /// Whether the parser is between responses (a close now loses nothing).
    public var isIdle: Bool {
        if case .head = state, carry == nil { return true }
        return false
    }

    /// Consumes bytes from `input` until it has an event to report or `input` is exhausted (then nil).
    ///
    /// Call again while it returns events; bytes after a complete response stay in `input`.
    public mutating func next(_ input: inout ByteBuffer) throws(ResponseParseError) -> Event? {
        if var carried = carry {
            carry = nil
            carried.writeBuffer(&input)
            input = carried
        }
        while input.readableBytes > 0 {
            switch state {
            case .head:
                guard let headLength = Self.find(crlfcrlf: input) else {
                    try keepForLater(&input)
                    return nil
                }
                let head = input.readSlice(length: headLength)!
                if let event = try parseHead(head) { return event }
            case .fixedBody(let remaining):
                let count = min(remaining, input.readableBytes)
                summary.bytes += count
                let slice = takeBody(&input, count)
                if remaining == count, slice == nil { return finishResponse() }
                state = .fixedBody(remaining: remaining - count)  // at 0, the end follows on the next call
                if let slice { return .body(slice) }
            case .chunkSize:
                guard let lineLength = Self.find(crlf: input) else {
                    try keepForLater(&input)
                    return nil
                }
                let line = input.readSlice(length: lineLength)!
                summary.bytes += lineLength
                guard let size = Self.chunkSize(line) else { throw ResponseParseError(.badChunkSize) }
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                let count = min(remaining, input.readableBytes)
                summary.bytes += count
                let slice = takeBody(&input, count)
                state = remaining == count ? .chunkDataEnd : .chunkData(remaining: remaining - count)
                if let slice { return .body(slice) }
            case .chunkDataEnd:
                guard input.readableBytes >= 2 else {
                    try keepForLater(&input)
                    return nil
                }
                guard input.readInteger(as: UInt16.self) == 0x0D0A else { throw ResponseParseError(.badChunkSize) }
                summary.bytes += 2
                state = .chunkSize
            case .trailers:
                guard let lineLength = Self.find(crlf: input) else {
                    try keepForLater(&input)
                    return nil
                }
                input.moveReaderIndex(forwardBy: lineLength)
                summary.bytes += lineLength
                if lineLength == 2 { return finishResponse() }
            case .untilClose:
                let count = input.readableBytes
                summary.bytes += count
                if let slice = takeBody(&input, count) { return .body(slice) }
            }
        }
        if case .fixedBody(0) = state { return finishResponse() }
        return nil
    }

    /// The connection closed: the end of a read-until-close body, nothing (between responses), or an error.
    public mutating func finish() throws(ResponseParseError) -> ResponseSummary? {
        switch state {
        case .untilClose:
            guard case .end(let summary) = finishResponse() else { return nil }
            return summary
        case .head where carry == nil:
            return nil
        default:
            throw ResponseParseError(.truncated)
        }
    }

    // MARK: - Pieces

    private mutating func finishResponse() -> Event {
        let done = summary
        summary = ResponseSummary()
        state = .head
        expectsNoBody = false
        return .end(done)
    }

    private mutating func takeBody(_ input: inout ByteBuffer, _ count: Int) -> ByteBuffer? {
        if options.emitBody { return input.readSlice(length: count) }
        input.moveReaderIndex(forwardBy: count)
        return nil
    }

    private mutating func keepForLater(_ input: inout ByteBuffer) throws(ResponseParseError) {
        guard input.readableBytes <= Self.maximumHeadBytes else { throw ResponseParseError(.headTooLarge) }
        // A copy, so the carried bytes do not pin a large read buffer.
        var kept = ByteBufferAllocator().buffer(capacity: input.readableBytes + 512)
        kept.writeBuffer(&input)
        carry = kept
    }

    /// Parses a complete head (status line, headers, blank line) and sets up body framing.
    private mutating func parseHead(_ head: ByteBuffer) throws(ResponseParseError) -> Event? {
        var parsed = HeadFields()
        var headers: [(name: String, value: String)] = []
        let watched = self.watched
        let wantHeaders = options.emitHead
        let ok = head.withUnsafeReadableBytes { raw -> Bool in
            let bytes = raw.bindMemory(to: UInt8.self)
            return Self.scanHead(bytes, watched: watched, into: &parsed) { name, value in
                if wantHeaders {
                    headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
                }
            }
        }
        guard ok else { throw ResponseParseError(.badHead) }
        summary.bytes += head.readableBytes
        if (100..<200).contains(parsed.status) {
            // An interim response (100 Continue): the final one follows.
            summary.bytes = 0
            return nil
        }
        summary.status = parsed.status
        summary.keepAlive = parsed.keepAlive
        summary.watchedValue = parsed.watchedValue
        if parsed.status == 204 || parsed.status == 304 || expectsNoBody {
            state = .fixedBody(remaining: 0)
        } else if parsed.chunked {
            state = .chunkSize
        } else if let length = parsed.contentLength {
            state = .fixedBody(remaining: length)
        } else {
            summary.keepAlive = false
            state = .untilClose
        }
        if wantHeaders {
            return .head(ResponseHead(status: parsed.status, headers: headers))
        }
        if case .fixedBody(0) = state { return finishResponse() }
        return nil
    }

    private struct HeadFields {
        var status = 0
        var keepAlive = true
        var chunked = false
        var contentLength: Int?
        var watchedValue: String?
    }

    private static let contentLength = Array("content-length".utf8)
    private static let transferEncoding = Array("transfer-encoding".utf8)
    private static let connection = Array("connection".utf8)

    /// Reads the status line and the headers that framing needs; `visit` sees every header.
    private static func scanHead(
        _ bytes: UnsafeBufferPointer<UInt8>,
        watched: [UInt8]?,
        into fields: inout HeadFields,
        visit: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Void
    ) -> Bool {
        // "HTTP/1.x SSS"
        guard bytes.count >= 12, bytes[0] == UInt8(ascii: "H"), bytes[4] == UInt8(ascii: "/"),
            bytes[8] == UInt8(ascii: " ")
        else { return false }
        let http10 = bytes[5] == UInt8(ascii: "1") && bytes[7] == UInt8(ascii: "0")
        fields.keepAlive = !http10
        var status = 0
        for index in 9..<12 {
            let digit = bytes[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return false }
            status = status * 10 + Int(digit)
        }
        fields.status = status

        var lineStart = 0
        while lineStart < bytes.count, bytes[lineStart] != UInt8(ascii: "\n") { lineStart += 1 }
        lineStart += 1
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count, bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            var contentEnd = lineEnd
            if contentEnd > lineStart, bytes[contentEnd - 1] == UInt8(ascii: "\r") { contentEnd -= 1 }
            if contentEnd == lineStart { break }  // the blank line
            guard let colon = (lineStart..<contentEnd).first(where: { bytes[$0] == UInt8(ascii: ":") }) else {
                return false
            }
            var valueStart = colon + 1
            while valueStart < contentEnd,
                bytes[valueStart] == UInt8(ascii: " ") || bytes[valueStart] == UInt8(ascii: "\t")
            {
                valueStart += 1
            }
            var valueEnd = contentEnd
            while valueEnd > valueStart,
                bytes[valueEnd - 1] == UInt8(ascii: " ") || bytes[valueEnd - 1] == UInt8(ascii: "\t")
            {
                valueEnd -= 1
            }
            let name = UnsafeBufferPointer(rebasing: bytes[lineStart..<colon])
            let value = UnsafeBufferPointer(rebasing: bytes[valueStart..<valueEnd])
            if equalsLowercased(name, contentLength) {
                var length = 0
                for byte in value {
                    let digit = byte &- UInt8(ascii: "0")
                    guard digit < 10, length < Int.max / 16 else { return false }
                    length = length * 10 + Int(digit)
                }
                guard !value.isEmpty else { return false }
                fields.contentLength = length
            } else if equalsLowercased(name, transferEncoding) {
                fields.chunked = containsLowercased(value, "chunked")
            } else if equalsLowercased(name, connection) {
                if containsLowercased(value, "close") { fields.keepAlive = false }
                if containsLowercased(value, "keep-alive") { fields.keepAlive = true }
            }
            if let watched, equalsLowercased(name, watched) {
                fields.watchedValue = String(decoding: value, as: UTF8.self)
            }
            visit(name, value)
            lineStart = lineEnd + 1
        }
        return true
    }

    private static func equalsLowercased(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: [UInt8]) -> Bool {
        guard bytes.count == lowercase.count else { return false }
        for index in 0..<bytes.count where bytes[index] | 0x20 != lowercase[index] {
            // `| 0x20` folds ASCII letters; '-' (0x2D) already has the bit set.
            return false
        }
        return true
    }

    private static func containsLowercased(_ bytes: UnsafeBufferPointer<UInt8>, _ word: StaticString) -> Bool {
        let needle = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard needle.count <= bytes.count else { return false }
        outer: for start in 0...(bytes.count - needle.count) {
            for offset in 0..<needle.count where bytes[start + offset] | 0x20 != needle[offset] { continue outer }
            return true
        }
        return false
    }

    /// Length of the head including its blank line, if the buffer holds all of it.
    static func find(crlfcrlf buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { raw -> Int? in
            let bytes = raw.bindMemory(to: UInt8.self)
            guard bytes.count >= 4 else { return nil }
            var index = 3
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\n") {
                    if bytes[index - 1] == UInt8(ascii: "\r"), bytes[index - 2] == UInt8(ascii: "\n"),
                        bytes[index - 3] == UInt8(ascii: "\r")
                    {
                        return index + 1
                    }
                    index += 1
                } else if byte == UInt8(ascii: "\r") {
                    index += 1
                } else {
                    index += 4  // no terminator can end before index + 4
                }
            }
            return nil
        }
    }

    /// Length of the first line including its CRLF, if the buffer holds all of it.
    static func find(crlf buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { raw -> Int? in
            guard let newline = raw.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            return newline + 1
        }
    }

    /// The hex size of a chunk-size line ("1a2b;ext\r\n"), nil when malformed.
    static func chunkSize(_ line: ByteBuffer) -> Int? {
        line.withUnsafeReadableBytes { raw -> Int? in
            var size = 0
            var digits = 0
            for byte in raw {
                let value: Int
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): value = Int(byte - UInt8(ascii: "a")) + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): value = Int(byte - UInt8(ascii: "A")) + 10
                default:
                    return digits > 0 ? size : nil
                }
                guard digits < 15 else { return nil }
                size = size * 16 + value
                digits += 1
            }
            return nil  // no CRLF
        }
    }
}
