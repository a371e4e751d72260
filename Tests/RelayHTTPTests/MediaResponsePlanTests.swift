import NIOHTTP1
import RelayCore
import RelayStore
import Testing

@testable import RelayHTTP

@Suite struct MediaResponsePlanTests {
    static let hex = "0123456789abcdef0123456789abcdef"
    static let etag = "\"\(hex)\""
    static let length = 10_000
    static let immutable = "public, max-age=31536000, immutable"

    func plan(
        _ method: HTTPMethod = .GET,
        _ fields: [(String, String)] = [],
        length: Int = length,
        contentType: String = "image/png"
    ) -> MediaResponsePlan {
        MediaResponsePlan(
            method: method,
            requestHeaders: HTTPHeaders(fields),
            length: length,
            etag: Self.etag,
            contentType: contentType
        )
    }

    /// The response head's fields in order, `name: value`.
    func lines(_ plan: MediaResponsePlan) -> [String] {
        plan.headers.map { "\($0.name): \($0.value)" }
    }

    func fullHeaders(length: Int = length, contentType: String = "image/png") -> [String] {
        [
            "content-type: \(contentType)",
            "content-length: \(length)",
            "etag: \(Self.etag)",
            "cache-control: \(Self.immutable)",
            "accept-ranges: bytes",
            "x-content-type-options: nosniff",
        ]
    }

    func partialHeaders(_ first: Int, _ last: Int, of length: Int = length) -> [String] {
        fullHeaders(length: last - first + 1) + ["content-range: bytes \(first)-\(last)/\(length)"]
    }

    func unsatisfiableHeaders(length: Int = length) -> [String] {
        [
            "content-range: bytes */\(length)",
            "accept-ranges: bytes",
            "x-content-type-options: nosniff",
            "cache-control: no-store",
        ]
    }

    let notModifiedHeaders = ["etag: \(etag)", "cache-control: \(immutable)"]

    func expectFull(
        _ plan: MediaResponsePlan,
        length: Int = length,
        head: Bool = false,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(plan.outcome == .full, sourceLocation: sourceLocation)
        #expect(plan.status == .ok, sourceLocation: sourceLocation)
        #expect(lines(plan) == fullHeaders(length: length), sourceLocation: sourceLocation)
        #expect(plan.range == 0..<length, sourceLocation: sourceLocation)
        #expect(plan.sendsBody == !head, sourceLocation: sourceLocation)
        #expect(plan.body == (head || length == 0 ? nil : 0..<length), sourceLocation: sourceLocation)
    }

    func expectPartial(
        _ plan: MediaResponsePlan,
        _ first: Int,
        _ last: Int,
        head: Bool = false,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(plan.outcome == .partial, sourceLocation: sourceLocation)
        #expect(plan.status == .partialContent, sourceLocation: sourceLocation)
        #expect(lines(plan) == partialHeaders(first, last), sourceLocation: sourceLocation)
        #expect(plan.range == first..<(last + 1), sourceLocation: sourceLocation)
        #expect(plan.sendsBody == !head, sourceLocation: sourceLocation)
        #expect(plan.body == (head ? nil : first..<(last + 1)), sourceLocation: sourceLocation)
    }

    func expectUnsatisfiable(
        _ plan: MediaResponsePlan,
        length: Int = length,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(plan.outcome == .unsatisfiable, sourceLocation: sourceLocation)
        #expect(plan.status == .rangeNotSatisfiable, sourceLocation: sourceLocation)
        #expect(plan.status.code == 416, sourceLocation: sourceLocation)
        #expect(lines(plan) == unsatisfiableHeaders(length: length), sourceLocation: sourceLocation)
        #expect(plan.range == nil, sourceLocation: sourceLocation)
        #expect(!plan.sendsBody, sourceLocation: sourceLocation)
        #expect(plan.body == nil, sourceLocation: sourceLocation)
    }

    func expectNotModified(_ plan: MediaResponsePlan, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(plan.outcome == .notModified, sourceLocation: sourceLocation)
        #expect(plan.status == .notModified, sourceLocation: sourceLocation)
        #expect(lines(plan) == notModifiedHeaders, sourceLocation: sourceLocation)
        #expect(plan.range == nil, sourceLocation: sourceLocation)
        #expect(plan.body == nil, sourceLocation: sourceLocation)
    }

    // MARK: - 200

