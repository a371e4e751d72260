import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import RelayCore
import Synchronization

/// One access line per request and the per-route HTTP metrics, taken where every response passes: between the
/// HTTP codec and `RelayHTTPHandler`, which tells it the route and the caller's key id (never the key).
///
/// Line (logfmt by default, JSON with `--log-format json`, via swift-log's metadata):
/// `msg=request method=GET path=/fal-ai/flux/requests/…/status status=200 bytes=312 duration_ms=0.41
///  request_id=… key_id=k_… route=status cache=hit proto=http/1.1`
final class AccessLogHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let sink: AccessLogSink
    private var pending: AccessEntry?

    init(logger: Logger?, metrics: HTTPMetrics, proto: String) {
        self.sink = AccessLogSink(logger: logger, metrics: metrics, proto: proto)
    }

    /// Set by the HTTP handler once it has routed the request.
    func annotate(route: String, keyID: String?) {
        pending?.route = route
        if let keyID { pending?.keyID = keyID }
    }

    /// Set once the caller is authenticated.
    func annotate(keyID: String) {
        pending?.keyID = keyID
    }

    /// The request being answered, taken over by whoever writes the rest of its response below this handler (a bare
    /// SSE stream, `StatusStreamHandler`): it records the line when that response ends.
    func takeOver(status: UInt, requestID: String?, cache: String?) -> AccessEntry? {
        guard var entry = pending else { return nil }
        pending = nil
        entry.status = status
        entry.requestID = requestID
        entry.cache = cache
        return entry
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = Self.unwrapInboundIn(data) {
            pending = AccessEntry(head: head)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch Self.unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            pending?.status = head.status.code
            pending?.requestID = head.headers.first(name: "x-fal-request-id")
            pending?.cache = head.headers.first(name: "x-relay-cache")
            pending?.declaredLength = head.headers.first(name: "content-length").flatMap(Int.init)
        case .body(.byteBuffer(let buffer)):
            pending?.streamed += buffer.readableBytes
        case .body(.fileRegion(let region)):
            pending?.streamed += region.readableBytes
        case .end:
            if let done = pending {
                pending = nil
                sink.record(done)
            }
        default:
            break
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let done = pending, done.status != 0 {
            pending = nil
            sink.record(done, clientGone: true)
        }
        context.fireChannelInactive()
    }
}

/// One request's access line while its response is under way.
struct AccessEntry {
    var method: HTTPMethod
    var path: String
    var started: NIODeadline
    var route = "unmatched"
    var keyID: String?
    var status: UInt = 0
    var requestID: String?
    var cache: String?
    var declaredLength: Int?
    var streamed = 0
    /// The request's `X-Fal-Tags` as sent: its valid pairs are logged (parsed only when a line is written).
    var tags: String?

    var bytes: Int { declaredLength ?? streamed }

    init(method: HTTPMethod, path: String, started: NIODeadline) {
        self.method = method
        self.path = path
        self.started = started
    }

    init(head: HTTPRequestHead, started: NIODeadline = .now()) {
        self.method = head.method
        self.path =
            head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)
            ?? head.uri
        self.started = started
        self.tags = head.headers.first(name: PlatformHeaders.Name.tags)
    }
}

/// Where access lines and HTTP metrics go, for one protocol.
struct AccessLogSink: Sendable {
    let logger: Logger?
    let metrics: HTTPMetrics
    let proto: String

    /// The line and the metrics of a response that ended (`clientGone`: the client left before its end).
    func record(_ entry: AccessEntry, clientGone: Bool = false) {
        record(
            entry,
            instruments: metrics.instruments(route: entry.route, status: entry.status),
            clientGone: clientGone
        )
    }

    /// `record(_:clientGone:)` with the instruments of the entry's route and status at hand.
    func record(_ entry: AccessEntry, instruments: HTTPMetrics.Instruments, clientGone: Bool = false) {
        var entry = entry
        if clientGone { entry.cache = entry.cache ?? "client_gone" }
        let seconds = Double((NIODeadline.now() - entry.started).nanoseconds) / 1e9
        instruments.record(seconds: seconds)
        guard let logger else { return }
        var metadata: Logger.Metadata = [
            "method": .string(entry.method.rawValue),
            "path": .string(entry.path),
            "status": .stringConvertible(entry.status),
            "bytes": .stringConvertible(entry.bytes),
            "duration_ms": .string(String(format3: seconds * 1000)),
            "route": .string(entry.route),
            "proto": .string(proto),
        ]
        if let id = entry.requestID { metadata["request_id"] = .string(id) }
        if let key = entry.keyID { metadata["key_id"] = .string(key) }
        if let cache = entry.cache { metadata["cache"] = .string(cache) }
        if let sent = entry.tags {
            let tags = PlatformHeaders.tags(in: sent).map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            if !tags.isEmpty { metadata["tags"] = .string(tags) }
        }
        logger.info("request", metadata: metadata)
    }
}

