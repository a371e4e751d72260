import NIOCore
import NIOHTTP1
import RelayCore
import RelayJobs
import RelayStore

/// A request as a responder sees it: its facts, its route, the caller admission let through, and its body.
struct RouteRequest {
    var facts: RequestFacts
    var route: Route
    var principal: Principal
    /// RateLimit fields from admission, for responses that report the caller's budget (submissions).
    var rateLimitHeaders: [(String, String)] = []
    /// The whole body (requests with small JSON bodies); empty for the others.
    var body = ByteBuffer()
    /// The connection's loop: answers that complete later complete there.
    var eventLoop: any EventLoop
    /// What lies beneath this node's memory was asked already: the fleet's registry about this request's id (an id
    /// still unknown is a 404), or the result tiers about this submission's key.
    var tiersAsked = false
    /// Another node of the fleet runs this submission's key now: new work here follows that node's job (labelled
    /// coalesced, as it costs no generation of its own).
    var sharesFleetWork = false
    /// The submission's request, registered in the fleet with its key's lookup: submitted under this id and age.
    var registered: FleetRequest?
    /// The status stream waited for this node's log to reach the client's resume point already.
    var logAwaited = false

    /// This request, marked as asked beneath memory already.
    var withTiersAsked: RouteRequest {
        var asked = self
        asked.tiersAsked = true
        return asked
    }

    var isHead: Bool { facts.isHead }

    /// A small JSON body as an object: `{}` when there is none, nil when it is not a JSON object.
    var jsonObject: JSONObject? { Self.jsonObject(body) }

    static func jsonObject(_ body: ByteBuffer) -> JSONObject? {
        guard body.readableBytes > 0 else { return [:] }
        return (try? body.withUnsafeReadableBytes { bytes throws(JSONError) in try JSONValue(parsing: bytes) })?
            .objectValue
    }

    /// A fal-shaped error for this request.
    func error(_ error: FalError, requestID: String? = nil, extraHeaders: [(String, String)] = []) -> RouteAnswer {
        .response(PreparedResponse(error: error, requestID: requestID, extraHeaders: extraHeaders, isHead: isHead))
    }

    /// A JSON answer for this request.
    func json(
        _ value: JSONValue,
        status: HTTPResponseStatus = .ok,
        requestID: String? = nil,
        extraHeaders: [(String, String)] = []
    ) -> RouteAnswer {
        .response(
            PreparedResponse(
                status: status,
                json: value,
                requestID: requestID,
                extraHeaders: extraHeaders,
                isHead: isHead
            )
        )
    }
}

/// What a responder decided: a response, or an instruction the transport carries out. Transports (the fast lane,
/// NIO's HTTP/1.1 pipeline, HTTP/2 streams) only encode these; no route is decided anywhere else.
indirect enum RouteAnswer {
    /// A complete response.
    case response(PreparedResponse)
    /// A response that is known later (an admin purge that runs on the store).
    case pending(EventLoopFuture<PreparedResponse>)
    /// `then`, once the request's record is durable: an id must not go out before a crash can no longer lose it.
    case afterRecorded(RelayRequest, then: RouteAnswer)
    /// Follow a job's events to the client (an SSE status stream, the run host's `/stream`, a synchronous run).
    case follow(JobFollow)
    /// Send a stored media file (looked up, planned and read by the transport through `MediaResponder`).
    case file(MediaFileRequest)
    /// The dashboard's statistics feed: a snapshot over SSE every second.
    case statisticsStream
    /// An answer decided once something asynchronous is known (the fleet's registry, a peer's copy of a blob). The
    /// future is made on the request's loop (`RouteRequest.eventLoop`) and completes there.
    case later(EventLoopFuture<RouteAnswer>)
}

/// How a job is followed, and where from.
struct JobFollow {
    enum Kind {
        /// `…/requests/{id}/status/stream`: fal status objects with `id:` lines, from the stream's resume point on.
        case statusStream(StatusStream)
        /// The run host's `POST /{model}/stream`: partial outputs, then the result; no ids (PROTOCOL.md §5.3).
        case partialStream
        /// The run host's `POST /{model}`: the result (or error) as one response when the job ends.
        case run
        /// `POST /_cluster/v1/follow`: the job's events for a peer node, one JSON object each with its sequence
        /// number, from the peer's resume point on (`JobEvent.peerJSON`).
        /// `detachOnLeave`: the request was made for the peer (following a key), and goes when the peer leaves.
        case peerEvents(after: Int, detachOnLeave: Bool)
    }

    var request: RelayRequest
    var kind: Kind
}

/// A media file a client asked for: which blob, served as which media type.
struct MediaFileRequest {
    var digest: Digest128
    var mediaType: MediaType
}
