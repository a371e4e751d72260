public import NIOHTTP1
public import RelayCore

/// Where a request goes: the fal queue and run APIs, media files and health checks (PROTOCOL.md §1.3).
public enum Route: Sendable, Hashable {
    case health
    case ready
    case metrics
    /// fal's `POST /tokens/` (short-lived tokens for WebSockets).
    case tokens
    /// `GET /ws`: the relay's own progress WebSocket.
    case webSocket
    /// `GET /{app}[/{path}]/realtime`: fal realtime (msgpack frames).
    case realtime(EndpointID)
    case submit(EndpointID)
    case status(app: EndpointID, requestID: String)
    case statusStream(app: EndpointID, requestID: String)
    case result(app: EndpointID, requestID: String)
    case cancel(app: EndpointID, requestID: String)
    case run(EndpointID)
    case stream(EndpointID)
    case file(Digest128, fileExtension: String)
    /// fal's `POST /storage/upload/initiate` (PROTOCOL.md §7.1 d): a signed PUT URL and the file's stable URL.
    case uploadInitiate
    /// `PUT /storage/upload/<id>/<token>`: the bytes of an initiated upload (the signed URL `uploadInitiate` gave).
    case uploadPut(id: Digest128, token: String)
    /// fal's `POST /storage/auth/token?storage_type=fal-cdn-v3` (§7.1 a): a Bearer token for `v3Upload`.
    case storageToken
    /// fal's v3 `POST /files/upload` (§7.1 b): raw bytes in, the content-addressed `access_url` out.
    case v3Upload
    /// `GET /files/uploads/<id>[/<name>]`: an initiated upload's stable file URL, serving its blob once stored.
    case uploadAlias(Digest128)
    /// fal's multipart uploads (§7.1 c, §7.2): v3 create, parts and completion; `initiate-multipart`, its signed parts
    /// and completion.
    case multipartUpload(MultipartUploadStep)
    /// The browser UI: `/` (playground), `/dashboard`, and `/ui/<asset>`; the string is the asset name.
    case ui(String)
    /// `GET /relay/models`: the catalog as the playground's gallery.
    case catalog
    /// `GET /.well-known/jwks.json`: the public key webhooks are signed with, for receivers written for fal.
    case jwks
    /// `GET /relay/stats`: one statistics snapshot (JSON); `/relay/stats/stream`: one per second over SSE.
    case stats(stream: Bool)
    /// `/admin/…` (admin key): cache statistics, purge, drain.
    case admin(AdminAction)
    /// `POST /_cluster/v1/follow`: a peer node follows a job this node runs (cluster mode; the peer token admits it).
    case peerFollow
    /// `/api/fal/proxy` (GET, POST, PUT): fal's server-proxy contract (`x-fal-target-url`), served by this relay.
    case proxy
    /// `/v1/models…`: fal's Platform API (PROTOCOL.md §11.3) on this relay's catalog and request history.
    case platform(PlatformAction)
    case notFound
    case methodNotAllowed
}

extension Route {
    var isPlatform: Bool {
        if case .platform = self { return true }
        return false
    }
}

/// Which Platform API route (`https://api.fal.ai/v1` as this relay answers it).
public enum PlatformAction: Sendable, Hashable {
    /// `GET /v1/models`: list, find by `endpoint_id`, search by `q`; `expand=openapi-3.0`.
    case models
    /// `GET /v1/models/pricing?endpoint_id=…`
    case pricing
    /// `GET /v1/models/usage`: spend (and savings) per time bucket and endpoint.
    case usage
    /// `GET /v1/models/requests/by-endpoint`: the request history, with `q=` search over inputs.
    case requests
    /// `DELETE /v1/models/requests/{id}/payloads`
    case deletePayloads(String)
}

/// What the admin API is asked to do.
public enum AdminAction: Sendable, Hashable {
    /// `GET /admin/stats`
    case stats
    /// `POST /admin/purge` with `{"key": hex}`, `{"model": id}` or `{"digest": hex}`.
    case purge
    /// `POST /admin/drain`: stop being ready (load balancers move traffic away), then stop serving.
    case drain
    /// `GET /admin/cluster`: this node and the fleet as it sees it (cluster mode).
    case cluster
}

