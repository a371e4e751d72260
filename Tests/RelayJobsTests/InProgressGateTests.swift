import RelayCore
import Synchronization
import Testing

@testable import RelayJobs

/// A caller's in-progress cap: jobs beyond it wait in line (queued, told their place) and begin as the caller's
/// earlier jobs end; other callers are not held up, and nothing is left behind.
@Suite struct InProgressGateTests {
    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image)

    func job(_ index: Int, priority: PlatformHeaders.Priority = .normal) throws -> Job {
        let input = try ModelInput(model: model, input: ["prompt": .string("p\(index)")])
        var platform = PlatformHeaders()
        platform.priority = priority
        return Job(
            input: input,
            key: RequestKey(digest: Digest128(high: UInt64(index), low: 1)),
            platform: platform
        )
    }

    /// Waits (yielding, never sleeping) until `condition` holds.
    func until(_ condition: () -> Bool) async {
        while !condition() { await Task.yield() }
    }

    func position(_ job: Job) -> Int? {
        if case .queued(let position) = job.status.phase { return position }
        return nil
    }

    @Test func jobsBeyondTheCapWaitInLineAndBeginAsEarlierOnesEnd() async throws {
        let time = SlotQueueTests.ManualTime()
        let gate = InProgressGate(scheduler: time.scheduler)
        let upstream = ManualUpstream()
        let cap = InProgressCap(owner: "key:a", limit: 2)
        let jobs = try (0..<4).map { try job($0) }
        for (index, job) in jobs.enumerated() {
            _ = job.attach()
            job.setTask(gate.start(job, cap: cap, backlog: { 5 }, begin: { upstream.start(job) }))
            // In order: each is in line (or begun) before the next arrives.
            await until { upstream.tasks.count + gate.waiting > index }
        }
        #expect(upstream.tasks.map(\.job.id) == [jobs[0].id, jobs[1].id])
        // The waiting ones are told their place in the caller's line plus what the upstream holds waiting.
        #expect(position(jobs[2]) == 5 && position(jobs[3]) == 6)
        // Another caller is not held up by this one's line.
        let other = try job(9)
        _ = gate.start(
            other,
            cap: InProgressCap(owner: "key:b", limit: 2),
            backlog: { 0 },
            begin: { upstream.start(other) }
        )
        await until { upstream.tasks.count == 3 }
        // The end of one of the caller's jobs lets the next begin; the last one moves up at the next pass.
        jobs[0].receive(.succeeded(result: ["ok": true], inferenceSeconds: 1))
        await until { upstream.tasks.count == 4 }
        #expect(upstream.tasks.last?.job.id == jobs[2].id && gate.waiting == 1)
        time.advance()
        #expect(position(jobs[3]) == 5)
        // A waiting job that is cancelled never begins, and holds no place.
        jobs[3].detach()
        await until { gate.waiting == 0 }
        jobs[1].receive(.failed(.internalError("boom")))
        jobs[2].receive(.succeeded(result: ["ok": true], inferenceSeconds: 1))
        other.receive(.succeeded(result: ["ok": true], inferenceSeconds: 1))
        await until { gate.callers == 0 }
        #expect(upstream.tasks.count == 4)
    }

    @Test func aCancelledJobGivesItsPlaceBackAndItsUpstreamTaskIsCancelled() async throws {
        let gate = InProgressGate(scheduler: SlotQueueTests.ManualTime().scheduler)
        let upstream = ManualUpstream()
        let cap = InProgressCap(owner: "address:127.0.0.1", limit: 1)
        let (first, second) = (try job(1), try job(2))
        for job in [first, second] {
            _ = job.attach()
            job.setTask(gate.start(job, cap: cap, backlog: { 0 }, begin: { upstream.start(job) }))
        }
        await until { upstream.tasks.count == 1 && gate.waiting == 1 }
        first.detach()  // its last request went: the job is cancelled, and with it the upstream work
        #expect(upstream.tasks[0].isCancelled)
        await until { upstream.tasks.count == 2 }
        #expect(upstream.tasks[1].job.id == second.id)
        second.receive(.succeeded(result: ["ok": true], inferenceSeconds: 1))
        await until { gate.callers == 0 }
    }

    @Test func normalJobsGoBeforeLowOnesInACallersLine() async throws {
        let gate = InProgressGate(scheduler: SlotQueueTests.ManualTime().scheduler)
        let upstream = ManualUpstream()
        let cap = InProgressCap(owner: "key:a", limit: 1)
        let jobs = [try job(0), try job(1, priority: .low), try job(2)]
        for (index, job) in jobs.enumerated() {
            _ = job.attach()
            _ = gate.start(job, cap: cap, backlog: { 0 }, begin: { upstream.start(job) })
            await until { upstream.tasks.count + gate.waiting > index }
        }
        jobs[0].receive(.succeeded(result: ["ok": true], inferenceSeconds: 1))
        await until { upstream.tasks.count == 2 }
        #expect(upstream.tasks[1].job.id == jobs[2].id)
        jobs[2].receive(.succeeded(result: ["ok": true], inferenceSeconds: 1))
        await until { upstream.tasks.count == 3 }
        jobs[1].receive(.succeeded(result: ["ok": true], inferenceSeconds: 1))
        await until { gate.callers == 0 }
    }
}
