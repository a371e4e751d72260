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
        // The proxy's own check of its caller: a page from an allowed Origin, or a caller with a valid key.
        let headers = request.facts.headers
        if !proxy.allows(origin: headers.first(name: "origin")) {
            guard let authorization = request.facts.authorization,
                authenticator.authenticate(authorization: authorization) != nil
            else {
                return request.error(
                    .unauthorized("The proxy admits pages from its allowed origins, or a caller with a key")
                )
            }
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
        if case .proxy = route { return request.error(.badRequest("A proxy target cannot be the proxy")) }
        var facts = request.facts
        facts.uri = target.uri
        facts.authorization = "Key \(proxy.key)"
        var forwarded = HTTPHeaders()
        for (name, value) in headers
        where name.lowercased().hasPrefix("x-fal-") && name.lowercased() != "x-fal-target-url" {
            forwarded.add(name: name, value: value)
        }
        if let type = headers.first(name: "content-type") { forwarded.add(name: "content-type", value: type) }
        forwarded.add(name: "authorization", value: "Key \(proxy.key)")
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

extension Route {
    /// The endpoint a submission names (submit, run, stream), for the proxy's allow-list.
    var submittedEndpoint: EndpointID? {
        switch self {
        case .submit(let endpoint), .run(let endpoint), .stream(let endpoint): endpoint
        default: nil
        }
    }
}