/// A host name to recognise in the `Host` header, with an optional port (nil = any port).
public struct HostPattern: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    public let port: Int?

    /// `name`, `name:port`, `[v6]` or `[v6]:port`; names compare case-insensitively.
    public init?(_ text: String) {
        guard let (name, port) = HostPattern.split(text[...]) else { return nil }
        self.name = name.lowercased()
        self.port = port
    }

    public var description: String { port.map { "\(name):\($0)" } ?? name }

    /// `name` compared ASCII-case-insensitively, without allocating (this runs on every request).
    public func matches(name: Substring, port: Int?) -> Bool {
        guard self.port == nil || self.port == port, name.utf8.count == self.name.utf8.count else { return false }
        return name.utf8.elementsEqual(self.name.utf8) { byte, lower in
            (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == lower
        }
    }

    /// Splits a Host header value into its name (as written) and an optional port; nil when malformed.
    static func split(_ text: Substring) -> (Substring, Int?)? {
        var host = text
        var port: Int?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let value = Int(after.dropFirst()), (0...65535).contains(value) else { return nil }
                port = value
            } else if !after.isEmpty {
                return nil
            }
            host = host[...close]
        } else if let colon = host.utf8.lastIndex(of: UInt8(ascii: ":")) {
            guard let value = Int(host[host.index(after: colon)...]), (0...65535).contains(value) else { return nil }
            port = value
            host = host[..<colon]
        }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}

/// Maps method, Host and path to a `Route`. Pure: tested without a server.
///
/// The queue and run APIs share paths (`POST /{owner}/{alias}`), so the `Host` header tells them apart
/// (PROTOCOL.md §10); a host that matches neither is treated as the queue host.
public struct Router: Sendable {
    public let queueHosts: [HostPattern]
    public let runHosts: [HostPattern]

    public init(queueHosts: [HostPattern], runHosts: [HostPattern]) {
        self.queueHosts = queueHosts
        self.runHosts = runHosts
    }

    public func isRunHost(_ host: String?) -> Bool {
        guard let host, let (name, port) = HostPattern.split(host[...]) else { return false }
        if queueHosts.contains(where: { $0.matches(name: name, port: port) }) { return false }
        return runHosts.contains { $0.matches(name: name, port: port) }
    }

    public func route(method: HTTPMethod, host: String?, uri: String) -> Route {
        route(method: method, uri: uri, runHost: isRunHost(host))
    }

