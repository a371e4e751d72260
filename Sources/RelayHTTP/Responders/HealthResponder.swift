import NIOCore
import RelayCore

/// Probes and metrics: `/healthz` (the process answers), `/readyz` (start-up done, not draining), `/metrics`.
extension RelayServices {
    func respondHealth(_ request: RouteRequest) -> RouteAnswer {
        switch request.route {
        case .health:
            return .response(answerHealth(request.facts))
        case .ready:
            guard readiness.isReady else {
                return request.error(.unavailable("starting or draining", type: "not_ready"))
            }
            guard let fleet else { return request.json(["status": "ready"]) }
            // A node whose database is away still serves what it holds: it stays ready and says so.
            return request.json(["status": "ready", "cluster": fleet.isAvailable ? "ok" : "unavailable"])
        default:
            let text = metricsText?() ?? []
            return .response(
                PreparedResponse(
                    status: .ok,
                    headers: [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    body: ByteBuffer(bytes: text),
                    isHead: request.isHead
                )
            )
        }
    }

    /// `GET /healthz`, built once.
    func answerHealth(_ facts: RequestFacts) -> PreparedResponse {
        PreparedResponse(status: .ok, json: Self.healthBody, requestID: nil, isHead: facts.isHead)
    }

    private static let healthBody = ByteBuffer(string: #"{"status":"ok"}"#)
}
