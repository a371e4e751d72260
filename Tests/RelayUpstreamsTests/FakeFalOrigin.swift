import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import RelayCore
import Synchronization
import Testing

/// A scriptable fal queue API on 127.0.0.1 (plain HTTP, port 0) for the origin upstream's tests: submit, status
/// (poll and SSE stream), result, cancel, and media files, under `fal-ai/flux`.
final class FakeFalOrigin: Sendable {
    /// One step of a job's progress; each status poll moves one step on, a stream sends the rest in one go.
    enum Step: Sendable, Hashable {
        case queued(Int)
        case running(logs: Int)
        case completed(logs: Int)
    }

    enum StreamMode: Sendable, Hashable {
        /// Every remaining step, then the end of the response.
        case full
        /// 404: the origin has no status stream.
        case notFound
        /// 200 with `application/json`: not an event stream.
        case wrongContentType
        /// After this many events the connection is closed mid-response.
        case dropAfter(Int)
        /// After this many events nothing more is sent, and the stream is held open.
        case stallAfter(Int)
    }

    enum ResultMode: Sendable, Hashable {
        /// Images (one served twice), a video, a thumbnail without content type, links that are not media.
        case media
        case malformed
        /// The job failed validation: COMPLETED with an error, the result a 422.
        case validationError
    }

    struct Script: Sendable {
        var steps: [Step] = [
            .queued(2), .queued(1), .running(logs: 1), .running(logs: 2), .running(logs: 3), .completed(logs: 3),
        ]
        /// Answers to the first submits before one is accepted, e.g. `[503, 503]`.
        var submitFailures: [Int] = []
        /// Every submit gets this status (500, 429, 422…).
        var submitAlways: Int?
        var retryAfter: String?
        /// Submits are never answered.
        var submitStalls = false
        var stream: StreamMode = .full
        /// The very first status stream sends one event and is then held open (a relay that dies while following);
        /// later streams follow `stream`.
        var firstStreamHolds = false
        /// Stream events carry the whole log list instead of the new lines only.
        var cumulativeStreamLogs = false
        /// Status polls are never answered.
        var pollStalls = false
        var result: ResultMode = .media
    }

    /// What the origin saw.
    struct Record: Sendable {
        var submitAttempts = 0
        var jobsCreated: [String] = []
        var submitBodies: [String] = []
        var streamRequests = 0
        var statusPolls = 0
        var resultRequests = 0
        var cancels: [String] = []
        var mediaRequests: [String: Int] = [:]
        var authorizations: Set<String> = []
        /// The `x-fal-*` headers of the last submit, by lowercased name.
        var platformHeaders: [String: String] = [:]
        /// The query of the last submit.
        var submitQuery: String?
        var mediaAuthorizations: [String?] = []
        var progress: [String: Int] = [:]
    }

