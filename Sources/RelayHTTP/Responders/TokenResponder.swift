import RelayCore

/// fal's `POST /tokens/` (PROTOCOL.md §6): a short-lived token for clients that cannot send a key header.
extension RelayServices {
    func respondTokens(_ request: RouteRequest) -> RouteAnswer {
        let body = request.jsonObject
        let apps = body?["allowed_apps"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let seconds = body?["token_expiration"]?.intValue ?? 120
        guard let token = authenticator.issueToken(for: request.principal, apps: apps, seconds: seconds) else {
            return request.error(.unauthorized("Tokens need an API key"))
        }
        return request.json(.string(token))
    }
}