    @Test func plainGetIsTheWholeBlob() {
        expectFull(plan())
    }

    @Test func headHasTheSameHeadersAndNoBody() {
        expectFull(plan(.HEAD), head: true)
    }

    @Test func fromRecordUsesTheDigestAsETagAndTheTypeOfTheURL() {
        let digest = Digest128(hex: Self.hex)!
        let record = BlobRecord(digest: digest, size: 4321, storedSize: 1000, mediaType: .wav)
        #expect(MediaResponsePlan.entityTag(record) == Self.etag)
        let plan = MediaResponsePlan(method: .GET, requestHeaders: [:], record: record)
        #expect(lines(plan) == fullHeaders(length: 4321, contentType: "audio/wav"))
        #expect(plan.body == 0..<4321, "the uncompressed size, not the stored one")
        let text = MediaResponsePlan(
            method: .GET,
            requestHeaders: ["Range": "bytes=1-2"],
            record: BlobRecord(digest: digest, size: 9, storedSize: 9, mediaType: .text)
        )
        #expect(text.headers.first(name: "content-type") == "text/plain; charset=utf-8")
        #expect(text.headers.first(name: "content-range") == "bytes 1-2/9")
    }

    @Test func emptyBlob() {
        expectFull(plan(length: 0), length: 0)
        expectFull(plan(.HEAD, length: 0), length: 0, head: true)
        expectFull(plan(.GET, [("Range", "bytes=-5")], length: 0), length: 0)
        expectUnsatisfiable(plan(.GET, [("Range", "bytes=0-")], length: 0), length: 0)
        expectUnsatisfiable(plan(.GET, [("Range", "bytes=-0")], length: 0), length: 0)
        expectNotModified(plan(.GET, [("If-None-Match", Self.etag)], length: 0))
    }

    // MARK: - 206

    @Test(arguments: [
        ("bytes=0-499", 0, 499),
        ("bytes=500-999", 500, 999),
        ("bytes=9500-", 9500, 9999),
        ("bytes=0-", 0, 9999),
        ("bytes=-500", 9500, 9999),
        ("bytes=-1", 9999, 9999),
        ("bytes=9999-9999", 9999, 9999),
        ("bytes=9000-20000", 9000, 9999),  // end clamps to length - 1
        ("bytes=0-9223372036854775807", 0, 9999),
        ("bytes=-10000", 0, 9999),
        ("bytes=-20000", 0, 9999),  // suffix longer than the blob: all of it
        ("bytes=-9223372036854775807", 0, 9999),
        ("BYTES=1-2", 1, 2),
        ("  bytes=1-2  ", 1, 2),
        ("bytes=1-2, ", 1, 2),
        ("bytes=,1-2", 1, 2),
    ])
    func singleRange(range: String, first: Int, last: Int) {
        expectPartial(plan(.GET, [("Range", range)]), first, last)
        expectPartial(plan(.HEAD, [("Range", range)]), first, last, head: true)
    }

