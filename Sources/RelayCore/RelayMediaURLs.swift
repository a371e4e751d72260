/// Recognises URLs of this relay's own media in a request's input, so that the canonical form keys them by the
/// digest of their bytes instead of by how the client reached the relay.
///
/// `http://127.0.0.1:8080/files/<digest>.png` and `https://localhost:8443/files/<digest>.png` name the same bytes;
/// an upload's stable URL (`/files/uploads/<id>/<name>`) names them too once its bytes arrived. A URL is the
/// relay's when its scheme is http(s), its host is one of the relay's names and its port one of its ports (a
/// listener's, or the public URL's). Anything else — another host, a data URI, an upload not finished yet — keeps
/// its text.
public struct RelayMediaURLs: Sendable {
    /// Lowercased host names and address literals (IPv6 without brackets).
    public var hostNames: Set<String>
    /// Ports the relay is reached on (explicit or the scheme's default).
    public var ports: Set<Int>
    /// The blob digest an upload id stands for, once its bytes are stored.
    public var uploadDigest: @Sendable (Digest128) -> Digest128?

    public init(
        hostNames: Set<String>,
        ports: Set<Int>,
        uploadDigest: @escaping @Sendable (Digest128) -> Digest128? = { _ in nil }
    ) {
        self.hostNames = Set(hostNames.map { Self.normalise(host: $0[...]) })
        self.ports = ports
        self.uploadDigest = uploadDigest
    }

    /// The digest a URL of this relay's media stands for; nil for any other string.
    public func digest(of text: String) -> Digest128? {
        let utf8 = text.utf8
        guard utf8.count < 2048, utf8.count > 8 else { return nil }
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let afterColon = text[text.index(after: colon)...]
        guard afterColon.hasPrefix("//") else { return nil }
        let rest = afterColon.dropFirst(2)
        let defaultPort: Int
        switch text[..<colon].lowercased() {
        case "https": defaultPort = 443
        case "http": defaultPort = 80
        default: return nil
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        guard !authority.contains("@") else { return nil }
        var host = authority
        var port = defaultPort
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let value = Int(after.dropFirst()) else { return nil }
                port = value
            } else if !after.isEmpty {
                return nil
            }
        } else if let colon = authority.lastIndex(of: ":") {
            guard let value = Int(authority[authority.index(after: colon)...]) else { return nil }
            port = value
            host = authority[..<colon]
        }
        guard ports.contains(port), hostNames.contains(Self.normalise(host: host)) else { return nil }
        var path = rest[slash...]
        if let end = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<end] }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard segments.first == "files" else { return nil }
        let parts = Array(segments.dropFirst())
        if parts.count == 1, let dot = parts[0].firstIndex(of: "."), let digest = Digest128(hex: parts[0][..<dot]) {
            return digest
        }
        if parts.count >= 2, parts.count <= 3, parts[0] == "uploads", let id = Digest128(hex: parts[1]) {
            return uploadDigest(id)
        }
        return nil
    }

    /// `value` with every string that is a URL of this relay's media replaced by `{"$relay_blob": "<digest>"}`, at
    /// any depth. The replacement is an object, which no URL-valued field holds, so it stands only for those bytes.
    public func canonicalising(_ value: JSONValue) -> JSONValue {
        switch value {
        case .string(let text):
            guard let digest = digest(of: text) else { return value }
            return .object(["$relay_blob": .string(digest.hex)])
        case .array(let items):
            return .array(items.map(canonicalising))
        case .object(let object):
            var copy = object
            for (name, item) in object {
                copy[name] = canonicalising(item)
            }
            return .object(copy)
        default:
            return value
        }
    }

    private static func normalise(host: Substring) -> String {
        var name = host.lowercased()
        if name.hasPrefix("[") && name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        if name.hasSuffix(".") { name.removeLast() }
        return name
    }
}
