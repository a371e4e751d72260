public import RelayCore
public import RelayJobs

/// Where `?fal_webhook=URL` submissions go: checked at submit, called once the request ends (PROTOCOL.md §9.5).
public protocol WebhookSink: Sendable {
    /// nil when `url` may be a webhook target; otherwise the 422 to answer before any work starts.
    func validate(url: String) -> FalError?
    /// Calls `url` (already validated) with the request's outcome once it ends.
    func register(request: RelayRequest, url: String)
    /// The JWKS of the key webhooks are signed with (`/.well-known/jwks.json`); nil when none are sent.
    var jwks: JSONValue? { get }
}

/// The sink of a relay without webhook delivery: every `fal_webhook` is refused, so none is silently lost.
public struct WebhooksDisabled: WebhookSink {
    public init() {}

    public func validate(url: String) -> FalError? {
        .validation(
            FalError.ValidationIssue(
                location: ["query", "fal_webhook"],
                message: "webhooks are not enabled on this relay",
                type: "value_error"
            )
        )
    }

    public func register(request: RelayRequest, url: String) {}

    public var jwks: JSONValue? { nil }
}
