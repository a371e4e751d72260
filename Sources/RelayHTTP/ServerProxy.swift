public import RelayCore

/// fal's server-proxy contract (`@fal-ai/server-proxy`, PROTOCOL.md §11.2) as this relay keeps it: a browser app
/// configured with fal-js `proxyUrl` (or fal-swift's proxy) calls `/api/fal/proxy` with `x-fal-target-url: <fal URL>`
/// and no key; the relay answers the target itself (cache, coalescing and all) as its own key's request, so no key
/// ever reaches the browser. Pure rules here; `respondProxy` applies them.
public struct ServerProxy: Sendable {
    /// The relay API key the proxy's requests are made as.
    public var key: String
    /// `Origin`s whose pages may call the proxy (`*`: any); a caller without one presents a relay key instead.
    public var allowedOrigins: [String]
    /// Endpoint globs a POST may target (`fal-ai/flux/*`; `*` is one path segment, `**` any rest); empty: all.
    public var allowedEndpoints: [String]

    public init(key: String, allowedOrigins: [String], allowedEndpoints: [String] = []) {
        self.key = key
        self.allowedOrigins = allowedOrigins.map { Self.trimmedOrigin($0) }
        self.allowedEndpoints = allowedEndpoints
    }

    /// Where a target goes on this relay.
    public enum Host: Sendable, Hashable {
        /// `queue.fal.run`
        case queue
        /// `fal.run`
        case run
        /// `rest.fal.ai`'s storage routes
        case rest
    }

    /// A target the proxy may serve: which host's routes, and the path with its query.
    public struct Target: Sendable, Hashable {
        public let host: Host
        public let uri: String
    }

    /// The target of `x-fal-target-url`, or the 400 fal's proxy answers: a missing target, or one outside
    /// `fal.run/**`, `queue.fal.run/**` and the storage upload routes of `rest.fal.ai`.
    public static func target(_ url: String?) -> Result<Target, FalError> {
        guard let url, !url.isEmpty else {
            return .failure(.badRequest("Missing the x-fal-target-url header", type: "missing_target_url"))
        }
        let lower = url.lowercased()
        guard lower.hasPrefix("https://") else {
            return .failure(.badRequest("Invalid x-fal-target-url: not an https URL", type: "invalid_target_url"))
        }
        let rest = url.dropFirst("https://".count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        var uri = String(rest.dropFirst(authority.count))
        if let fragment = uri.firstIndex(of: "#") { uri = String(uri[..<fragment]) }
        if uri.isEmpty || uri.first == "?" { uri = "/" + uri }
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        let host: Host
        switch authority.lowercased() {
        case "queue.fal.run": host = .queue
        case "fal.run": host = .run
        case "rest.fal.ai", "rest.alpha.fal.ai":
            // Only the upload routes (a `where` here would bind to the second name alone).
            guard Self.storagePaths.contains(path) else {
                return .failure(
                    .badRequest("Invalid x-fal-target-url: \(path) is not an upload route", type: "invalid_target_url")
                )
            }
            host = .rest
        default:
            return .failure(
                .badRequest(
                    "Invalid x-fal-target-url: \(authority) is not a fal API this proxy serves",
                    type: "invalid_target_url"
                )
            )
        }
        guard !path.split(separator: "/").contains("..") else {
            return .failure(.badRequest("Invalid x-fal-target-url: a dot-dot segment", type: "invalid_target_url"))
        }
        return .success(Target(host: host, uri: uri))
    }

    /// The storage routes of `rest.fal.ai` a proxy serves (fal's default allow-list).
    static let storagePaths: Set<String> = [
        "/storage/upload/initiate", "/storage/upload/complete-multipart", "/storage/upload/initiate-multipart",
    ]

    /// Whether a page from `origin` may call the proxy.
    public func allows(origin: String?) -> Bool {
        guard let origin else { return false }
        return allowedOrigins.contains("*") || allowedOrigins.contains(Self.trimmedOrigin(origin))
    }

    /// Whether a POST may target `endpoint` (`owner/alias[/path]`).
    public func allows(endpoint: EndpointID) -> Bool {
        allowedEndpoints.isEmpty || allowedEndpoints.contains { Self.glob($0, matches: endpoint.description) }
    }

    /// `*` matches one path segment, `**` the rest (at least one segment).
    static func glob(_ pattern: String, matches text: String) -> Bool {
        let parts = pattern.split(separator: "/")
        let segments = text.split(separator: "/")
        for (index, part) in parts.enumerated() {
            if part == "**" { return segments.count > index }
            guard index < segments.count, part == "*" || part == segments[index] else { return false }
        }
        return parts.count == segments.count
    }

    private static func trimmedOrigin(_ origin: String) -> String {
        var text = origin.lowercased()
        while text.hasSuffix("/") { text.removeLast() }
        return text
    }
}
