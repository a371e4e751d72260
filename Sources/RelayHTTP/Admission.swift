import NIOHTTP1
import RelayCore

/// The one step in front of every responder, whatever the transport (the HTTP/1.1 fast lane, NIO's HTTP/1.1
/// pipeline, HTTP/2 streams, WebSocket upgrades and the submissions sent over `/ws` and realtime): who is asking,
/// whether they may ask this route at all, and whether their budget allows it now.
enum Admission {
    case admitted(Principal, rateLimitHeaders: [(String, String)])
    /// The fal-shaped error to answer (401, 403 or 429) and the fields that go with it (`Retry-After`, RateLimit).
    case refused(FalError, headers: [(String, String)])

    /// The refusal as a response; nil when admitted.
    func refusal(isHead: Bool) -> PreparedResponse? {
        guard case .refused(let error, let headers) = self else { return nil }
        return PreparedResponse(error: error, requestID: nil, extraHeaders: headers, isHead: isHead)
    }
}

/// What a route asks of its caller before its responder runs.
enum CallerRule: Equatable {
    /// Probes, the site, the catalog and routing errors: no credentials read, nothing charged.
    case none
    /// Media URLs are capabilities: no key needed. A caller with a valid key pays from that key's budget (an app's
    /// server fetching its media); anyone else, a bad key included, from their address's.
    case optionalPayer
    /// Credentials are checked when present (401 when they are not valid); no credentials is the anonymous caller.
    case caller
    /// As `caller`, and anonymous callers are refused (401): uploads and the tokens that sign them.
    case key
    /// As `caller`, and only admin keys pass (401 anonymous, 403 any other key).
    case admin
    /// The signed URL of an initiated upload is its credential, checked where the body is taken.
    case signedURL

    init(_ route: Route) {
        switch route {
        case .health, .ready, .metrics, .notFound, .methodNotAllowed, .ui, .catalog, .jwks, .stats:
            self = .none
        case .peerFollow:
            // Peers present the fleet's token, checked by the responder: no API key, no budget.
            self = .none
        case .proxy:
            // The proxy checks its own callers (an allowed Origin, or a key); the request it makes for them is
            // admitted as its own key's, route and budget alike.
            self = .none
        case .file, .uploadAlias:
            self = .optionalPayer
        case .uploadPut:
            self = .signedURL
        case .v3Upload, .uploadInitiate, .storageToken, .multipartUpload(.initiate), .multipartUpload(.completeByURL):
            self = .key
        case .multipartUpload:
            // v3 steps carry a storage token or key (checked by the upload responder and `UploadExchange` as a v3
            // upload's); signed steps their URL.
            self = .signedURL
        case .admin:
            self = .admin
        case .tokens, .webSocket, .realtime, .submit, .status, .statusStream, .result, .cancel, .run, .stream:
            self = .caller
        case .platform(.models), .platform(.pricing):
            self = .caller
        case .platform:
            // The history, usage and payloads of the caller's own requests (an admin's: all): a key's alone, never
            // the anonymous caller's (whose request ids are their only secret) nor a browser token's.
            self = .key
        }
    }
}

extension RelayServices {
    /// Authenticates the caller as `route` asks and charges the route's budget: every transport calls this once per
    /// request, before the route's responder.
    func admit(_ facts: RequestFacts, route: Route) -> Admission {
        let admission = decideAdmission(facts, route: route)
        // fal's Platform API words its refusals as its other answers.
        guard route.isPlatform, case .refused(let error, let headers) = admission else { return admission }
        return .refused(error.platformShaped, headers: headers)
    }

    private func decideAdmission(_ facts: RequestFacts, route: Route) -> Admission {
        let principal: Principal
        switch CallerRule(route) {
        case .none, .signedURL:
            return .admitted(.anonymous, rateLimitHeaders: [])
        case .optionalPayer:
            principal = (try? caller(facts, route: route).get()) ?? .anonymous
        case .caller, .key, .admin:
            switch caller(facts, route: route) {
            case .failure where route == .v3Upload: return .refused(.unauthorized(Self.keyNeeded(route)), headers: [])
            case .failure(let error): return .refused(error, headers: [])
            case .success(let found): principal = found
            }
        }
        switch CallerRule(route) {
        case .key where principal == .anonymous:
            return .refused(.unauthorized(Self.keyNeeded(route)), headers: [])
        case .admin where !principal.isAdmin:
            let message = "The admin API needs an admin key"
            return .refused(principal == .anonymous ? .unauthorized(message) : .forbidden(message), headers: [])
        default:
            return charge(facts, route: route, principal: principal)
        }
    }

    /// Charges the route's budget for `principal` (429 with `Retry-After` and RateLimit headers when spent). Used by
    /// `admit`, by a repeated answer whose caller is already known, and by each submission inside a WebSocket.
    func charge(_ facts: RequestFacts, route: Route, principal: Principal) -> Admission {
        charge(facts, budget: RateLimitPolicy.Budget(route: route), principal: principal, requestID: route.requestID)
    }