    @Test func exactHeadersOfA206() {
        let plan = plan(.GET, [("range", "bytes=100-199")], contentType: "video/mp4")
        #expect(
            lines(plan) == [
                "content-type: video/mp4",
                "content-length: 100",
                "etag: \"0123456789abcdef0123456789abcdef\"",
                "cache-control: public, max-age=31536000, immutable",
                "accept-ranges: bytes",
                "x-content-type-options: nosniff",
                "content-range: bytes 100-199/10000",
            ]
        )
        #expect(plan.body == 100..<200)
    }

    // MARK: - 416

    @Test(arguments: [
        "bytes=10000-", "bytes=10000-10005", "bytes=20000-30000", "bytes=-0", "bytes=9223372036854775807-",
    ])
    func unsatisfiableRange(range: String) {
        expectUnsatisfiable(plan(.GET, [("Range", range)]))
        expectUnsatisfiable(plan(.HEAD, [("Range", range)]))
    }

    // MARK: - Ranges that are ignored (200)

    @Test(arguments: [
        "bytes=0-1,5-6",  // several ranges: served whole
        "bytes=0-1, 20000-30000",
        "bytes=5-4",  // last < first
        "bytes=abc",
        "bytes=",
        "bytes=1 - 2",
        "items=0-1",  // another unit
        "0-1",
        "bytes=9223372036854775808-",  // overflows Int
        "bytes=0-99999999999999999999",
        "bytes=-99999999999999999999",
        "bytes=../../etc/passwd",
    ])
    func ignoredRange(range: String) {
        expectFull(plan(.GET, [("Range", range)]))
        expectFull(plan(.HEAD, [("Range", range)]), head: true)
    }

    @Test func twoRangeFieldLinesAreIgnored() {
        expectFull(plan(.GET, [("Range", "bytes=0-1"), ("Range", "bytes=2-3")]))
    }

    @Test func rangeIsOnlyForGetAndHead() {
        expectFull(plan(.POST, [("Range", "bytes=0-1")]))
        expectFull(plan(.PUT, [("Range", "bytes=99999-")]))
    }

    // MARK: - If-None-Match (304)

    @Test(arguments: [
        etag,
        "W/\(etag)",  // weak comparison
        "*",
        " \(etag) ",
        "\"other\", \(etag)",
        "\"other\",\(etag)",
        "\"a,b\", \(etag)",  // a comma inside another tag
        "W/\"x\" , W/\(etag) , \"y\"",
        "garbage, \(etag)",
        "\"\", \(etag)",
        ", ,\(etag),",
        "\"other\", *",
    ])
    func ifNoneMatchMatches(field: String) {
        expectNotModified(plan(.GET, [("If-None-Match", field)]))
        expectNotModified(plan(.HEAD, [("If-None-Match", field)]))
    }

    @Test(arguments: [
        "\"other\"",
        "W/\"other\"",
        hex,  // not quoted: not an entity-tag
        "\"\(hex)",  // unterminated
        "\(etag)x",
        "w/\(etag)",  // W/ is case-sensitive
        "W\(etag)",
        "\"\(hex.uppercased())\"",  // opaque tags compare byte for byte
        "\"0123456789abcdef0123456789abcde\"",
        "**",
        "",
        "  ",
        "\"a\" \(etag)",  // two tags without a comma
    ])
    func ifNoneMatchDoesNotMatch(field: String) {
        expectFull(plan(.GET, [("If-None-Match", field)]))
    }

    @Test func ifNoneMatchAcrossFieldLines() {
        expectNotModified(plan(.GET, [("If-None-Match", "\"a\""), ("If-None-Match", Self.etag)]))
        expectFull(plan(.GET, [("If-None-Match", "\"a\""), ("If-None-Match", "\"b\"")]))
    }

    @Test func ifNoneMatchComesBeforeRange() {
        expectNotModified(plan(.GET, [("Range", "bytes=0-1"), ("If-None-Match", Self.etag)]))
        expectNotModified(plan(.GET, [("Range", "bytes=20000-"), ("If-None-Match", Self.etag)]))
        expectNotModified(plan(.GET, [("Range", "bytes=0-1"), ("If-Range", Self.etag), ("If-None-Match", "*")]))
        // Not matching: the range is served.
        expectPartial(plan(.GET, [("Range", "bytes=0-1"), ("If-None-Match", "\"other\"")]), 0, 1)
        expectUnsatisfiable(plan(.GET, [("Range", "bytes=20000-"), ("If-None-Match", "\"other\"")]))
    }

    // MARK: - If-Range

    @Test func ifRangeWithOurStrongETagKeepsTheRange() {
        expectPartial(plan(.GET, [("Range", "bytes=0-99"), ("If-Range", Self.etag)]), 0, 99)
        expectPartial(plan(.GET, [("Range", "bytes=0-99"), ("If-Range", " \(Self.etag)\t")]), 0, 99)
        expectPartial(plan(.HEAD, [("Range", "bytes=0-99"), ("If-Range", Self.etag)]), 0, 99, head: true)
        expectUnsatisfiable(plan(.GET, [("Range", "bytes=20000-"), ("If-Range", Self.etag)]))
    }

    @Test(arguments: [
        "W/\(etag)",  // strong comparison: a weak tag never matches
        "\"other\"",
        "Sun, 06 Nov 1994 08:49:37 GMT",  // a date: there is no Last-Modified to compare with
        "Thu, 01 Jan 2099 00:00:00 GMT",
        "\(etag), \"other\"",  // If-Range takes one validator, not a list
        hex,
        "*",
        "",
        "garbage",
    ])
    func ifRangeThatDoesNotMatchSendsTheWholeBlob(field: String) {
        expectFull(plan(.GET, [("Range", "bytes=0-99"), ("If-Range", field)]))
        expectFull(plan(.HEAD, [("Range", "bytes=0-99"), ("If-Range", field)]), head: true)
        // The range is ignored, so an unsatisfiable one is too.
        expectFull(plan(.GET, [("Range", "bytes=20000-"), ("If-Range", field)]))
    }

    @Test func ifRangeWithoutRangeIsIgnored() {
        expectFull(plan(.GET, [("If-Range", Self.etag)]))
        expectFull(plan(.GET, [("If-Range", "\"other\"")]))
    }

    @Test func ifRangeOnTwoFieldLinesDoesNotMatch() {
        expectFull(plan(.GET, [("Range", "bytes=0-1"), ("If-Range", Self.etag), ("If-Range", Self.etag)]))
    }

    // MARK: - Entity tags

    @Test func entityTagParsing() {
        #expect(EntityTag(exactly: "\"abc\"") == EntityTag(isWeak: false, opaque: "abc"))
        #expect(EntityTag(exactly: "W/\"abc\"") == EntityTag(isWeak: true, opaque: "abc"))
        #expect(EntityTag(exactly: "\"\"") == EntityTag(isWeak: false, opaque: ""))
        #expect(EntityTag(exactly: "\"a!#~\u{80}\"") != nil, "etagc allows obs-text")
        #expect(EntityTag(exactly: "\"a b\"") == nil, "no space inside")
        #expect(EntityTag(exactly: "\"a\u{7F}\"") == nil)
        #expect(EntityTag(exactly: "abc") == nil)
        #expect(EntityTag(exactly: "\"abc") == nil)
        #expect(EntityTag(exactly: "W/abc") == nil)
        #expect(EntityTag(exactly: "\"a\"\"b\"") == nil)
        let strong = EntityTag(isWeak: false, opaque: "x")
        let weak = EntityTag(isWeak: true, opaque: "x")
        #expect(strong.stronglyMatches(strong))
        #expect(!strong.stronglyMatches(weak) && !weak.stronglyMatches(strong) && !weak.stronglyMatches(weak))
        #expect(weak.weaklyMatches(strong) && strong.weaklyMatches(weak) && weak.weaklyMatches(weak))
    }

    // MARK: - Invariants over the garbage corpus

    /// For every generated `Range` (with and without `If-Range`), for HEAD and GET and several lengths: the plan's
    /// range lies inside the blob, `Content-Length` is its size, `Content-Range` names it, and HEAD never has a body.
    @Test func corpusPlansAreAlwaysConsistent() {
        for field in RangeCorpus.make() {
            for length in [0, 1, 2, 100, 10_000] {
                for method in [HTTPMethod.GET, .HEAD] {
                    for ifRange in [nil, Self.etag, "\"other\""] {
                        var fields = [("Range", field)]
                        if let ifRange { fields.append(("If-Range", ifRange)) }
                        let plan = self.plan(method, fields, length: length)
                        checkInvariants(plan, length: length, method: method, field: field)
                    }
                }
            }
        }
    }

    func checkInvariants(_ plan: MediaResponsePlan, length: Int, method: HTTPMethod, field: String) {
        let context = Comment(rawValue: "\(method) Range: \(field.debugDescription) of \(length)")
        if method == .HEAD { #expect(plan.body == nil, context) }
        switch plan.outcome {
        case .full:
            #expect(plan.range == 0..<length, context)
            #expect(plan.headers.first(name: "content-length") == String(length), context)
            #expect(plan.headers.first(name: "content-range") == nil, context)
        case .partial:
            guard let range = plan.range else {
                Issue.record("206 without a range: \(context)")
                return
            }
            #expect(range.lowerBound >= 0 && range.upperBound <= length && !range.isEmpty, context)
            #expect(plan.headers.first(name: "content-length") == String(range.count), context)
            #expect(
                plan.headers.first(name: "content-range")
                    == "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(length)",
                context
            )
        case .unsatisfiable:
            #expect(plan.range == nil && plan.body == nil, context)
            #expect(plan.headers.first(name: "content-range") == "bytes */\(length)", context)
        case .notModified:
            Issue.record("304 without If-None-Match: \(context)")
        }
        if let body = plan.body {
            #expect(body.lowerBound >= 0 && body.upperBound <= length && !body.isEmpty, context)
        }
    }
}
