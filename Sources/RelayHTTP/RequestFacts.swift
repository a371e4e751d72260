import NIOCore
import NIOHTTP1

/// What a responder knows of a request: the same whether NIO's parser read it (`RelayHTTPHandler`, HTTP/1.1 or an
/// HTTP/2 stream) or the fast lane did (`FastLane`), so every transport runs one piece of logic per route.
struct RequestFacts {
    var method: HTTPMethod
    var uri: String
    var host: String?
    var authorization: String?
    /// `http` or `https`: the scheme of URLs built for the client.
    var scheme: String
    /// The connection, whose peer address anonymous rate limits count (formatted only when a limit needs it).
    var channel: (any Channel)?
    /// The other header fields: all of them from NIO's parser; from the fast lane only those its routes read.
    var headers = HTTPHeaders()

    var clientIP: String { channel?.remoteAddress?.ipAddress ?? "unknown" }
    var isHead: Bool { method == .HEAD }
    /// The target without its query.
    var path: Substring {
        guard let mark = uri.utf8.firstIndex(of: UInt8(ascii: "?")) else { return uri[...] }
        return uri[..<mark]
    }
}