    static let media: [String: (type: String, bytes: [UInt8])] = [
        "cat.png": (
            "image/png",
            [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + (0..<4000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        ),
        "thumb.jpg": ("image/jpeg", [0xFF, 0xD8, 0xFF, 0xE0] + (0..<500).map { UInt8(truncatingIfNeeded: $0 &* 13) }),
        "clip.bin": (
            "application/octet-stream",
            Array("not really an mp4".utf8) + (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        ),
    ]

    let script: Script
    let record = Mutex(Record())
    private let children = Mutex<[any Channel]>([])
    private let server = Mutex<(any Channel)?>(nil)
    private let port = Mutex(0)

    private let scheme: String

    init(script: Script, scheme: String) {
        self.script = script
        self.scheme = scheme
    }

    var baseURL: String { "\(scheme)://127.0.0.1:\(port.withLock { $0 })" }

    /// Plain HTTP, or HTTPS with the PEM certificate chain and key given.
    static func start(
        _ script: Script = Script(),
        tls: (certificate: String, key: String)? = nil
    ) async throws -> FakeFalOrigin {
        let origin = FakeFalOrigin(script: script, scheme: tls == nil ? "http" : "https")
        let sslContext = try tls.map { files in
            try NIOSSLContext(
                configuration: .makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(files.certificate).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem))
                )
            )
        }
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                origin.children.withLock { $0.append(channel) }
                return channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakeFalOriginHandler(origin: origin))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        origin.server.withLock { $0 = channel }
        origin.port.withLock { $0 = channel.localAddress?.port ?? 0 }
        return origin
    }

    func stop() async {
        for child in children.withLock({ $0 }) {
            try? await child.close()
        }
        try? await server.withLock({ $0 })?.close()
    }

    // MARK: - Behaviour

    enum Reply {
        case json(Int, JSONValue, headers: [(String, String)] = [])
        case bytes(Int, contentType: String, [UInt8])
        case stream(events: [JSONValue], ending: StreamEnding)
        case silence
    }

    enum StreamEnding {
        case end
        case drop
        case hold
    }

    func reply(method: HTTPMethod, uri: String, headers: HTTPHeaders, body: String) -> Reply {
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        let segments = path.split(separator: "/").map(String.init)
        if segments.first == "media", segments.count == 2 {
            record.withLock {
                $0.mediaRequests[segments[1], default: 0] += 1
                $0.mediaAuthorizations.append(headers.first(name: "authorization"))
            }
            guard let file = Self.media[segments[1]] else { return .json(404, ["detail": "no such file"]) }
            return .bytes(200, contentType: file.type, file.bytes)
        }
        if let authorization = headers.first(name: "authorization") {
            record.withLock { _ = $0.authorizations.insert(authorization) }
        }
        if method == .POST, segments == ["fal-ai", "flux", "dev"] {
            let platform = headers.filter { $0.name.lowercased().hasPrefix("x-fal-") }
            record.withLock { record in
                record.platformHeaders = Dictionary(platform.map { ($0.name.lowercased(), $0.value) }) { $1 }
                record.submitQuery = uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init)
            }
            return submit(body: body)
        }
        guard segments.count >= 4, segments[0] == "fal-ai", segments[1] == "flux", segments[2] == "requests" else {
            return .json(404, ["detail": "Not found"])
        }
        let id = segments[3]
        switch (method, Array(segments.dropFirst(4))) {
        case (.GET, []):
            record.withLock { $0.resultRequests += 1 }
            return result(id)
        case (.GET, ["status"]):
            record.withLock { $0.statusPolls += 1 }
            if script.pollStalls { return .silence }
            return .json(statusCode(for: id), status(id, at: advance(id, by: 1).first ?? lastStep, cumulative: true))
        case (.GET, ["status", "stream"]):
            let count = record.withLock { record -> Int in
                record.streamRequests += 1
                return record.streamRequests
            }
            if script.firstStreamHolds, count == 1 {
                let steps = advance(id, by: 1)
                return .stream(events: steps.map { status(id, at: $0, cumulative: true) }, ending: .hold)
            }
            return stream(id)
        case (.PUT, ["cancel"]):
            record.withLock { $0.cancels.append(id) }
            return .json(202, ["status": "CANCELLATION_REQUESTED"])
        default:
            return .json(405, ["detail": "Method not allowed"])
        }
    }

    private var lastStep: Int { script.steps.count - 1 }

    private func submit(body: String) -> Reply {
        let attempt = record.withLock { record -> Int in
            record.submitAttempts += 1
            record.submitBodies.append(body)
            return record.submitAttempts
        }
        var headers: [(String, String)] = []
        if let retryAfter = script.retryAfter { headers.append(("retry-after", retryAfter)) }
        if let status = script.submitAlways {
            if status == 422 {
                return .json(
                    422,
                    ["detail": [["loc": ["body", "prompt"], "msg": "prompt is too long", "type": "value_error"]]]
                )
            }
            return .json(status, ["detail": .string("scripted \(status)")], headers: headers)
        }
        if attempt <= script.submitFailures.count {
            return .json(script.submitFailures[attempt - 1], ["detail": "scripted failure"], headers: headers)
        }
        if script.submitStalls { return .silence }
        let id = "req-\(attempt)"
        record.withLock {
            $0.jobsCreated.append(id)
            $0.progress[id] = 0
        }
        var answer = urls(id)
        answer["status"] = "IN_QUEUE"
        answer["queue_position"] = 2
        return .json(200, .object(answer))
    }

    /// The steps from the job's current one on, `count` of them (fewer at the end); moves the job past them, but
    /// never past its last step.
    private func advance(_ id: String, by count: Int) -> [Int] {
        record.withLock { record in
            let current = record.progress[id] ?? 0
            let steps = Array(current..<min(current + count, script.steps.count))
            record.progress[id] = min(current + count, lastStep)
            return steps.isEmpty ? [lastStep] : steps
        }
    }

    private func stream(_ id: String) -> Reply {
        switch script.stream {
        case .notFound:
            return .json(404, ["detail": "Not found"])
        case .wrongContentType:
            return .json(200, status(id, at: 0, cumulative: true))
        case .full, .dropAfter, .stallAfter:
            break
        }
        let limit: Int
        let ending: StreamEnding
        switch script.stream {
        case .dropAfter(let count):
            (limit, ending) = (count, .drop)
        case .stallAfter(let count):
            (limit, ending) = (count, .hold)
        default:
            (limit, ending) = (script.steps.count, .end)
        }
        let steps = advance(id, by: limit)
        var previousLogs = steps.first.map { $0 == 0 ? 0 : logCount(script.steps[$0 - 1]) } ?? 0
        var events: [JSONValue] = []
        for step in steps {
            var event = status(id, at: step, cumulative: true)
            let logs = logCount(script.steps[step])
            if !script.cumulativeStreamLogs, var object = event.objectValue {
                object["logs"] = .array(Array((event["logs"]?.arrayValue ?? []).dropFirst(previousLogs)))
                event = .object(object)
            }
            previousLogs = logs
            events.append(event)
        }
        return .stream(events: events, ending: ending)
    }

    private func result(_ id: String) -> Reply {
        switch script.result {
        case .malformed:
            return .bytes(200, contentType: "application/json", Array("{\"images\": [{\"url\": ".utf8))
        case .validationError:
            return .json(
                422,
                ["detail": [["loc": ["body", "prompt"], "msg": "prompt is too long", "type": "value_error"]]]
            )
        case .media:
            let media = baseURL + "/media/"
            return .json(
                200,
                [
                    "images": [
                        [
                            "url": .string(media + "cat.png"), "content_type": "image/png", "width": 64, "height": 64,
                            "file_size": 1,
                        ],
                        ["url": .string(media + "cat.png"), "content_type": "image/png", "width": 64, "height": 64],
                    ],
                    "video": ["url": .string(media + "clip.bin"), "content_type": "video/mp4", "file_size": 0],
                    "thumbnail": ["url": .string(media + "thumb.jpg")],
                    "homepage": ["url": .string(baseURL + "/about")],
                    "echo": ["image_url": .string(media + "cat.png")],
                    "seed": 7,
                ]
            )
        }
    }

    private func statusCode(for id: String) -> Int {
        let step = record.withLock { $0.progress[id] ?? 0 }
        if case .completed = script.steps[step] { return 200 }
        return 202
    }

    private func logCount(_ step: Step) -> Int {
        switch step {
        case .queued: 0
        case .running(let logs), .completed(let logs): logs
        }
    }

    private func status(_ id: String, at index: Int, cumulative: Bool) -> JSONValue {
        var object = urls(id)
        let step = script.steps[index]
        let logs: [JSONValue] = (0..<logCount(step)).map { line in
            [
                "message": .string("line \(line + 1)"), "level": "INFO", "source": "USER",
                "timestamp": .string("2026-01-01T00:00:0\(line)Z"),
            ]
        }
        object["logs"] = .array(logs)
        switch step {
        case .queued(let position):
            object["status"] = "IN_QUEUE"
            object["queue_position"] = .number(Double(position))
        case .running:
            object["status"] = "IN_PROGRESS"
        case .completed:
            object["status"] = "COMPLETED"
            object["metrics"] = ["inference_time": 1.25]
            if script.result == .validationError {
                object["error"] = "validation failed"
                object["error_type"] = "validation_error"
            }
        }
        return .object(object)
    }

    private func urls(_ id: String) -> JSONObject {
        let base = "\(baseURL)/fal-ai/flux/requests/\(id)"
        return [
            "request_id": .string(id),
            "response_url": .string(base),
            "status_url": .string(base + "/status"),
            "cancel_url": .string(base + "/cancel"),
        ]
    }
}
