/// A response the parser could not frame.
public struct ResponseParseError: Error, Sendable, Equatable, CustomStringConvertible {
    enum Code: Sendable, Equatable {
        case badHead
        case headTooLarge
        case badChunkSize
        case truncated
    }

    let code: Code

    init(_ code: Code) { self.code = code }

    public static let badHead = ResponseParseError(.badHead)
    public static let headTooLarge = ResponseParseError(.headTooLarge)
    public static let badChunkSize = ResponseParseError(.badChunkSize)
    public static let truncated = ResponseParseError(.truncated)

    public var description: String {
        switch code {
        case .badHead: "malformed response head"
        case .headTooLarge: "response head over 64 KiB"
        case .badChunkSize: "malformed chunk framing"
        case .truncated: "connection closed mid-response"
        }
    }
}
