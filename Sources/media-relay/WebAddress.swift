import Foundation

/// URL text helpers for the few shapes `submit` needs.
enum WebAddress {
    /// `scheme://authority`, lowercased, for http(s) URLs with a host; nil otherwise.
    static func origin(of url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else { return nil }
        let port = components.port.map { ":\($0)" } ?? ""
        return "\(scheme)://\(host.lowercased())\(port)"
    }

    /// Appends a path suffix before any query, then adds `query`.
    static func appending(_ suffix: String, query: String, to url: String) -> String {
        let parts = url.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let base = String(parts[0]) + suffix
        let existing = parts.count > 1 ? String(parts[1]) : ""
        return base + "?" + (existing.isEmpty ? query : existing + "&" + query)
    }
}
