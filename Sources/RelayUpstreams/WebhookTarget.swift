#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A `fal_webhook` URL that may be called: http(s), no credentials, a host that is not a private address.
///
/// Pure value logic. The parser is deliberately strict (ASCII only, no backslashes, no numeric host forms other
/// than a dotted quad), and the URL that is finally called is rebuilt from the parsed parts, so that this check
/// and the HTTP client can never read one string two ways. Names are checked again once resolved, at delivery
/// (`WebhookDispatcher`), because DNS can say something else later than it says now.
public struct WebhookTarget: Sendable, Hashable, CustomStringConvertible {
    /// Where the webhook host points, as the URL spells it.
    public enum Host: Sendable, Hashable {
        case name(String)
        case address(IPAddress)
    }

    /// Why a URL is refused, in the terms of a 422 `detail` entry.
    public struct Rejection: Error, Sendable, Hashable, CustomStringConvertible {
        public let message: String
        public let type: String

        public var description: String { message }

        static func malformed(_ why: String) -> Rejection {
            Rejection(message: "webhook URL is malformed: \(why)", type: "value_error.url")
        }
    }

    public static let maxLength = 2048

    public let isHTTPS: Bool
    public let host: Host
    public let port: Int
    /// Path and query, starting with `/` (the fragment is not sent).
    public let target: String

    /// What the `Host` header says: the host as written in the URL, and the port when it is not the default.
    public var authority: String {
        let hostText: String
        switch host {
        case .name(let name): hostText = name
        case .address(let address): hostText = address.uriText
        }
        return port == (isHTTPS ? 443 : 80) ? hostText : "\(hostText):\(port)"
    }

    /// The URL the client calls.
    public var url: String { "\(isHTTPS ? "https" : "http")://\(authority)\(target)" }

    public var description: String { url }

    /// The same request sent straight to `address` (plain HTTP only: the `Host` header keeps the name). Calling
    /// the address that was checked leaves no window for the name to resolve elsewhere in between.
    public func url(pinnedTo address: IPAddress) -> String {
        let port = port == 80 ? "" : ":\(port)"
        return "http://\(address.uriText)\(port)\(target)"
    }

    /// Parses and checks `text`; `allowPrivate` lets loopback and private addresses through (development setups).
    public static func parse(_ text: String, allowPrivate: Bool) -> Result<WebhookTarget, Rejection> {
        guard text.utf8.count <= maxLength else { return .failure(.malformed("longer than \(maxLength) bytes")) }
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\\") }) else {
            return .failure(.malformed("it must be ASCII without spaces, control characters or backslashes"))
        }
        guard let colon = text.firstIndex(of: ":"), text[colon...].hasPrefix("://") else {
            return .failure(.malformed("no scheme"))
        }
        let isHTTPS: Bool
        switch text[..<colon].lowercased() {
        case "http": isHTTPS = false
        case "https": isHTTPS = true
        default:
            return .failure(Rejection(message: "webhook URL must use http or https", type: "value_error.url.scheme"))
        }
        let rest = text[text.index(colon, offsetBy: 3)...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var target = String(rest[authorityEnd...])
        if let hash = target.firstIndex(of: "#") { target = String(target[..<hash]) }
        if !target.hasPrefix("/") { target = "/" + target }

        guard !authority.contains("@") else {
            return .failure(
                Rejection(message: "webhook URL must not contain credentials", type: "value_error.url.userinfo")
            )
        }
        let hostText: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return .failure(.malformed("unclosed [")) }
            hostText = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return .failure(.malformed("junk after ]")) }
                portText = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            hostText = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            hostText = authority
        }
        var port = isHTTPS ? 443 : 80
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy(\.isASCIIDigit),
                let number = Int(portText),
                (1...65535).contains(number)
            else {
                return .failure(.malformed("port must be 1...65535"))
            }
            port = number
        }
        let host: Host
        switch parseHost(hostText, bracketed: authority.hasPrefix("[")) {
        case .success(let parsed): host = parsed
        case .failure(let rejection): return .failure(rejection)
        }
        let parsed = WebhookTarget(isHTTPS: isHTTPS, host: host, port: port, target: target)
        if !allowPrivate, let why = parsed.forbiddenReason {
            return .failure(Rejection(message: why, type: "value_error.url.host"))
        }
        return .success(parsed)
    }

    /// Why the host as written may not be called, or nil. Names other than `localhost` are checked once resolved.
    public var forbiddenReason: String? {
        switch host {
        case .name(let name):
            if name == "localhost" || name.hasSuffix(".localhost") {
                return "webhook host \(name) is a loopback address; private targets are not allowed"
            }
            return nil
        case .address(let address):
            return Self.forbiddenReason(address)
        }
    }

    /// Why a (resolved) address may not be called, or nil when it is a public unicast address.
    public static func forbiddenReason(_ address: IPAddress) -> String? {
        let kind = address.kind
        guard kind != .global else { return nil }
        return "webhook host \(address) is \(kind.phrase); private targets are not allowed"
    }

    private static func parseHost(_ text: Substring, bracketed: Bool) -> Result<Host, Rejection> {
        if bracketed {
            guard !text.contains("%"), let address = IPAddress(ipv6: String(text)) else {
                return .failure(.malformed("[\(text)] is not an IPv6 address"))
            }
            return .success(.address(address))
        }
        var name = text.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        guard !name.isEmpty, name.utf8.count <= 253 else { return .failure(.malformed("no host")) }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        for label in labels {
            guard !label.isEmpty, label.utf8.count <= 63,
                label.utf8.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
            else {
                return .failure(.malformed("\"\(text)\" is not a host name"))
            }
        }
        // A name ending in a number is an IPv4 address to resolvers (`127.1`, `2130706433`, `0x7f.0.0.1`): only the
        // plain dotted quad is accepted, so that what is checked here is what a resolver would connect to.
        if let last = labels.last, last.allSatisfy(\.isASCIIDigit) || last.hasPrefix("0x") {
            guard let address = IPAddress(dottedQuad: name) else {
                return .failure(.malformed("\"\(text)\" is not a dotted-quad IPv4 address"))
            }
            return .success(.address(address))
        }
        return .success(.name(name))
    }
}

