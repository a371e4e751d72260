/// fal's platform request headers (PROTOCOL.md §11.1) as one submission sent them: read once at submit, validated,
/// kept with the job, and forwarded by name to an origin (never a blanket `x-fal-*`: fal reserves the rest).
public struct PlatformHeaders: Sendable, Hashable {
    /// `X-Fal-Queue-Priority`.
    public enum Priority: String, Sendable, Hashable, Comparable {
        case low
        case normal

        public static func < (lhs: Priority, rhs: Priority) -> Bool { lhs == .low && rhs == .normal }
    }

    /// One `X-Fal-Tags` pair.
    public struct Tag: Sendable, Hashable {
        public let key: String
        public let value: String
    }

    /// `X-Fal-Request-Timeout` (or `X-Fal-Request-Start-Timeout`): seconds the request may wait to start.
    public var startTimeout: Double?
    public var priority: Priority?
    /// `X-Fal-Runner-Hint`, forwarded as it came.
    public var runnerHint: String?
    /// `x-fal-no-retry`: `1`, `true` or `yes`.
    public var noRetry = false
    /// `x-fal-disable-fallbacks`, forwarded as it came.
    public var disableFallbacks: String?
    /// `X-Fal-Store-IO: 0`: keep nothing of the request's input and output after delivery.
    public var storeIO = true
    /// `X-Fal-Tags`, the valid pairs only.
    public var tags: [Tag] = []
    /// `X-Fal-Object-Lifecycle-Preference`'s `expiration_duration_seconds`: the generation's media are deleted this
    /// long after it ends. nil: the relay's own policy (fal's `null`, "never", is kept while the byte budget allows).
    public var mediaExpirySeconds: Double?
    /// The header as the client sent it, forwarded to an origin as it is.
    public var lifecyclePreference: String?
    /// The `fal_max_queue_length` query parameter: refuse (429) rather than queue behind more than this many.
    public var maxQueueLength: Int?

    public init() {}

    /// The headers' names, as fal spells them.
    public enum Name {
        public static let requestTimeout = "X-Fal-Request-Timeout"
        public static let requestStartTimeout = "X-Fal-Request-Start-Timeout"
        public static let queuePriority = "X-Fal-Queue-Priority"
        public static let runnerHint = "X-Fal-Runner-Hint"
        public static let noRetry = "x-fal-no-retry"
        public static let disableFallbacks = "x-fal-disable-fallbacks"
        public static let storeIO = "X-Fal-Store-IO"
        public static let tags = "X-Fal-Tags"
        public static let lifecyclePreference = "X-Fal-Object-Lifecycle-Preference"
    }

    /// The longest per-request media lifetime accepted (ten years).
    public static let maxMediaExpirySeconds = 10 * 365 * 86_400.0

    /// fal's limits on tags (docs "request tags").
    public static let maxTags = 10
    public static let maxTagKeyLength = 64
    public static let maxTagValueLength = 256
    public static let maxTagsBytes = 1024

    /// Reads the headers through `value(name)` (the first value of a header, by case-insensitive name). A timeout or a
    /// priority fal would refuse is a 422 naming the header; invalid tags are dropped, never failing the request.
    public init(value: (String) -> String?, query: (String) -> String? = { _ in nil }) throws(FalError) {
        if let text = query("fal_max_queue_length") {
            guard let length = Int(text.trimmingSpaces), length >= 0 else {
                throw .validation(
                    .init(
                        location: ["query", "fal_max_queue_length"],
                        message: "fal_max_queue_length must be a whole number of requests, not \"\(text)\"",
                        type: "value_error"
                    )
                )
            }
            maxQueueLength = length
        }
        if let text = value(Name.requestTimeout) ?? value(Name.requestStartTimeout) {
            let name = value(Name.requestTimeout) == nil ? Name.requestStartTimeout : Name.requestTimeout
            guard let seconds = Double(text.trimmingSpaces), seconds.isFinite, seconds > 0.1 else {
                throw Self.invalid(name, "must be a number of seconds greater than 0.1, not \"\(text)\"")
            }
            startTimeout = seconds
        }
        if let text = value(Name.queuePriority) {
            guard let priority = Priority(rawValue: text.trimmingSpaces.lowercased()) else {
                throw Self.invalid(Name.queuePriority, "must be \"normal\" or \"low\", not \"\(text)\"")
            }
            self.priority = priority
        }
        runnerHint = value(Name.runnerHint).map { String($0.trimmingSpaces) }.flatMap { $0.isEmpty ? nil : $0 }
        if let text = value(Name.noRetry) {
            noRetry = ["1", "true", "yes"].contains(text.trimmingSpaces.lowercased())
        }
        disableFallbacks = value(Name.disableFallbacks).map { String($0.trimmingSpaces) }
        if let text = value(Name.storeIO) {
            storeIO = text.trimmingSpaces != "0"
        }
        tags = value(Name.tags).map(Self.tags(in:)) ?? []
        if let text = value(Name.lifecyclePreference) {
            mediaExpirySeconds = try Self.mediaExpiry(text)
            lifecyclePreference = text
        }
    }

