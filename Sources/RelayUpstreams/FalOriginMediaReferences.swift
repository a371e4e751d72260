import RelayCore
import RelayStore

/// The media files a fal result points at, and the result rewritten to point at the relay's copies.
///
/// A media reference is an `http(s)` URL under a key named `url`, in an object that also has a `content_type`
/// (fal's `File`/`Image` objects) or whose path ends in a known media extension. Data URIs and other URL-valued
/// fields (an echoed `image_url` input, a homepage link) are left alone.
struct FalOriginMediaReferences: Sendable {
    /// One URL to pull, with what the result says about its type.
    struct Reference: Sendable, Hashable {
        let url: String
        /// The object's `content_type`, if any.
        let declaredContentType: String?
    }

    /// Each URL once, in document order.
    let references: [Reference]

    init(in result: JSONValue) {
        var found: [Reference] = []
        var seen: Set<String> = []
        Self.collect(result, into: &found, seen: &seen)
        references = found
    }

    /// The result with every pulled URL replaced by `{publicBaseURL}/files/{fileName}` and each such object's
    /// existing `file_size` set to the stored size. URLs missing from `records` stay as they are.
    static func rewrite(_ value: JSONValue, records: [String: BlobRecord], publicBaseURL: String) -> JSONValue {
        switch value {
        case .array(let items):
            return .array(items.map { rewrite($0, records: records, publicBaseURL: publicBaseURL) })
        case .object(let object):
            var rewritten = JSONObject()
            for (key, member) in object {
                rewritten[key] = rewrite(member, records: records, publicBaseURL: publicBaseURL)
            }
            if let url = isReference(in: object), let record = records[url] {
                rewritten["url"] = .string(publicBaseURL + "/files/" + record.fileName)
                if rewritten["file_size"] != nil {
                    rewritten["file_size"] = .number(Double(record.size))
                }
            }
            return .object(rewritten)
        default:
            return value
        }
    }

    /// The media type to store a pulled file as: the result's `content_type`, else the response's `Content-Type`,
    /// else the URL's extension, whichever first names something more precise than `application/octet-stream`.
    static func mediaType(declared: String?, served: String?, url: String) -> MediaType {
        for candidate in [declared, served].compactMap({ $0 }) where !candidate.isEmpty {
            let type = MediaType.forContentType(candidate)
            if type != .octetStream { return type }
        }
        return pathExtension(of: url).flatMap { MediaType.forExtension($0) } ?? .octetStream
    }

    /// Whether `text` is an absolute `http://` or `https://` URL.
    static func isHTTPURL(_ text: String) -> Bool {
        let lower = text.prefix(8).lowercased()
        return lower.hasPrefix("http://") || lower.hasPrefix("https://")
    }

    /// The extension of a URL's last path segment (query and fragment ignored), without the dot.
    static func pathExtension(of url: String) -> Substring? {
        let path = url.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let bare = path.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard let schemeEnd = bare.firstRange(of: "://") else { return nil }
        let afterHost = bare[schemeEnd.upperBound...].drop { $0 != "/" }
        guard let last = afterHost.split(separator: "/").last, let dot = last.lastIndex(of: ".") else { return nil }
        let ext = last[last.index(after: dot)...]
        return ext.isEmpty ? nil : ext
    }

    private static func isReference(in object: JSONObject) -> String? {
        guard let url = object["url"]?.stringValue, isHTTPURL(url) else { return nil }
        if object["content_type"]?.stringValue != nil { return url }
        if let ext = pathExtension(of: url), MediaType.forExtension(ext) != nil { return url }
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
