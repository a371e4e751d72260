/// The few URL shapes the queue protocol needs, on plain text (no Foundation): the queue hands its URLs back as
/// strings, and they go back out as strings.
public enum FalURL {
    /// Whether `text` is an absolute `http://` or `https://` URL.
    public static func isHTTP(_ text: String) -> Bool {
        let lower = text.prefix(8).lowercased()
        return lower.hasPrefix("http://") || lower.hasPrefix("https://")
    }

    /// `scheme://authority` of an http(s) URL with a host, lowercased; nil for anything else.
    public static func origin(of url: String) -> String? {
        guard isHTTP(url), let range = url.firstRange(of: "://") else { return nil }
        let authority = url[range.upperBound...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.isEmpty, !authority.hasPrefix(":"), !authority.contains("@") else { return nil }
        return (url[..<range.upperBound] + authority).lowercased()
    }

    /// `url` with `suffix` added to its path and `query` to its query string.
    public static func appending(_ suffix: String, query: String, to url: String) -> String {
        let parts = url.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts[0]) + suffix
        if parts.count == 2, !parts[1].isEmpty {
            return path + "?" + parts[1] + "&" + query
        }
        return path + "?" + query
    }

    /// The extension of a URL's last path segment (query and fragment ignored), without the dot.
    public static func pathExtension(of url: String) -> Substring? {
        let path = url.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let bare = path.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard let schemeEnd = bare.firstRange(of: "://") else { return nil }
        let afterHost = bare[schemeEnd.upperBound...].drop { $0 != "/" }
        guard let last = afterHost.split(separator: "/").last, let dot = last.lastIndex(of: ".") else { return nil }
        let ext = last[last.index(after: dot)...]
        return ext.isEmpty ? nil : ext
    }
}
