import Foundation
import RelayCore
import Testing

@testable import RelayJobs

/// Finished requests restored from the request log are kept compact until asked for: every read, the history, the
/// sweep and a payload deletion see them as before, and only what is asked for is made live.
@Suite struct RequestTableTests {
    let restarts = JobTableRestartTests()

    func liveCount(_ table: JobTable) -> Int { table.state.withLock { $0.requests.liveCount } }

    @Test func finishedRequestsStayCompactUntilAskedFor() async throws {
        let directory = JobTableRestartTests.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let upstream = ManualUpstream()
        let before = try await restarts.table(directory, upstream: upstream)
        var finished: [RelayRequest] = []
        for index in 0..<3 {
            let request = await restarts.submit(before, try restarts.input("kept \(index)"))
            upstream.tasks[index].job.receive(
                .succeeded(result: ["images": [["n": .number(Double(index))]]], inferenceSeconds: 1)
            )
            try await restarts.waitUntilCompleted(request)
            finished.append(request)
        }
        let failed = await restarts.submit(before, try restarts.input("failed"))
        upstream.tasks[3].job.receive(.failed(.upstreamFailed("no")))
        try await restarts.waitUntilCompleted(failed)
        await before.log?.flush()

        let after = try await restarts.table(directory, upstream: ManualUpstream())
        // The failure is live; the three results are compact.
        #expect(after.counts.requests == 4 && liveCount(after) == 1)
        // The history lists them all, inputs included, without keeping them live.
        let history = after.history(keyID: "key-a")
        #expect(history.map(\.id) == (finished + [failed]).map(\.id))
        #expect(history[0].input?["prompt"] == "kept 0" && liveCount(after) == 1)
        // A read answers as before the restart, and keeps that one live from then on.
        let read = try #require(after.request(finished[1].id, keyID: "key-a"))
        #expect(read.phase == .completed(.success(result: ["images": [["n": 1]]], inferenceSeconds: 1)))
        #expect(read.cacheOutcome == .miss && read.createdAt == finished[1].createdAt && liveCount(after) == 2)
        #expect(after.request(finished[2].id, keyID: "key-b") == nil)
        // A deletion of payloads works on a compact one.
        guard case .deleted = await after.deletePayloads(finished[2].id, keyID: "key-a") else {
            Issue.record("the payloads of a compact request were not deleted")
            return
        }
        #expect(after.request(finished[2].id, keyID: "key-a")?.payloadsDeleted == true)
        // Past retention, the sweep removes compact and live alike.
        #expect(after.sweep(now: Timestamp(secondsSinceEpoch: Timestamp.now().secondsSinceEpoch + 7200)) == 4)
        #expect(after.counts.requests == 0)
    }
}