/// `relay_http_requests_total{route,status}` and `relay_http_request_duration_seconds{route}`, with the
/// instruments made once per label set (the metrics factory's own lookup takes a lock and hashes the labels).
public final class HTTPMetrics: Sendable {
    /// The two instruments of one (route, status).
    struct Instruments: Sendable {
        let route: String
        let status: UInt
        let counter: Counter
        let timer: CoreMetrics.Timer

        func record(seconds: Double) {
            counter.increment()
            timer.recordNanoseconds(Int64(seconds * 1e9))
        }
    }

    /// Route labels are string literals and statuses numbers: the key hashes without building a string per request.
    private struct Label: Hashable {
        let route: String
        let status: UInt
    }

    private let cache = Mutex<[Label: Instruments]>([:])

    public init() {}

    /// The instruments of (route, status), made on first use. A caller that answers the same kind of request again and
    /// again (a connection's fast lane) keeps them, which spares the lock shared by every event loop.
    func instruments(route: String, status: UInt) -> Instruments {
        let label = Label(route: route, status: status)
        return cache.withLock { cache in
            if let found = cache[label] { return found }
            let made = Instruments(
                route: route,
                status: status,
                counter: Counter(
                    label: "relay_http_requests_total",
                    dimensions: [("route", route), ("status", String(status))]
                ),
                timer: CoreMetrics.Timer(
                    label: "relay_http_request_duration_seconds",
                    dimensions: [("route", route)],
                    preferredDisplayUnit: .seconds
                )
            )
            cache[label] = made
            return made
        }
    }
}

extension String {
    /// Three decimals without Foundation.
    init(format3 value: Double) {
        let thousandths = Int((value * 1000).rounded())
        let whole = thousandths / 1000
        let fraction = thousandths % 1000
        self =
            "\(whole)." + String(repeating: "0", count: fraction < 10 ? 2 : fraction < 100 ? 1 : 0) + String(fraction)
    }
}

extension Route {
    /// A short, bounded label for logs and metrics (never an id or a path).
    var label: String {
        switch self {
        case .health: "health"
        case .ready: "ready"
        case .metrics: "metrics"
        case .tokens: "tokens"
        case .webSocket: "websocket"
        case .realtime: "realtime"
        case .submit: "submit"
        case .status: "status"
        case .statusStream: "status_stream"
        case .result: "result"
        case .cancel: "cancel"
        case .run: "run"
        case .stream: "stream"
        case .file: "file"
        case .uploadInitiate: "upload_initiate"
        case .uploadPut: "upload_put"
        case .storageToken: "storage_token"
        case .v3Upload: "upload"
        case .uploadAlias: "upload_file"
        case .multipartUpload: "upload_multipart"
        case .ui: "ui"
        case .catalog: "catalog"
        case .jwks: "jwks"
        case .proxy: "proxy"
        case .platform: "platform"
        case .stats: "stats"
        case .admin: "admin"
        case .peerFollow: "peer_follow"
        case .notFound: "not_found"
        case .methodNotAllowed: "method_not_allowed"
        }
    }
}

/// The access lines and HTTP metrics of the requests a fast lane (HTTP/1.1 or HTTP/2) answers itself, with the
/// metrics instruments of the last route and status at hand: a connection mostly repeats one kind of request, and
/// the metrics factory's own lookup takes a lock.
struct LaneAccessLog {
    let sink: AccessLogSink
    private var last: HTTPMetrics.Instruments?

    init(sink: AccessLogSink) {
        self.sink = sink
    }

    mutating func record(
        method: HTTPMethod,
        uri: String,
        status: UInt,
        bytes: Int,
        started: NIODeadline,
        route: String,
        keyID: String?,
        requestID: String?,
        cache: String?
    ) {
        // Without a log the path is never read: spare the scan.
        var entry = AccessEntry(method: method, path: sink.logger == nil ? "" : Self.path(uri), started: started)
        entry.status = status
        entry.declaredLength = bytes
        entry.route = route
        entry.keyID = keyID
        entry.requestID = requestID
        entry.cache = cache
        let instruments: HTTPMetrics.Instruments
        if let last, last.status == status, last.route == route {
            instruments = last
        } else {
            instruments = sink.metrics.instruments(route: route, status: status)
            last = instruments
        }
        sink.record(entry, instruments: instruments)
    }

    /// The target without its query.
    static func path(_ uri: String) -> String {
        guard let mark = uri.utf8.firstIndex(of: UInt8(ascii: "?")) else { return uri }
        return String(uri[..<mark])
    }
}
