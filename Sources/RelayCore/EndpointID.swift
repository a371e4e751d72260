/// A fal endpoint id, `{namespace/}owner/alias{/path}` (PROTOCOL.md §1.2).
///
/// The *app* (`{namespace/}owner/alias`) addresses status, result and cancel; the full id addresses submit and run.
public struct EndpointID: Sendable, Hashable, CustomStringConvertible {
    /// Namespaces that prefix an owner (PROTOCOL.md §1.2).
    public static let namespaces: Set<Substring> = ["workflows", "comfy"]

    public let namespace: String?
    public let owner: String
    public let alias: String
    public let path: [String]
    /// `{namespace/}owner/alias`: what status, result and cancel URLs are built on (compared on every read).
    public let app: String

    /// Parses an id like `fal-ai/flux/dev`; nil when it has fewer than two segments or an empty or dot segment.
    public init?(_ text: String) {
        self.init(segments: text.split(separator: "/", omittingEmptySubsequences: false))
    }

    /// From URL path segments (already split, not percent-decoded: ids are plain ASCII). Inlinable so that the
    /// router's `[Substring]` call is specialised instead of going through generic witness tables per character.
    @inlinable
    public init?<S: StringProtocol>(segments: [S]) {
        var rest = segments[...]
        var namespace: String?
        if let first = rest.first, Self.namespaces.contains(Substring(first)) {
            namespace = String(first)
            rest = rest.dropFirst()
        }
        guard rest.count >= 2 else { return nil }
        for segment in rest where !Self.isValidSegment(segment) {
            return nil
        }
        self.namespace = namespace
        self.owner = String(rest[rest.startIndex])
        self.alias = String(rest[rest.startIndex + 1])
        self.path = rest.dropFirst(2).map { String($0) }
        self.app = (namespace.map { "\($0)/" } ?? "") + owner + "/" + alias
    }

    /// The whole id.
    public var description: String {
        ([app] + path).joined(separator: "/")
    }

    /// Letters, digits and `-_.~` only, and not `.`/`..`: keeps ids safe to echo and to use in URLs.
    /// Inlinable, so that callers in other modules get it specialised (this runs for every routed request).
    @inlinable
    static func isValidSegment<S: StringProtocol>(_ segment: S) -> Bool {
        guard !segment.isEmpty, segment != ".", segment != "..", segment.utf8.count <= 128 else { return false }
        return segment.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                true
            default:
                false
            }
        }
    }
}