    /// The route of `uri` on the run host (`runHost`) or the queue host: for requests whose host is not a header of
    /// their own (the server proxy's targets, `fal.run` and `queue.fal.run`).
    public func route(method: HTTPMethod, uri: String, runHost: Bool) -> Route {
        // On the UTF-8 bytes: splitting a String by Character runs grapheme breaking on every byte of every request.
        let bytes = uri.utf8
        let path = bytes.firstIndex(of: UInt8(ascii: "?")).map { uri[..<$0] } ?? uri[...]
        guard path.utf8.first == UInt8(ascii: "/") else { return .notFound }
        let segments = path.utf8.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map(
            Substring.init
        )
        let readOnly = method == .GET || method == .HEAD

        switch segments.first {
        case "healthz" where segments.count == 1:
            return readOnly ? .health : .methodNotAllowed
        case "readyz" where segments.count == 1:
            return readOnly ? .ready : .methodNotAllowed
        case "metrics" where segments.count == 1:
            return readOnly ? .metrics : .methodNotAllowed
        case "tokens" where segments.count == 1 || (segments.count == 2 && segments[1].isEmpty):
            return method == .POST ? .tokens : .methodNotAllowed
        case "ws" where segments.count == 1:
            return method == .GET ? .webSocket : .methodNotAllowed
        case "" where segments.count == 1:
            return readOnly ? .ui("index.html") : .methodNotAllowed
        case "dashboard" where segments.count == 1:
            return readOnly ? .ui("dashboard.html") : .methodNotAllowed
        case "history" where segments.count == 1:
            return readOnly ? .ui("history.html") : .methodNotAllowed
        case "ui" where segments.count == 2 && Self.isAssetName(segments[1]):
            return readOnly ? .ui(String(segments[1])) : .methodNotAllowed
        case ".well-known" where segments.count == 2 && segments[1] == "jwks.json":
            return readOnly ? .jwks : .methodNotAllowed
        case "relay" where segments.count == 2 && segments[1] == "models":
            return readOnly ? .catalog : .methodNotAllowed
        case "relay" where segments.count >= 2 && segments[1] == "stats" && segments.count <= 3:
            guard segments.count == 2 || segments[2] == "stream" else { return .notFound }
            return readOnly ? .stats(stream: segments.count == 3) : .methodNotAllowed
        case "api" where segments.count == 3 && segments[1] == "fal" && segments[2] == "proxy":
            return [.GET, .POST, .PUT].contains(method) ? .proxy : .methodNotAllowed
        case "v1" where segments.count >= 2 && segments[1] == "models":
            return Self.platform(segments, method: method)
        case "_cluster" where segments.count == 3 && segments[1] == "v1" && segments[2] == "follow":
            return method == .POST ? .peerFollow : .methodNotAllowed
        case "admin" where segments.count == 2:
            switch segments[1] {
            case "stats": return readOnly ? .admin(.stats) : .methodNotAllowed
            case "purge": return method == .POST ? .admin(.purge) : .methodNotAllowed
            case "drain": return method == .POST ? .admin(.drain) : .methodNotAllowed
            case "cluster": return readOnly ? .admin(.cluster) : .methodNotAllowed
            default: return .notFound
            }
        case "files" where segments.count == 2 && segments[1] == "upload":
            return method == .POST ? .v3Upload : .methodNotAllowed
        case "files" where segments.count == 3 && segments[1] == "upload" && segments[2] == "multipart":
            return method == .POST ? .multipartUpload(.create) : .methodNotAllowed
        case "files" where segments.count == 7 && segments[1] == "uploads":
            return Self.v3MultipartStep(segments, method: method)
        case "files" where (3...4).contains(segments.count) && segments[1] == "uploads":
            guard let id = Digest128(hex: segments[2]), id.hex == segments[2] else { return .notFound }
            return readOnly ? .uploadAlias(id) : .methodNotAllowed
        case "files":
            guard segments.count == 2, let file = Self.file(segments[1]) else { return .notFound }
            return readOnly ? .file(file.0, fileExtension: file.1) : .methodNotAllowed
        case "storage" where segments.count == 3 && segments[1] == "auth" && segments[2] == "token":
            return method == .POST ? .storageToken : .methodNotAllowed
        case "storage" where segments.count == 3 && segments[1] == "upload" && segments[2] == "initiate":
            return method == .POST ? .uploadInitiate : .methodNotAllowed
        case "storage" where segments.count == 3 && segments[1] == "upload" && segments[2] == "initiate-multipart":
            return method == .POST ? .multipartUpload(.initiate) : .methodNotAllowed
        case "storage" where segments.count == 3 && segments[1] == "upload" && segments[2] == "complete-multipart":
            return method == .POST ? .multipartUpload(.completeByURL) : .methodNotAllowed
        case "storage" where segments.count == 6 && segments[1] == "upload" && segments[2] == "multipart":
            return Self.signedMultipartStep(segments, method: method)
        case "storage" where segments.count == 4 && segments[1] == "upload":
            guard let id = Digest128(hex: segments[2]), id.hex == segments[2], Self.isUploadToken(segments[3]) else {
                return .notFound
            }
            return method == .PUT ? .uploadPut(id: id, token: String(segments[3])) : .methodNotAllowed
        default:
            break
        }

        if method == .GET, segments.count >= 3, segments.last == "realtime",
            let endpoint = EndpointID(segments: Array(segments.dropLast()))
        {
            return .realtime(endpoint)
        }

        if runHost {
            guard method == .POST else { return EndpointID(segments: segments) == nil ? .notFound : .methodNotAllowed }
            if segments.count >= 3, segments.last == "stream",
                let endpoint = EndpointID(segments: Array(segments.dropLast()))
            {
                return .stream(endpoint)
            }
            return EndpointID(segments: segments).map(Route.run) ?? .notFound
        }

        // Queue host: `{ns/}owner/alias/requests/{id}[/status[/stream]|/cancel]` before submit-with-sub-path.
        let appLength = EndpointID.namespaces.contains(segments.first ?? "") ? 3 : 2
        if segments.count >= appLength + 2, segments[appLength] == "requests",
            let app = EndpointID(segments: Array(segments.prefix(appLength)))
        {
            let id = segments[appLength + 1]
            guard RequestID.isPlausible(id) else { return .notFound }
            let requestID = String(id)
            let rest = segments.dropFirst(appLength + 2)
            switch (rest.first, rest.count) {
            case (nil, 0):
                return readOnly ? .result(app: app, requestID: requestID) : .methodNotAllowed
            case ("status"?, 1):
                return readOnly ? .status(app: app, requestID: requestID) : .methodNotAllowed
            case ("status"?, 2) where rest.last == "stream":
                return readOnly ? .statusStream(app: app, requestID: requestID) : .methodNotAllowed
            case ("cancel"?, 1):
                return method == .PUT ? .cancel(app: app, requestID: requestID) : .methodNotAllowed
            default:
                return .notFound
            }
        }
        guard let endpoint = EndpointID(segments: segments) else { return .notFound }
        return method == .POST ? .submit(endpoint) : .methodNotAllowed
    }

