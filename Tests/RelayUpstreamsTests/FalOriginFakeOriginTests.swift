import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import RelayCore
import Synchronization
import Testing

@Suite struct FalOriginFakeOriginTests {
    /// The fake's own timeline: polls step through the script, and a finished job stays finished.
    @Test func pollsStepThroughTheScript() async throws {
        let origin = try await FakeFalOrigin.start(
            FakeFalOrigin.Script(steps: [.queued(1), .running(logs: 1), .completed(logs: 1)])
        )
        defer { Task { await origin.stop() } }
        guard
            case .json(200, let submitted, _) = origin.reply(
                method: .POST,
                uri: "/fal-ai/flux/dev",
                headers: [:],
                body: "{}"
            )
        else {
            Issue.record("submit was not accepted")
            return
        }
        let id = try #require(submitted["request_id"]?.stringValue)
        var seen: [String] = []
        for _ in 0..<4 {
            guard
                case .json(_, let status, _) = origin.reply(
                    method: .GET,
                    uri: "/fal-ai/flux/requests/\(id)/status?logs=1",
                    headers: [:],
                    body: ""
                )
            else {
                Issue.record("no status")
                return
            }
            seen.append(status["status"]?.stringValue ?? "?")
        }
        #expect(seen == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "COMPLETED"])
    }
}
