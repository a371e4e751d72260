import AsyncHTTPClient
import FalQueue
import Logging
import NIOCore
import NIOHTTP1
import RelayCore
import RelayJobs
import RelayUpstreams

/// Follows a job that another node of the fleet runs: `POST {node}/_cluster/v1/follow` with the job's model, key and
/// input attaches a request to the owner's job there (or starts it there again, or finds its result) and streams
/// that job's events from the follower's last one on, each with its sequence number; the follower's job logs the same
/// events under the same numbers, so its own watchers see every log line and partial in order, and a client resumes
/// by `Last-Event-ID` on any node.
struct PeerFollow: Sendable {
    enum Ending: Sendable, Hashable {
        /// The job got its terminal update.
        case finished
        /// The peer could not be reached or broke off first.
        case lost(String)
    }

    /// The path every node answers for its peers.
    static let path = "/_cluster/v1/follow"
    /// The event that says the peer sent every event its job had when the follow began (`{"kind": "live"}`).
    static let liveMarker = "live"
    /// The header peers authenticate with.
    static let tokenHeader = "x-relay-cluster-token"

    let job: Job
    let nodeURL: String
    /// Follow this request's own job on the peer (an adopted request), not the key's.
    var request: FleetRequest? = nil
    let token: String
    let http: HTTPClient
    let logger: Logger

    /// The end is published once it is durable (the job's completion gate): the job has caught up only then.
    private func caughtUpOnceEnded() {
        let job = self.job
        let subscription = job.subscribe(after: job.status.lastSequence) { event in
            // Subscribers run under the job's lock: the latch (which takes it too) is released from a task.
            if event.isTerminal { Task { job.caughtUp() } }
        }
        if subscription.token == 0 { job.caughtUp() }
    }

    func run() async -> Ending {
        var body: JSONObject = [
            "model": .string(job.model.id),
            "key": .string(job.key.digest.hex),
            "input": .object(job.input.fields),
            "after": .number(Double(job.status.lastSequence)),
        ]
        if let request {
            body["request_id"] = .string(request.id)
            body["owner_key_id"] = request.ownerKeyID.map(JSONValue.string) ?? .null
        }
        var request = HTTPClientRequest(url: nodeURL + Self.path)
        request.method = .POST
        request.headers.add(name: Self.tokenHeader, value: token)
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "accept", value: "text/event-stream")
        request.body = .bytes(ByteBuffer(bytes: JSONValue.object(body).serialized()))
        do {
            let response = try await http.execute(request, timeout: .hours(1), logger: logger)
            guard response.status == .ok else {
                return .lost("answered \(response.status.code)")
            }
            var parser = FalEventStreamParser()
            for try await chunk in response.body {
                for data in try parser.feed(chunk) {
                    let json = try? data.withUnsafeReadableBytes { try JSONValue(parsing: $0) }
                    if json?["kind"]?.stringValue == Self.liveMarker {
                        job.caughtUp()
                        continue
                    }
                    guard let json, let (sequence, update) = JobUpdate.fromPeer(json) else {
                        return .lost("sent an event this node cannot read")
                    }
                    // Replayed events this job already logged are skipped: the stream starts after them.
                    guard job.receive(fromPeer: update, numbered: sequence) else { continue }
                    switch update {
                    case .succeeded, .failed:
                        caughtUpOnceEnded()
                        return .finished
                    default:
                        continue
                    }
                }
            }
            return .lost("the stream ended before the job did")
        } catch {
            return .lost("\(error)")
        }
    }
}
