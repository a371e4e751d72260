import RelayCore
import Synchronization
import Testing

@testable import RelayJobs

/// `X-Fal-Object-Lifecycle-Preference` in the job table: the shortest lifetime of a job's requests wins, the store is
/// told when the media go, and the cached result never outlives them.
extension JobTableTests {
    @Test func theShortestMediaLifetimeOfAJobsRequestsDecidesWhenItsMediaGo() throws {
        let upstream = ManualUpstream()
        let deadlines = Mutex<[(JSONValue, Timestamp)]>([])
        let table = JobTable(
            mediaDeadline: { result, at in deadlines.withLock { $0.append((result, at)) } },
            upstream: { _ in upstream }
        )
        func submit(_ lifetime: Double?) throws -> RelayRequest {
            var platform = PlatformHeaders()
            platform.mediaExpirySeconds = lifetime
            let fox = try input("a short-lived fox")
            return table.submit(
                fox,
                endpoint: endpoint,
                key: RequestKey(input: fox, hasher: hasher),
                ownerKeyID: nil,
                platform: platform,
                mayStartWork: { true }
            )!
        }
        let first = try submit(3600)
        let second = try submit(nil)
        let third = try submit(60)
        #expect(second.job === first.job && third.job === first.job && first.job.mediaExpirySeconds == 60)
        let before = Timestamp.now().secondsSinceEpoch
        upstream.tasks[0].job.receive(.succeeded(result: ["images": [["url": "x"]]], inferenceSeconds: 1))
        let told = deadlines.withLock { $0 }
        #expect(told.count == 1 && told.first?.0 == ["images": [["url": "x"]]])
        let at = try #require(told.first?.1).secondsSinceEpoch
        #expect(at >= before + 60 && at < before + 61)
        // The hit that follows says the result lives no longer than its media.
        let hit = try submit(nil)
        let ttl = try #require(hit.cacheStatus.split(separator: ";").first { $0.contains("ttl=") })
        #expect(hit.cacheOutcome == .hit && Int(ttl.split(separator: "=")[1])! <= 60)
    }
}

extension JobTableTests {
    /// A pool's fallback model made the result: it is not the asked model's, so it is not cached as it.
    @Test func aResultAFallbackModelMadeIsNotCached() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let first = submit(table, try input("a fallback fox"))
        upstream.tasks[0].job.servedBy = Job.Server(account: "a", model: "fal-ai/flux/schnell")
        upstream.tasks[0].job.receive(.succeeded(result: ["by": "fallback"], inferenceSeconds: 1))
        #expect(first.phase.isCompleted)
        #expect(submit(table, try input("a fallback fox")).cacheOutcome == .miss)
    }
}