    /// Reads `{"expiration_duration_seconds": N or null, "initial_acl": …}`. Access rules are refused (422), never
    /// ignored: this relay's media are public to whoever holds their URL, so a rule that hides them cannot be kept.
    static func mediaExpiry(_ text: String) throws(FalError) -> Double? {
        let name = Name.lifecyclePreference
        guard let object = (try? JSONValue(parsing: Array(text.utf8), maxDepth: 16))?.objectValue else {
            throw invalid(name, "must be a JSON object such as {\"expiration_duration_seconds\": 3600}")
        }
        if let acl = object["initial_acl"], acl != .null {
            guard acl.objectValue?.keys.allSatisfy({ $0 == "default" || $0 == "rules" }) == true,
                acl["default"] == nil || acl["default"] == "allow",
                acl["rules"] == nil || acl["rules"] == .null || acl["rules"] == []
            else {
                throw invalid(
                    name,
                    "initial_acl rules are not supported: media here are public to anyone holding their URL"
                )
            }
        }
        switch object["expiration_duration_seconds"] {
        case nil, .null?:
            return nil
        case let value?:
            guard let seconds = value.doubleValue, seconds.rounded() == seconds, seconds >= 1,
                seconds <= maxMediaExpirySeconds
            else {
                throw invalid(
                    name,
                    "expiration_duration_seconds must be a whole number of seconds from 1 to ten years, or null"
                )
            }
            return seconds
        }
    }

    /// The valid pairs of an `X-Fal-Tags` value (`key=value,…`), in order, at most `maxTags` and `maxTagsBytes` in
    /// all: keys `^[a-z0-9._-]+$` up to 64, values up to 256, no `fal.` keys, each key once (the first wins).
    public static func tags(in text: String) -> [Tag] {
        var found: [Tag] = []
        var bytes = 0
        for pair in text.split(separator: ",") {
            guard found.count < maxTags, let equals = pair.firstIndex(of: "=") else { continue }
            let key = String(pair[..<equals].trimmingSpaces)
            let value = String(pair[pair.index(after: equals)...].trimmingSpaces)
            guard !key.isEmpty, key.utf8.count <= maxTagKeyLength, value.utf8.count <= maxTagValueLength,
                !key.hasPrefix("fal."), key.utf8.allSatisfy(isTagKeyByte),
                !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }),
                !found.contains(where: { $0.key == key }),
                bytes + key.utf8.count + value.utf8.count + 1 <= maxTagsBytes
            else { continue }
            bytes += key.utf8.count + value.utf8.count + 1
            found.append(Tag(key: key, value: value))
        }
        return found
    }

    /// The tags as one header value again (`key=value,…`), or nil when there are none.
    public var tagsText: String? { Self.text(of: tags) }

    /// Tags as one header value (`key=value,…`; `tags(in:)` reads it back), or nil when there are none.
    public static func text(of tags: [Tag]) -> String? {
        tags.isEmpty ? nil : tags.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    /// What an origin must see of them, by name, for a job that `priority` describes now. Not the request's own
    /// deadline (`X-Fal-Request-Timeout`) nor its `fal_max_queue_length`: the relay keeps both for each request
    /// itself, and a job another request shares must not end or be refused at the origin by one request's limits.
    public func forwarded(priority: Priority?) -> [(String, String)] {
        var headers: [(String, String)] = []
        if let priority { headers.append((Name.queuePriority, priority.rawValue)) }
        if let runnerHint { headers.append((Name.runnerHint, runnerHint)) }
        if noRetry { headers.append((Name.noRetry, "1")) }
        if let disableFallbacks { headers.append((Name.disableFallbacks, disableFallbacks)) }
        if !storeIO { headers.append((Name.storeIO, "0")) }
        if let tagsText { headers.append((Name.tags, tagsText)) }
        if let lifecyclePreference { headers.append((Name.lifecyclePreference, lifecyclePreference)) }
        return headers
    }

    private static func isTagKeyByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    private static func invalid(_ header: String, _ message: String) -> FalError {
        .validation(.init(location: ["header", header], message: "\(header) \(message)", type: "value_error"))
    }
}

extension StringProtocol {
    fileprivate var trimmingSpaces: Substring {
        var text = self[...]
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return Substring(text)
    }
}
