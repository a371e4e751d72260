import NIOCore
import NIOHTTP1
import RelayCore

/// `/api/fal/proxy`: fal's server-proxy contract (`ServerProxy`). The target is answered by its own route's
/// responder on this relay, admitted as the proxy's key (its tier and budget), with only the caller's `x-fal-*`
/// headers and its body: what the browser sent in other headers, its cookies above all, goes no further.
extension RelayServices {
    func respondProxy(_ request: RouteRequest) -> RouteAnswer {
        guard let proxy = serverProxy else {
            return request.error(.notFound("The server proxy is not enabled on this relay (proxy_key)"))
        }
        // The proxy's own check of its caller: a caller with a valid key of its own is served as that key (its tier,
        // its requests); a page from an allowed origin as the proxy's key. A browser sends `Origin` with a POST but
        // not always with a same-origin GET (a status poll): then its `Referer` names the page.
        let headers = request.facts.headers
        let authorization: String
        if let own = request.facts.authorization, authenticator.authenticate(authorization: own) != nil {
            authorization = own
        } else if proxy.allows(
            origin: headers.first(name: "origin") ?? Self.origin(ofReferer: headers.first(name: "referer"))
        ) {
            authorization = "Key \(proxy.key)"
        } else {
            return request.error(
                .unauthorized("The proxy admits pages from its allowed origins, or a caller with a key")
            )
        }
        let target: ServerProxy.Target
        switch ServerProxy.target(headers.first(name: "x-fal-target-url")) {
        case .success(let found): target = found
        case .failure(let error): return request.error(error)
        }
        let route = router.route(method: request.facts.method, uri: target.uri, runHost: target.host == .run)
        if request.facts.method == .POST, let endpoint = route.submittedEndpoint, !proxy.allows(endpoint: endpoint) {
            return request.error(.badRequest("The proxy does not serve \(endpoint)", type: "endpoint_not_allowed"))
        }
        // fal's APIs only: the queue, run and storage routes; never the relay's own admin, peer or site routes.
        guard route.isFalAPI else {
            return request.error(
                .badRequest("The proxy serves fal's queue, run and storage APIs only", type: "invalid_target_url")
            )
        }
        var facts = request.facts
        facts.uri = target.uri
        facts.authorization = authorization
        var forwarded = HTTPHeaders()
        for (name, value) in headers
        where name.lowercased().hasPrefix("x-fal-") && name.lowercased() != "x-fal-target-url" {
            forwarded.add(name: name, value: value)
        }
        if let type = headers.first(name: "content-type") { forwarded.add(name: "content-type", value: type) }
        forwarded.add(name: "authorization", value: authorization)
        forwarded.add(name: "x-fal-client-proxy", value: "media-relay")
        facts.headers = forwarded
        switch admit(facts, route: route) {
        case .refused(let error, let limitHeaders):
            return request.error(error, extraHeaders: limitHeaders)
        case .admitted(let principal, let limitHeaders):
            var inner = RouteRequest(
                facts: facts,
                route: route,
                principal: principal,
                rateLimitHeaders: limitHeaders,
                eventLoop: request.eventLoop
            )
            inner.body = request.body
            return respond(inner)
        }
    }
}

extension RelayServices {
    /// `scheme://authority` of a `Referer` URL.
    static func origin(ofReferer referer: String?) -> String? {
        guard let referer, let range = referer.firstRange(of: "://") else { return nil }
        let authority = referer[range.upperBound...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        return authority.isEmpty ? nil : String(referer[..<range.upperBound] + authority)
    }
}

extension Route {
    /// A route of fal's own APIs, which the server proxy may reach.
    var isFalAPI: Bool {
        switch self {
        case .submit, .run, .stream, .status, .statusStream, .result, .cancel, .storageToken, .uploadInitiate,
            .multipartUpload:
            true
        default:
            false
        }
    }

    /// The endpoint a submission names (submit, run, stream), for the proxy's allow-list.
    var submittedEndpoint: EndpointID? {
        switch self {
        case .submit(let endpoint), .run(let endpoint), .stream(let endpoint): endpoint
        default: nil
        }
    }
}
