import NIOHPACK

/// What RFC 9113 §8.2–§8.3 asks of a request's header block before a server acts on it. A block that fails is
/// malformed: the stream is reset with PROTOCOL_ERROR (§8.1.1), and the connection goes on.
enum HTTP2RequestCheck {
    struct Request {
        var method: String
        var path: String?
        var authority: String?
        var host: String?
        var authorization: String?
        /// The fields' bytes (names and values), which the relay's head limit caps as over HTTP/1.1.
        var size: Int
        /// `content-length`, which DATA must then add up to (§8.1.1).
        var contentLength: Int?
    }

    /// The request's facts, or nil when the block is malformed.
    static func request(_ headers: HPACKHeaders) -> Request? {
        var method: String?
        var scheme: String?
        var path: String?
        var authority: String?
        var contentLength: Int?
        var host: String?
        var authorization: String?
        var size = 0
        var regular = false
        for (name, value, _) in headers {
            size += name.utf8.count + value.utf8.count
            guard validValue(value) else { return nil }
            if name.utf8.first == UInt8(ascii: ":") {
                // Pseudo-fields come first, each once, and only the request ones (§8.3).
                guard !regular else { return nil }
                switch name {
                case ":method" where method == nil: method = value
                case ":scheme" where scheme == nil: scheme = value
                case ":path" where path == nil: path = value
                case ":authority" where authority == nil: authority = value
                default: return nil
                }
                continue
            }
            regular = true
            guard validName(name) else { return nil }
            switch name {
            case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
                return nil
            case "te" where value != "trailers":
                return nil
            case "host":
                host = value
            case "authorization":
                authorization = value
            case "content-length":
                guard value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                    let length = Int(value), contentLength == nil || contentLength == length
                else {
                    return nil
                }
                contentLength = length
            default:
                break
            }
        }
        guard let method, !method.isEmpty else { return nil }
        if method == "CONNECT" {
            guard authority != nil, scheme == nil, path == nil else { return nil }
        } else {
            guard scheme != nil, let path, !path.isEmpty else { return nil }
        }
        return Request(
            method: method,
            path: path,
            authority: authority,
            host: host,
            authorization: authorization,
            size: size,
            contentLength: contentLength
        )
    }

    /// Trailers: regular fields only (§8.1).
    static func trailers(_ headers: HPACKHeaders) -> Bool {
        for (name, value, _) in headers {
            guard validName(name), validValue(value) else { return false }
        }
        return true
    }

    /// A token (RFC 9110 §5.6.2) with no upper-case letter (RFC 9113 §8.2.1).
    private static func validName(_ name: String) -> Bool {
        var utf8 = name.utf8
        guard !utf8.isEmpty else { return false }
        if let valid = utf8.withContiguousStorageIfAvailable({ $0.allSatisfy(tokenByte) }) { return valid }
        utf8 = name.utf8
        return utf8.allSatisfy(tokenByte)
    }

    private static func tokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"),
            UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"),
            UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"),
            UInt8(ascii: "^"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    /// No NUL, CR or LF, and no white space at either end (RFC 9113 §8.2.1).
    private static func validValue(_ value: String) -> Bool {
        let utf8 = value.utf8
        guard let first = utf8.first, let last = utf8.last else { return true }
        if first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") || last == UInt8(ascii: " ")
            || last == UInt8(ascii: "\t")
        {
            return false
        }
        let clean: (UInt8) -> Bool = { $0 != 0 && $0 != 0x0A && $0 != 0x0D }
        return utf8.withContiguousStorageIfAvailable { $0.allSatisfy(clean) } ?? utf8.allSatisfy(clean)
    }
}
