import Foundation
import Logging
import NIOCore
import RelayCore
import RelayJobs
import RelayStore

@testable import RelayHTTP

/// An upstream that never reports by itself: the test drives its jobs.
final class HeldUpstream: Upstream, Sendable {
    struct Task: UpstreamTask {
        func cancel() {}
    }

    func start(_ job: Job) -> any UpstreamTask { Task() }
}

/// Every caller is anonymous.
struct AnyoneIsAnonymous: Authenticator {
    func authenticate(authorization: String?) -> Principal? { .anonymous }
    func issueToken(for principal: Principal, apps: [String], seconds: Int) -> String? { nil }
    func authenticate(token: String, app: String?) -> Principal? { nil }
}

/// The HTTP layer's services over a real store in `directory`, one model (`fal-ai/flux/dev`), held jobs, queue host
/// 127.0.0.1 and run host localhost, no rate limits unless given: what the handler tests share.
struct TestRelayServices {
    let services: RelayServices
    let jobs: JobTable
    let model: ModelSpec
    let hasher: KeyedHasher

    init(
        directory: String,
        authenticator: any Authenticator = AnyoneIsAnonymous(),
        rateLimiter: RateLimiter? = nil
    ) throws {
        let secret = (0..<KeyedHasher.secretSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        hasher = KeyedHasher(secret: secret)
        let store = try BlobStore(directory: directory, hasher: hasher, threadPool: .singleton)
        model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image, required: ["prompt"])
        let upstream = HeldUpstream()
        jobs = JobTable { _ in upstream }
        services = RelayServices(
            catalog: ModelCatalog(models: [model]),
            jobs: jobs,
            store: store,
            media: MediaFileSource(store: store, threadPool: .singleton),
            hasher: hasher,
            authenticator: authenticator,
            router: Router(queueHosts: [HostPattern("127.0.0.1")!], runHosts: [HostPattern("localhost")!]),
            limits: HTTPLimits(),
            readiness: Readiness(),
            logger: Logger(label: "test"),
            rateLimiter: rateLimiter
        )
    }

    /// A request for `prompt`, owned by `keyID`.
    func submit(_ prompt: String, ownerKeyID: String? = nil) throws -> RelayRequest {
        let input = try ModelInput(model: model, input: ["prompt": .string(prompt)])
        return jobs.submit(
            input,
            endpoint: EndpointID("fal-ai/flux/dev")!,
            key: RequestKey(input: input, hasher: hasher),
            ownerKeyID: ownerKeyID
        )
    }
}

/// The SSE events in `text` (after the response head, if it holds one).
func sseEvents(_ text: String) throws -> [(id: Int?, data: JSONValue)] {
    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? text
    var events: [(Int?, JSONValue)] = []
    for block in body.components(separatedBy: "\n\n") where block.contains("data: ") {
        var id: Int?
        var data: JSONValue = .null
        for line in block.split(separator: "\n") {
            if line.hasPrefix("id: ") { id = Int(line.dropFirst(4)) }
            if line.hasPrefix("data: ") { data = try JSONValue(parsing: Array(line.dropFirst(6).utf8)) }
        }
        events.append((id, data))
    }
    return events
}

extension ChannelPipeline {
    /// The contexts of every handler in the pipeline, head to tail; call on the channel's event loop. NIO offers no
    /// public walk of a pipeline: its debug description is the one public listing (a title line, a legend line, then
    /// one line per handler ending in its unique name in brackets). For tests only: it formats the whole pipeline.
    func handlerContextsSync() throws -> [ChannelHandlerContext] {
        let lines = debugDescription.split(separator: "\n").dropFirst(2)
        return try lines.compactMap { line -> ChannelHandlerContext? in
            guard line.hasSuffix("]"), let open = line.lastIndex(of: "[") else { return nil }
            let name = line[line.index(after: open)..<line.index(before: line.endIndex)]
            return try syncOperations.context(name: String(name))
        }
    }
}
