public import RelayCore
public import RelayStore

/// The media files a fal result points at: one walk and one rule for every reader of results (the origin upstream
/// pulls them into the blob store, `media-relay submit` saves them to disk).
///
/// A media reference is an `http(s)` URL under a key named `url`, in an object that also has a `content_type`
/// (fal's `File`/`Image` objects) or whose path ends in a known media extension. Data URIs and other URL-valued
/// fields (an echoed `image_url` input, a homepage link) are left alone.
public struct FalMediaReferences: Sendable {
    /// One URL to fetch, with what the result says about its type.
    public struct Reference: Sendable, Hashable {
        public let url: String
        /// The object's `content_type`, if any.
        public let declaredContentType: String?
    }

    /// What a fetched reference became: its new URL and its stored size.
    public struct Replacement: Sendable, Hashable {
        public let url: String
        public let size: Int

        public init(url: String, size: Int) {
            self.url = url
            self.size = size
        }
    }

    /// Each URL once, in document order.
    public let references: [Reference]

    public init(in result: JSONValue) {
        var found: [Reference] = []
        var seen: Set<String> = []
        Self.collect(result, into: &found, seen: &seen)
        references = found
    }

    /// The result with every replaced URL swapped for its replacement and each such object's existing `file_size`
    /// set to the replacement's size. URLs without a replacement stay as they are.
    public static func rewrite(_ value: JSONValue, replacements: [String: Replacement]) -> JSONValue {
        switch value {
        case .array(let items):
            return .array(items.map { rewrite($0, replacements: replacements) })
        case .object(let object):
            var rewritten = JSONObject()
            for (key, member) in object {
                rewritten[key] = rewrite(member, replacements: replacements)
            }
            if let url = isReference(in: object), let replacement = replacements[url] {
                rewritten["url"] = .string(replacement.url)
                if rewritten["file_size"] != nil {
                    rewritten["file_size"] = .number(Double(replacement.size))
                }
            }
            return .object(rewritten)
        default:
            return value
        }
    }

    /// The media type of a fetched file: the result's `content_type`, else the response's `Content-Type`, else the
    /// URL's extension, whichever first names something more precise than `application/octet-stream`.
    public static func mediaType(declared: String?, served: String?, url: String) -> MediaType {
        for candidate in [declared, served].compactMap({ $0 }) where !candidate.isEmpty {
            let type = MediaType.forContentType(candidate)
            if type != .octetStream { return type }
        }
        return FalURL.pathExtension(of: url).flatMap { MediaType.forExtension($0) } ?? .octetStream
    }

    /// The file name extension to save a fetched file under: the URL's own when it has a plausible one (1 to 5
    /// letters or digits), else the media type's, else `bin`.
    public static func fileExtension(url: String, declared: String?, served: String?) -> String {
        if let own = FalURL.pathExtension(of: url), (1...5).contains(own.count),
            own.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) })
        {
            return own.lowercased()
        }
        return mediaType(declared: declared, served: served, url: url).fileExtension
    }

    private static func isReference(in object: JSONObject) -> String? {
        guard let url = object["url"]?.stringValue, FalURL.isHTTP(url) else { return nil }
        if object["content_type"]?.stringValue != nil { return url }
        if let ext = FalURL.pathExtension(of: url), MediaType.forExtension(ext) != nil { return url }
        return nil
    }

    private static func collect(_ value: JSONValue, into found: inout [Reference], seen: inout Set<String>) {
        switch value {
        case .array(let items):
            for item in items { collect(item, into: &found, seen: &seen) }
        case .object(let object):
            if let url = isReference(in: object), seen.insert(url).inserted {
                found.append(Reference(url: url, declaredContentType: object["content_type"]?.stringValue))
            }
            for (_, member) in object { collect(member, into: &found, seen: &seen) }
        default:
            break
        }
    }
}
