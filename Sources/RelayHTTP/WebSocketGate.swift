import NIOCore
import NIOHTTP1
public import RelayCore

/// What a WebSocket connection is for, decided before the upgrade (and again by the HTTP handler when a request
/// to a WebSocket route arrives without a usable upgrade, to answer with the right error).
public enum WebSocketTarget: Sendable, Hashable {
    /// `/ws`: watch and submit requests, JSON text messages.
    case watch(Principal)
    /// `/{app}/realtime`: fal realtime, one msgpack message in → one result out, for `model`.
    case realtime(Principal, ModelSpec)

    var principal: Principal {
        switch self {
        case .watch(let principal), .realtime(let principal, _): principal
        }
    }
}

/// Admission for WebSocket upgrades: the same admission as every request (credentials from the header, or
/// `fal_jwt_token` because browsers cannot set headers on a WebSocket; opening a socket is a read), then whether the
/// route and model speak WebSocket at all.
enum WebSocketGate {
    /// Admits the upgrade request (charging its budget once, and taking one of the caller's watcher places) and says
    /// what the socket is for.
    static func admit(
        _ head: HTTPRequestHead,
        channel: any Channel,
        scheme: String,
        services: RelayServices
    ) -> Result<(WebSocketTarget, WatcherLease?), FalError> {
        let host = head.headers.first(name: "host")
        let route = services.router.route(method: head.method, host: host, uri: head.uri)
        let facts = RequestFacts(
            method: head.method,
            uri: head.uri,
            host: host,
            authorization: head.headers.first(name: "authorization"),
            scheme: scheme,
            channel: channel
        )
        let principal: Principal
        switch services.admit(facts, route: route) {
        case .refused(let error, _): return .failure(error)
        case .admitted(let admitted, _): principal = admitted
        }
        let target: WebSocketTarget
        switch Self.target(of: route, uri: head.uri, services: services, admitted: principal) {
        case .failure(let error): return .failure(error)
        case .success(let found): target = found
        }
        return services.watcherPlace(facts, principal: principal).map { (target, $0) }
    }

    /// What an admitted caller's socket on `route` is for: 404 for a route or model without a WebSocket endpoint.
    static func target(
        of route: Route,
        uri: String,
        services: RelayServices,
        admitted principal: Principal
    ) -> Result<WebSocketTarget, FalError> {
        switch route {
        case .webSocket:
            return .success(.watch(principal))
        case .realtime(let endpoint):
            guard let model = services.catalog.model(endpoint.description), model.realtime else {
                return .failure(.notFound("Model \(endpoint.description) has no realtime endpoint"))
            }
            return .success(.realtime(principal, model))
        default:
            return .failure(.notFound("No WebSocket endpoint at \(uri)"))
        }
    }
}
