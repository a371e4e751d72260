import NIOCore
import RelayCore

/// The browser UI (`/`, `/dashboard`, `/ui/<name>`), the playground's catalog, the dashboard's statistics, and the
/// webhook signing key as a JWKS.
extension RelayServices {
    func respondSite(_ request: RouteRequest) -> RouteAnswer {
        switch request.route {
        case .ui(let name):
            return asset(request, name: name)
        case .catalog:
            return request.json(catalogJSON, extraHeaders: [("cache-control", "no-cache")])
        case .jwks:
            guard let jwks = webhooks.jwks else { return request.error(.notFound("Webhooks are not enabled")) }
            // Receivers cache it (fal's guidance: up to a day); the key changes only with the deployment secret.
            return request.json(jwks, extraHeaders: [("cache-control", "public, max-age=3600")])
        case .stats(stream: false):
            return request.json(jobs.statistics.snapshot(), extraHeaders: [("cache-control", "no-store")])
        default:
            return .statisticsStream
        }
    }

    /// From memory, `ETag` + `If-None-Match` → 304, revalidated on every use (`no-cache`) so a new relay version is
    /// picked up at once.
    private func asset(_ request: RouteRequest, name: String) -> RouteAnswer {
        guard let asset = site?[name] else { return request.error(.notFound("No such page")) }
        var headers = [("etag", asset.etag), ("cache-control", "no-cache"), ("x-content-type-options", "nosniff")]
        if request.facts.headers["if-none-match"].contains(where: {
            $0.split(separator: ",").contains { $0.trimmingSpaces == asset.etag || $0.trimmingSpaces == "*" }
        }) {
            return .response(PreparedResponse(status: .notModified, headers: headers, isHead: request.isHead))
        }
        headers.append(("content-type", asset.contentType))
        if name.hasSuffix(".html") {
            // The UI talks only to this relay; no inline script, no framing by others.
            headers.append(
                (
                    "content-security-policy",
                    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
                )
            )
        }
        return .response(
            PreparedResponse(
                status: .ok,
                headers: headers,
                body: ByteBuffer(bytes: asset.bytes),
                isHead: request.isHead
            )
        )
    }

    /// The catalog as the playground shows it: id, title, kind, required fields and defaults (the form).
    private var catalogJSON: JSONValue {
        let models: [JSONValue] = catalog.models.map { model in
            .object([
                "id": .string(model.id),
                "title": .string(model.title),
                "kind": .string(model.kind.rawValue),
                "required": .array(model.required.map(JSONValue.string)),
                "defaults": .object(model.defaults),
                "dedup": .string(model.dedup.rawValue),
                "realtime": .bool(model.realtime),
            ])
        }
        return .object(["models": .array(models)])
    }
}
