import Foundation
import RelayCore
import RelayStore
import Testing

@testable import RelayJobs

/// The request history the Platform API lists: each caller's own requests, their inputs and tags kept (unless the
/// client said `X-Fal-Store-IO: 0`), their times, and payloads deleted for good — all of it across a restart.
extension JobTableRestartTests {
    func submit(
        _ table: JobTable,
        _ input: ModelInput,
        owner: String?,
        platform: PlatformHeaders
    ) async
        -> RelayRequest
    {
        let request = table.submit(
            input,
            endpoint: endpoint,
            key: RequestKey(input: input, hasher: hasher),
            ownerKeyID: owner,
            platform: platform,
            mayStartWork: { true }
        )!
        await withCheckedContinuation { continuation in request.recorded.whenDone { continuation.resume() } }
        return request
    }

    @Test func historyKeepsInputsTagsAndTimesAcrossARestart() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let upstream = ManualUpstream()
        let before = try await table(directory, upstream: upstream)
        var tagged = PlatformHeaders()
        tagged.tags = PlatformHeaders.tags(in: "team=vision,run=7")
        var private_ = PlatformHeaders()
        private_.storeIO = false
        let kept = await submit(before, try input("a red fox"), owner: "key-a", platform: tagged)
        let secret = await submit(before, try input("a secret"), owner: "key-a", platform: private_)
        let other = await submit(before, try input("a blue fox"), owner: "key-b", platform: PlatformHeaders())
        guard case .inProgress = await before.deletePayloads(other.id, keyID: .some("key-b")) else {
            Issue.record("a request still running has no payloads to delete yet")
            return
        }
        upstream.tasks[0].job.receive(.started)
        for task in upstream.tasks { task.job.receive(.succeeded(result: ["n": 1], inferenceSeconds: 0.1)) }
        for request in [kept, secret, other] { try await waitUntilCompleted(request) }
        let (started, ended) = kept.job.times
        #expect(started != nil && ended != nil && started! <= ended!)
        #expect(kept.input?["prompt"] == "a red fox" && secret.input == nil)
        #expect(before.history(keyID: .some("key-a")).map(\.id) == [kept.id, secret.id])
        #expect(before.history(keyID: .some(nil)).isEmpty)
        #expect(before.history(keyID: nil).count == 3)
        guard case .notFound = await before.deletePayloads(other.id, keyID: .some("key-a")) else {
            Issue.record("another key's request")
            return
        }
        guard case .deleted(let was) = await before.deletePayloads(other.id, keyID: .some("key-b")),
            case .alreadyDeleted = await before.deletePayloads(other.id, keyID: nil)
        else {
            Issue.record("its owner deletes it once")
            return
        }
        #expect(was.input?["prompt"] == "a blue fox")
        await before.log?.flush()

        let after = try await table(directory, upstream: ManualUpstream())
        let restored = Dictionary(uniqueKeysWithValues: after.history(keyID: nil).map { ($0.id, $0) })
        #expect(restored[kept.id]?.input?["prompt"] == "a red fox")
        #expect(restored[kept.id]?.tags.map(\.key) == ["team", "run"])
        // The end as the log recorded it (when the end was written, just before it was published), not the restart's.
        let restoredEnd = try #require(restored[kept.id]?.job.times.ended)
        #expect(abs(restoredEnd.secondsSinceEpoch - ended!.secondsSinceEpoch) < 1 && kept.createdAt < restoredEnd)
        #expect(restored[secret.id]?.input == nil)
        #expect(restored[other.id]?.input == nil && restored[other.id]?.payloadsDeleted == true)
    }
}
