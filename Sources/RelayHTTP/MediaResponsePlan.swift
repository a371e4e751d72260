public import NIOHTTP1
public import RelayStore

/// What to answer to a `GET` or `HEAD` of `/files/<digest>.<ext>`, decided from the request's headers and the blob's
/// length, ETag and type alone: a pure value, so every precondition and range case is tested without a channel.
///
/// Preconditions are evaluated in RFC 9110 §13.2.2 order: `If-None-Match` first (weak comparison, `*` matches the
/// existing blob) → 304; then `Range`, which `If-Range` (strong comparison against the ETag) can only switch off.
/// There is no `Last-Modified` (the ETag is the content's digest, a better validator), so a date in `If-Range`
/// never matches and the whole blob is sent, as RFC 9110 §13.1.5 requires of a validator that cannot be checked.
/// `If-Match` and `If-Unmodified-Since` are not evaluated: the representation is immutable.
///
/// `HEAD` gets the same status and headers as `GET` (RFC 9110 §9.3.2), 206 and `Content-Range` included, as nginx and
/// S3 do, so a client can probe a range; only `sendsBody` differs.
public struct MediaResponsePlan: Sendable, Equatable {
    /// Which response this is.
    public enum Outcome: Sendable, Hashable {
        /// 304: the client's copy is current.
        case notModified
        /// 200: the whole blob.
        case full
        /// 206: one range of it.
        case partial
        /// 416: the range lies past the end; the caller writes a fal-shaped JSON error body.
        case unsatisfiable
    }

    /// `Cache-Control` of every media response: a blob's URL names its bytes, so they never change.
    public static let cacheControl = "public, max-age=31536000, immutable"

    public let outcome: Outcome
    public let status: HTTPResponseStatus
    /// The response head's fields. For 200/206 complete, `content-length` included (for `HEAD` too: what `GET`
    /// would send). For 304: `etag` and `cache-control` only. For 416: `content-range`, `accept-ranges`,
    /// `x-content-type-options` and `cache-control: no-store` (a shared cache must not keep an error under the blob's
    /// URL); the caller adds `content-type`/`content-length` of its JSON body.
    public let headers: HTTPHeaders
    /// The bytes of the blob this response describes: `0..<length` for 200, the range for 206; nil for 304 and 416.
    public let range: Range<Int>?
    /// Whether the bytes of `range` follow the head: false for `HEAD`.
    public let sendsBody: Bool

    /// The bytes to load and write after the head; nil when nothing follows (HEAD, 304, 416, an empty blob).
    public var body: Range<Int>? {
        guard sendsBody, let range, !range.isEmpty else { return nil }
        return range
    }

    /// The plan for a stored blob, its ETag made from its digest.
    public init(method: HTTPMethod, requestHeaders: HTTPHeaders, record: BlobRecord) {
        self.init(
            method: method,
            requestHeaders: requestHeaders,
            length: record.size,
            etag: Self.entityTag(record),
            contentType: record.mediaType.contentType
        )
    }

    /// - Parameters:
    ///   - method: `GET` or `HEAD`; any other method is planned like `GET` without range support.
    ///   - length: the content length (uncompressed), ≥ 0.
    ///   - etag: the strong entity-tag with its quotes, `"<digest hex>"`.
    public init(method: HTTPMethod, requestHeaders: HTTPHeaders, length: Int, etag: String, contentType: String) {
        let length = max(0, length)
        let isHead = method == .HEAD

        let noneMatch = requestHeaders["if-none-match"]
        if !noneMatch.isEmpty, EntityTag.list(noneMatch, weaklyMatches: etag) {
            var headers = HTTPHeaders()
            headers.add(name: "etag", value: etag)
            headers.add(name: "cache-control", value: Self.cacheControl)
            self.init(outcome: .notModified, status: .notModified, headers: headers, range: nil, sendsBody: false)
            return
        }

        var resolution: ByteRange.Resolution = .whole
        let rangeFields = requestHeaders["range"]
        if method == .GET || isHead, !rangeFields.isEmpty,
            let range = ByteRange(field: rangeFields.joined(separator: ",")),
            Self.ifRangeAllowsRange(requestHeaders["if-range"], etag: etag)
        {
            resolution = range.resolved(length: length)
        }

        var headers = HTTPHeaders()
        switch resolution {
        case .unsatisfiable:
            headers.add(name: "content-range", value: "bytes */\(length)")
            headers.add(name: "accept-ranges", value: "bytes")
            headers.add(name: "x-content-type-options", value: "nosniff")
            headers.add(name: "cache-control", value: "no-store")
            self.init(
                outcome: .unsatisfiable,
                status: .rangeNotSatisfiable,
                headers: headers,
                range: nil,
                sendsBody: false
            )
        case .satisfiable(let bytes):
            Self.addRepresentationHeaders(&headers, contentType: contentType, length: bytes.count, etag: etag)
            headers.add(name: "content-range", value: "bytes \(bytes.lowerBound)-\(bytes.upperBound)/\(length)")
            self.init(
                outcome: .partial,
                status: .partialContent,
                headers: headers,
                range: Range(bytes),
                sendsBody: !isHead
            )
        case .whole:
            Self.addRepresentationHeaders(&headers, contentType: contentType, length: length, etag: etag)
            self.init(outcome: .full, status: .ok, headers: headers, range: 0..<length, sendsBody: !isHead)
        }
    }

