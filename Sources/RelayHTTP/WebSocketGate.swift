import NIOHTTP1
public import RelayCore

/// What a WebSocket connection is for, decided before the upgrade (and again by the HTTP handler when a request
/// to a WebSocket route arrives without a usable upgrade, to answer with the right error).
public enum WebSocketTarget: Sendable, Hashable {
    /// `/ws`: watch and submit requests, JSON text messages.
    case watch(Principal)
    /// `/{app}/realtime`: fal realtime, one msgpack message in → one result out, for `model`.
    case realtime(Principal, ModelSpec)
}

/// Admission for WebSocket upgrades: route, credentials (header, or `fal_jwt_token` because browsers cannot set
/// headers on a WebSocket), and whether the model speaks realtime.
enum WebSocketGate {
    static func target(for head: HTTPRequestHead, services: RelayServices) -> Result<WebSocketTarget, FalError> {
        let route = services.router.route(method: head.method, host: head.headers.first(name: "host"), uri: head.uri)
        let endpoint: EndpointID?
        switch route {
        case .webSocket: endpoint = nil
        case .realtime(let id): endpoint = id
        default: return .failure(.notFound("No WebSocket endpoint at \(head.uri)"))
        }
        let principal: Principal
        if let header = head.headers.first(name: "authorization") {
            guard let found = services.authenticator.authenticate(authorization: header) else {
                return .failure(.unauthorized())
            }
            principal = found
        } else if let token = QueryParameters(uri: head.uri)["fal_jwt_token"] {
            guard let found = services.authenticator.authenticate(token: token, app: endpoint?.alias) else {
                return .failure(.unauthorized("Invalid or expired token"))
            }
            principal = found
        } else {
            principal = .anonymous
        }
        guard let endpoint else { return .success(.watch(principal)) }
        guard let model = services.catalog.model(endpoint.description), model.realtime else {
            return .failure(.notFound("Model \(endpoint.description) has no realtime endpoint"))
        }
        return .success(.realtime(principal, model))
    }
}