/// An IPv4 or IPv6 address, as bytes in network order.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 (IPv6).
    public let bytes: [UInt8]

    /// What an address is for; only `global` may be a webhook target by default.
    public enum Kind: Sendable, Hashable {
        case global
        case loopback
        case privateNetwork
        case sharedAddressSpace
        case linkLocal
        case uniqueLocal
        case multicast
        case unspecified
        case reserved

        var phrase: String {
            switch self {
            case .global: "a public address"
            case .loopback: "a loopback address"
            case .privateNetwork: "a private (RFC 1918) address"
            case .sharedAddressSpace: "a shared (CGNAT, RFC 6598) address"
            case .linkLocal: "a link-local address"
            case .uniqueLocal: "a unique-local address"
            case .multicast: "a multicast address"
            case .unspecified: "an unspecified address"
            case .reserved: "a reserved address"
            }
        }
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Strict dotted quad: four decimal parts 0...255, no leading zeros (which some resolvers read as octal).
    public init?(dottedQuad text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCIIDigit),
                part.count == 1 || !part.hasPrefix("0"),
                let value = UInt8(part)
            else { return nil }
            bytes.append(value)
        }
        self.bytes = bytes
    }

    /// An IPv6 address in any RFC 4291 text form (no zone).
    public init?(ipv6 text: String) {
        var storage = in6_addr()
        guard inet_pton(AF_INET6, text, &storage) == 1 else { return nil }
        self.bytes = withUnsafeBytes(of: &storage) { Array($0) }
    }

    public var isIPv4: Bool { bytes.count == 4 }

    /// The address as it appears in a URL (IPv6 in brackets).
    public var uriText: String { isIPv4 ? description : "[\(description)]" }

    public var description: String {
        if isIPv4 { return bytes.map(String.init).joined(separator: ".") }
        var storage = in6_addr()
        withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: bytes) }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &storage, &buffer, socklen_t(buffer.count)) != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Classifies the address; IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged
    /// by the IPv4 address inside.
    public var kind: Kind {
        isIPv4 ? Self.kind(ipv4: bytes[...]) : Self.kind(ipv6: bytes)
    }

    private static func kind(ipv4 b: ArraySlice<UInt8>) -> Kind {
        let a = b[b.startIndex]
        let c = b[b.startIndex + 1]
        switch a {
        case 0: return b.allSatisfy { $0 == 0 } ? .unspecified : .reserved  // 0.0.0.0/8 "this network"
        case 10: return .privateNetwork
        case 100 where c & 0xC0 == 64: return .sharedAddressSpace  // 100.64.0.0/10
        case 127: return .loopback
        case 169 where c == 254: return .linkLocal  // includes 169.254.169.254 (cloud metadata)
        case 172 where c & 0xF0 == 16: return .privateNetwork
        case 192 where c == 168: return .privateNetwork
        case 192 where c == 0 && b[b.startIndex + 2] == 0: return .reserved  // 192.0.0.0/24 protocol assignments
        case 198 where c & 0xFE == 18: return .reserved  // 198.18.0.0/15 benchmarking
        case 224...239: return .multicast
        case 240...255: return .reserved  // includes 255.255.255.255
        default: return .global
        }
    }

    private static func kind(ipv6 b: [UInt8]) -> Kind {
        let zeroPrefix = b[0..<10].allSatisfy { $0 == 0 }
        if zeroPrefix && b[10] == 0 && b[11] == 0 {
            if b[12..<15].allSatisfy({ $0 == 0 }) {
                if b[15] == 0 { return .unspecified }
                if b[15] == 1 { return .loopback }
            }
            return kind(ipv4: b[12..<16])  // ::a.b.c.d (IPv4-compatible, deprecated)
        }
        if zeroPrefix && b[10] == 0xFF && b[11] == 0xFF { return kind(ipv4: b[12..<16]) }  // ::ffff:a.b.c.d
        if b[0] == 0x00, b[1] == 0x64, b[2] == 0xFF, b[3] == 0x9B, b[4..<12].allSatisfy({ $0 == 0 }) {
            return kind(ipv4: b[12..<16])  // 64:ff9b::/96 NAT64
        }
        if b[0] == 0x20, b[1] == 0x02 { return kind(ipv4: b[2..<6]) }  // 2002::/16 6to4
        if b[0] == 0xFF { return .multicast }
        if b[0] & 0xFE == 0xFC { return .uniqueLocal }  // fc00::/7
        if b[0] == 0xFE, b[1] & 0xC0 == 0x80 { return .linkLocal }  // fe80::/10
        if b[0] == 0xFE, b[1] & 0xC0 == 0xC0 { return .uniqueLocal }  // fec0::/10, deprecated site-local
        if b[0] == 0x01, b[1...7].allSatisfy({ $0 == 0 }) { return .reserved }  // 100::/64 discard
        return .global
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

extension UInt8 {
    fileprivate var isASCIIAlphanumeric: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
