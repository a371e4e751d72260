import NIOCore
import RelayCore

/// Where each route is answered: one responder per route family. Every transport calls `respond` after `admit`,
/// and carries out what it returns; none of them decides an answer itself.
///
/// | routes | responder |
/// | --- | --- |
/// | health, ready, metrics | `respondHealth` (HealthResponder.swift) |
/// | submit, run, stream, status, result, cancel, status stream | `respondQueue` (QueueResponder.swift) |
/// | files, upload aliases | `respondMedia` (MediaResponder.swift) |
/// | storage token, upload initiate, multipart | `respondUpload` (UploadResponder.swift); bodies: `UploadExchange` |
/// | tokens | `respondTokens` (TokenResponder.swift) |
/// | admin | `respondAdmin` (AdminResponder.swift) |
/// | `/_cluster/v1/follow` (peers) | `respondPeer` (PeerResponder.swift) |
/// | `/api/fal/proxy` | `respondProxy` (ProxyResponder.swift): the target's route, answered by its responder |
/// | ui, catalog, stats, `/.well-known/jwks.json` | `respondSite` (SiteResponder.swift) |
/// | `/v1/models…` (Platform API) | `respondPlatform` (PlatformResponder.swift) |
/// | ws, realtime | `WebSocketGate` at the upgrade; a plain request is told why it was not upgraded here |
extension RelayServices {
    func respond(_ request: RouteRequest) -> RouteAnswer {
        switch request.route {
        case .health, .ready, .metrics:
            return respondHealth(request)
        case .submit, .run, .stream, .status, .result, .cancel, .statusStream:
            return respondQueue(request)
        case .file, .uploadAlias:
            return respondMedia(request)
        case .storageToken, .uploadInitiate, .uploadPut, .v3Upload, .multipartUpload:
            return respondUpload(request)
        case .tokens:
            return respondTokens(request)
        case .admin(let action):
            return respondAdmin(request, action: action)
        case .peerFollow:
            return respondPeer(request)
        case .proxy:
            return respondProxy(request)
        case .ui, .catalog, .jwks, .stats:
            return respondSite(request)
        case .platform(let action):
            return respondPlatform(request, action: action)
        case .webSocket, .realtime:
            // Only requests the upgrader declined get here: say why.
            if case .failure(let error) = watcherPlace(request.facts, principal: request.principal, take: false) {
                return request.error(error, extraHeaders: [("retry-after", "1")])
            }
            switch WebSocketGate.target(
                of: request.route,
                uri: request.facts.uri,
                services: self,
                admitted: request.principal
            ) {
            case .failure(let error): return request.error(error)
            case .success: return request.error(.upgradeRequired())
            }
        case .notFound:
            return request.error(.notFound("No route for \(request.facts.method.rawValue) \(request.facts.path)"))
        case .methodNotAllowed:
            return request.error(.methodNotAllowed(request.facts.method.rawValue))
        }
    }
}
