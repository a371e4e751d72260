import RelayCore
import Synchronization
import Testing

@testable import RelayJobs

/// Loop-grouped delivery: subscribers on one loop share one hop per batch, in order, and leave cleanly.
@Suite struct JobDeliveryTests {
    /// A stand-in for an event loop: queues work until `run()`.
    final class FakeLoop: Sendable {
        let queue = Mutex<[@Sendable () -> Void]>([])
        var id: ObjectIdentifier { ObjectIdentifier(self) }
        var execute: Job.Executor { { work in self.queue.withLock { $0.append(work) } } }
        var pending: Int { queue.withLock { $0.count } }

        func run() {
            for work in queue.withLock({ queue in
                defer { queue.removeAll() }
                return queue
            }) { work() }
        }
    }

    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image)

    func job() throws -> Job {
        let input = try ModelInput(model: model, input: ["prompt": "p"])
        return Job(input: input, key: RequestKey(digest: Digest128(high: 1, low: 2)))
    }

    @Test func oneHopPerLoopPerBatchAndEveryEventInOrder() throws {
        let job = try job()
        let (a, b) = (FakeLoop(), FakeLoop())
        let seen = Mutex<[String: [Int]]>([:])
        for (name, loop) in [("a1", a), ("a2", a), ("a3", a), ("b1", b)] {
            _ = job.subscribe(after: 0, loop: loop.id, execute: loop.execute) { event in
                seen.withLock { $0[name, default: []].append(event.sequence) }
            }
        }
        #expect(job.subscriberCount == 4)
        job.receive(.started)
        job.receive(.log("one", level: .info))
        #expect(a.pending == 2 && b.pending == 2)  // one hop per batch per loop, not per subscriber
        #expect(seen.withLock { $0.isEmpty })  // nothing runs off its loop
        a.run()
        b.run()
        job.receive(.succeeded(result: [:], inferenceSeconds: 1))
        a.run()
        b.run()
        for name in ["a1", "a2", "a3", "b1"] {
            #expect(seen.withLock { $0[name] } == [1, 2, 3])
        }
        #expect(job.subscriberCount == 0)  // the end releases everyone
    }

    @Test func unsubscribedLoopSubscribersGetNothingNewAndEmptyGroupsGo() throws {
        let job = try job()
        let loop = FakeLoop()
        let count = Mutex(0)
        let first = job.subscribe(after: 0, loop: loop.id, execute: loop.execute) { _ in count.withLock { $0 += 1 } }
        let second = job.subscribe(after: 0, loop: loop.id, execute: loop.execute) { _ in count.withLock { $0 += 10 } }
        job.unsubscribe(first.token)
        job.receive(.started)
        loop.run()
        #expect(count.withLock { $0 } == 10)
        job.unsubscribe(second.token)
        #expect(job.subscriberCount == 0)
        job.receive(.log("after", level: .info))
        #expect(loop.pending == 0)
    }
}
