/// The status line and headers of a response, surfaced when `ResponseParser.Options.emitHead` is set.
public struct ResponseHead: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]

    public func first(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name }?.value
    }
}

/// What the load loop keeps of one response.
public struct ResponseSummary: Sendable, Equatable {
    public var status = 0
    public var keepAlive = true
    /// Bytes of head and body as they came over the connection (after TLS), framing included.
    public var bytes = 0
    public var watchedValue: String?
}