    private init(
        outcome: Outcome,
        status: HTTPResponseStatus,
        headers: HTTPHeaders,
        range: Range<Int>?,
        sendsBody: Bool
    ) {
        self.outcome = outcome
        self.status = status
        self.headers = headers
        self.range = range
        self.sendsBody = sendsBody
    }

    /// `"<digest hex>"`: the strong ETag of a blob.
    public static func entityTag(_ record: BlobRecord) -> String {
        "\"\(record.digest.hex)\""
    }

    private static func addRepresentationHeaders(
        _ headers: inout HTTPHeaders,
        contentType: String,
        length: Int,
        etag: String
    ) {
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(length))
        headers.add(name: "etag", value: etag)
        headers.add(name: "cache-control", value: cacheControl)
        headers.add(name: "accept-ranges", value: "bytes")
        headers.add(name: "x-content-type-options", value: "nosniff")
    }

    /// RFC 9110 §13.1.5: the range applies when there is no `If-Range`, or when it names exactly our strong ETag.
    /// A date, a weak tag, several field lines or garbage do not match: the whole blob is sent.
    private static func ifRangeAllowsRange(_ fields: [String], etag: String) -> Bool {
        guard let field = fields.first else { return true }
        guard fields.count == 1, let tag = EntityTag(exactly: field), let ours = EntityTag(exactly: etag) else {
            return false
        }
        return tag.stronglyMatches(ours)
    }
}

/// An `entity-tag` (RFC 9110 §8.8.3): `[W/] DQUOTE *etagc DQUOTE`.
struct EntityTag: Hashable {
    var isWeak: Bool
    /// Between the quotes.
    var opaque: Substring

    /// A field value that is exactly one entity-tag (optional white space around it); nil otherwise.
    init?(exactly value: some StringProtocol) {
        var scanner = Scanner(Substring(value))
        scanner.skipWhitespace()
        guard let tag = scanner.entityTag() else { return nil }
        scanner.skipWhitespace()
        guard scanner.isAtEnd else { return nil }
        self = tag
    }

    init(isWeak: Bool, opaque: Substring) {
        self.isWeak = isWeak
        self.opaque = opaque
    }

    /// Strong comparison: both strong, same opaque-tag.
    func stronglyMatches(_ other: EntityTag) -> Bool {
        !isWeak && !other.isWeak && opaque == other.opaque
    }

    /// Weak comparison: same opaque-tag, weakness ignored.
    func weaklyMatches(_ other: EntityTag) -> Bool {
        opaque == other.opaque
    }

    /// Whether `If-None-Match` field lines (`"*"` or `#entity-tag`) match `etag` by weak comparison. Malformed
    /// elements are skipped; `*` matches, since the blob exists.
    static func list(_ fields: [String], weaklyMatches etag: String) -> Bool {
        guard let ours = EntityTag(exactly: etag) else { return false }
        for field in fields {
            var scanner = Scanner(field[...])
            while !scanner.isAtEnd {
                scanner.skipWhitespace()
                if scanner.consume(UInt8(ascii: "*")) {
                    scanner.skipWhitespace()
                    if scanner.isAtEnd || scanner.peek == UInt8(ascii: ",") { return true }
                } else if let tag = scanner.entityTag() {
                    scanner.skipWhitespace()
                    if tag.weaklyMatches(ours), scanner.isAtEnd || scanner.peek == UInt8(ascii: ",") { return true }
                }
                scanner.skipPastComma()
            }
        }
        return false
    }

    /// Reads entity-tags and list punctuation from a field value.
    struct Scanner {
        private let text: Substring
        private var index: Substring.UTF8View.Index

        init(_ text: Substring) {
            self.text = text
            self.index = text.utf8.startIndex
        }

        var isAtEnd: Bool { index == text.utf8.endIndex }

        var peek: UInt8? { isAtEnd ? nil : text.utf8[index] }

        mutating func skipWhitespace() {
            while let byte = peek, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { advance() }
        }

        mutating func consume(_ byte: UInt8) -> Bool {
            guard peek == byte else { return false }
            advance()
            return true
        }

        /// Skips to just after the next comma outside a quoted opaque-tag, or to the end.
        mutating func skipPastComma() {
            var quoted = false
            while let byte = peek {
                advance()
                if byte == UInt8(ascii: "\"") {
                    quoted.toggle()
                } else if byte == UInt8(ascii: ","), !quoted {
                    return
                }
            }
        }

        /// `[W/] DQUOTE *etagc DQUOTE` at the current position; on failure the position is unspecified.
        mutating func entityTag() -> EntityTag? {
            var isWeak = false
            if peek == UInt8(ascii: "W") {
                advance()
                guard consume(UInt8(ascii: "/")) else { return nil }
                isWeak = true
            }
            guard consume(UInt8(ascii: "\"")) else { return nil }
            let start = index
            while let byte = peek {
                if byte == UInt8(ascii: "\"") {
                    let opaque = Substring(text.utf8[start..<index])
                    advance()
                    return EntityTag(isWeak: isWeak, opaque: opaque)
                }
                // etagc = %x21 / %x23-7E / obs-text
                guard byte == 0x21 || (0x23...0x7E).contains(byte) || byte >= 0x80 else { return nil }
                advance()
            }
            return nil
        }

        private mutating func advance() {
            index = text.utf8.index(after: index)
        }
    }
}
