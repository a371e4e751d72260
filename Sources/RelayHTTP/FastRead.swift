import NIOCore
import NIOHTTP1
import RelayCore

/// What a fast lane (HTTP/1.1 bytes, HTTP/2 frames) answers itself: the hottest reads, health and the status or result
/// of a request this node holds, admitted and answered as the responders would (`answerRead`), with no trip through
/// NIO's per-request handlers.
struct FastRead {
    var response: PreparedResponse
    /// The caller's key, for the access log.
    var keyID: String?
    /// Set when the answer can no longer change (a finished request's): the lane may send the same bytes again while
    /// the key table and the request table are unchanged since these versions.
    var settledBy: (principal: Principal, keyTableVersion: UInt64, removals: UInt64)?
}

extension RelayServices {
    /// The fast lanes' answer to `route`, or nil when it is not theirs to give (another route, or in a fleet a request
    /// this node does not hold, or a result this node's copy of the job has not heard of yet, which another node may
    /// already have told the client: both are asked on the responders' path, which asks the fleet).
    func fastRead(_ facts: RequestFacts, route: Route) -> FastRead? {
        switch route {
        case .health:
            return FastRead(response: answerHealth(facts))
        case .status(_, let id), .result(_, let id):
            if fleet != nil {
                // A result needs the job ended here; a status, only the request held.
                let answerable: Bool
                if case .result = route { answerable = jobs.holdsEnded(id) } else { answerable = jobs.holds(id) }
                if !answerable { return nil }
            }
            // Read before the lookup, so that a removal or key change during it shows as a change later.
            let (keyTableVersion, removals) = (authenticator.keyTableVersion(), jobs.removals)
            switch admit(facts, route: route) {
            case .refused(let error, let headers):
                return FastRead(
                    response: PreparedResponse(
                        error: error,
                        requestID: nil,
                        extraHeaders: headers,
                        isHead: facts.isHead
                    )
                )
            case .admitted(let principal, _):
                let read = answerRead(facts, route: route, principal: principal)
                var answer = FastRead(response: read.response, keyID: read.keyID)
                if read.settled, let keyTableVersion { answer.settledBy = (principal, keyTableVersion, removals) }
                return answer
            }
        default:
            return nil
        }
    }
}

/// An answer that can no longer change (a finished request's status or result), kept by a fast lane to send again to
/// the same request on its connection, as long as nothing it depends on changed: no routing, lookup or header
/// building then, only the caller's rate budget charged. `Payload` is what the lane sends (HTTP/1.1 bytes, HTTP/2
/// fields and body).
struct SettledRead<Payload> {
    let method: HTTPMethod
    let uri: String
    let host: String?
    let authorization: String?
    let route: Route
    let principal: Principal
    let keyTableVersion: UInt64
    let removals: UInt64
    let payload: Payload
    let status: UInt
    let bodyLength: Int
    let requestID: String?
    let cache: String?

    /// nil when `read` may still change.
    init?(_ read: FastRead, facts: RequestFacts, route: Route, payload: Payload) {
        guard let (principal, keyTableVersion, removals) = read.settledBy else { return nil }
        (method, uri, host, authorization) = (facts.method, facts.uri, facts.host, facts.authorization)
        (self.route, self.principal, self.keyTableVersion, self.removals) = (
            route, principal, keyTableVersion, removals
        )
        self.payload = payload
        status = read.response.status.code
        bodyLength = read.response.body.readableBytes
        requestID = read.response.field("x-fal-request-id")
        cache = read.response.field("x-relay-cache")
    }

    /// The same request: everything a read's answer depends on (the scheme is the connection's).
    func answers(method: HTTPMethod, uri: String, host: String?, authorization: String?) -> Bool {
        uri == self.uri && authorization == self.authorization && method == self.method && host == self.host
    }

    /// Nothing it depends on changed: no request removed or payload deleted, no key created, revoked or changed.
    func stands(in services: RelayServices) -> Bool {
        services.jobs.removals == removals && services.authenticator.keyTableVersion() == keyTableVersion
    }
}