    /// `/v1/models[/pricing|/usage|/requests/by-endpoint|/requests/{id}/payloads]`.
    private static func platform(_ segments: [Substring], method: HTTPMethod) -> Route {
        let readOnly = method == .GET || method == .HEAD
        switch segments.count {
        case 2:
            return readOnly ? .platform(.models) : .methodNotAllowed
        case 3 where segments[2] == "pricing":
            return readOnly ? .platform(.pricing) : .methodNotAllowed
        case 3 where segments[2] == "usage":
            return readOnly ? .platform(.usage) : .methodNotAllowed
        case 4 where segments[2] == "requests" && segments[3] == "by-endpoint":
            return readOnly ? .platform(.requests) : .methodNotAllowed
        case 5 where segments[2] == "requests" && segments[4] == "payloads" && RequestID.isPlausible(segments[3]):
            return method == .DELETE ? .platform(.deletePayloads(String(segments[3]))) : .methodNotAllowed
        default:
            return .notFound
        }
    }

    /// `name.ext` of letters, digits, `-` and `_`: never a path, never a dot file.
    private static func isAssetName(_ name: Substring) -> Bool {
        guard let first = name.utf8.first, first != UInt8(ascii: "."), name.utf8.count <= 64 else { return false }
        return name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: ".")
        }
    }

    /// A signed upload token: hex digits and one `.`, of a sane length.
    private static func isUploadToken(_ token: Substring) -> Bool {
        (16...1024).contains(token.utf8.count)
            && token.utf8.allSatisfy { Hex.value($0) != nil || $0 == UInt8(ascii: ".") }
    }

    /// `<32 hex>.<ext>` with a short alphanumeric extension.
    private static func file(_ name: Substring) -> (Digest128, String)? {
        guard let dot = name.firstIndex(of: "."), let digest = Digest128(hex: name[..<dot]) else { return nil }
        let ext = name[name.index(after: dot)...]
        guard (1...8).contains(ext.utf8.count),
            ext.utf8.allSatisfy({
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
            })
        else { return nil }
        return (digest, String(ext))
    }
}

/// Query-string reading for the few parameters the fal protocol uses (`logs`, `fal_webhook`, …).
public struct QueryParameters: Sendable {
    private let pairs: [(String, String)]

    public init(uri: String) {
        guard let mark = uri.utf8.firstIndex(of: UInt8(ascii: "?")) else {
            pairs = []
            return
        }
        pairs = uri[uri.utf8.index(after: mark)...].split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = Self.decode(parts[0])
            let value = parts.count > 1 ? Self.decode(parts[1]) : ""
            return (name, value)
        }
    }

    public subscript(name: String) -> String? {
        pairs.first { $0.0 == name }?.1
    }

    /// Every value of a repeated parameter, in order.
    public func all(_ name: String) -> [String] {
        pairs.filter { $0.0 == name }.map(\.1)
    }

    /// `true`/`1`/`yes` (Python sends `true`/`false`, JS `1`/`0`: PROTOCOL.md §1.4).
    public func flag(_ name: String) -> Bool {
        switch self[name]?.lowercased() {
        case "true", "1", "yes", "on": true
        default: false
        }
    }

    /// Percent-decoding with `+` as space; invalid escapes are kept literally.
    static func decode(_ text: Substring) -> String {
        guard text.utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else {
            return String(text)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), iterator.count >= 2,
                let high = Hex.value(iterator[iterator.startIndex]),
                let low = Hex.value(iterator[iterator.startIndex + 1])
            {
                bytes.append(high << 4 | low)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