    /// Charges one request to `budget` (nil: not limited) for `principal`.
    func charge(
        _ facts: RequestFacts,
        budget: RateLimitPolicy.Budget?,
        principal: Principal,
        requestID: String? = nil
    ) -> Admission {
        guard let rateLimiter, let budget,
            rateLimiter.policy.limit(for: RateLimitPolicy.Tier(principal), budget: budget) != nil
        else { return .admitted(principal, rateLimitHeaders: []) }
        // Keyed callers are counted by key: the address (formatted per call) is only needed for anonymous ones.
        let decision = rateLimiter.check(
            principal: principal,
            clientIP: principal.keyID == nil ? facts.clientIP : "",
            budget: budget,
            requestID: requestID
        )
        guard let rejection = decision.rejection else {
            return .admitted(principal, rateLimitHeaders: decision.headers)
        }
        return .refused(.rateLimited(rejection.detail), headers: rejection.headers)
    }

    /// A watcher's place for the caller (an SSE status stream, a WebSocket), or the 429 when its tier's places are all
    /// taken; no lease at all when rate limits are off. `take: false` only asks whether a place is free.
    func watcherPlace(_ facts: RequestFacts, principal: Principal, take: Bool = true) -> Result<WatcherLease?, FalError>
    {
        guard let rateLimiter else { return .success(nil) }
        let tier = RateLimitPolicy.Tier(principal)
        if take, let lease = rateLimiter.acquireWatcher(principal: principal, clientIP: facts.clientIP) {
            return .success(lease)
        }
        if !take, rateLimiter.hasWatcherPlace(principal: principal, clientIP: facts.clientIP) {
            return .success(nil)
        }
        let cap = rateLimiter.policy.maxWatchers(for: tier) ?? 0
        return .failure(
            .rateLimited(
                "Rate limit exceeded: \(cap) open watchers (status streams and sockets) for \(tier.rawValue) callers"
            )
        )
    }

    /// A read of a request id that does not exist (or is not the caller's): charged to the caller's own `read`
    /// budget, so that guessing ids costs what any read costs. 429 once that is spent, else the 404.
    func unknownRequest(_ facts: RequestFacts, principal: Principal, id: String) -> PreparedResponse {
        if case .refused(let error, let headers) = charge(facts, budget: .reads, principal: principal) {
            return PreparedResponse(error: error, requestID: id, extraHeaders: headers, isHead: facts.isHead)
        }
        return PreparedResponse(error: .notFound("Request \(id) not found"), requestID: id, isHead: facts.isHead)
    }

    /// The caller a request's credentials name: the `Authorization` field (`Key id:secret`, or `Bearer <token>` for
    /// uploads), else a `fal_jwt_token` query parameter, which browsers send where they cannot set headers
    /// (WebSockets) and fal-js in client mode sends on plain HTTP too (status streams, `stream`). No credentials at
    /// all is the anonymous caller.
    func caller(_ facts: RequestFacts, route: Route) -> Result<Principal, FalError> {
        if let authorization = facts.authorization {
            if case .v3Upload = route, let token = Self.bearerToken(authorization),
                let principal = authenticator.authenticate(token: token, app: UploadService.storageScope)
            {
                return .success(principal)
            }
            guard let principal = authenticator.authenticate(authorization: authorization) else {
                return .failure(.unauthorized())
            }
            return .success(principal)
        }
        // A token is scoped to apps: it never stands for its key on the Platform API.
        guard facts.uri.utf8.contains(UInt8(ascii: "?")), !route.isPlatform,
            let token = QueryParameters(uri: facts.uri)["fal_jwt_token"]
        else {
            return .success(.anonymous)
        }
        guard let principal = authenticator.authenticate(token: token, app: route.endpoint?.alias) else {
            return .failure(.unauthorized("Invalid or expired token"))
        }
        return .success(principal)
    }

    private static func bearerToken(_ authorization: String) -> String? {
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1])
    }

    private static func keyNeeded(_ route: Route) -> String {
        switch route {
        case .v3Upload: "Uploads need an API key or a storage token"
        case .platform: "The request history and usage need an API key"
        case .storageToken: "Storage tokens need an API key"
        default: "Uploads need an API key"
        }
    }
}

extension Route {
    /// The request a route reads (status, status stream, result, cancel).
    var requestID: String? {
        switch self {
        case .status(_, let id), .statusStream(_, let id), .result(_, let id), .cancel(_, let id): id
        default: nil
        }
    }

    /// The model a route addresses, whose alias a scoped token must allow.
    var endpoint: EndpointID? {
        switch self {
        case .realtime(let id), .submit(let id), .run(let id), .stream(let id): id
        case .status(let app, _), .statusStream(let app, _), .result(let app, _), .cancel(let app, _): app
        default: nil
        }
    }
}
