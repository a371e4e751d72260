import Dispatch
import NIOCore
import RelayCore
import RelayJobs
import Synchronization

/// Benchmark B: many identical submits at once share one upstream job; measured is how long after the upstream
/// reports completion each waiter sees COMPLETED.
struct FanOutBenchmark {
    /// How a waiter's subscription callback reaches the waiter.
    enum Delivery {
        /// The callback records the arrival itself, on the thread that completes the job (under the job's lock).
        case direct
        /// The callback hops to the waiter's event loop (`eventLoop.execute`), as RelayHTTPHandler does, and the
        /// arrival is recorded there. Waiters are spread round-robin over the loops, like connections.
        case eventLoops([any EventLoop])
        /// A design sketch, not what the relay does today: the waiters of one loop share one subscription, so
        /// completion costs one hop per loop and each loop then tells its own waiters in a plain loop.
        case batchedPerLoop([any EventLoop])
    }

    /// One round's figures.
    struct Result {
        let waiters: Int
        let upstreamJobs: Int
        let coalesced: Int
        /// All submits, from the first submitter starting to the last one finishing.
        let submitPhase: Duration
        /// How long `job.receive(.succeeded)` took to return on the completing thread.
        let receiveReturned: Duration
        /// Per waiter: from just before `receive` to its callback seeing COMPLETED (missing waiters are not here).
        let latency: LatencySummary
    }

    /// A round that could not finish.
    struct RoundError: Error, CustomStringConvertible {
        let description: String
    }

    let catalog: ModelCatalog
    let body: SubmitBody
    let hasher: KeyedHasher
    let waiters: Int
    /// Threads that submit at once (each takes every `submitters`-th waiter).
    let submitters: Int

    func run(_ delivery: Delivery) throws(RoundError) -> Result {
        guard let endpoint = EndpointID(body.modelID) else { throw RoundError(description: "bad endpoint id") }
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let arrivals = ArrivalTimes(count: waiters)
        let coalesced = Atomic<Int>(0)
        let unprepared = Atomic<Int>(0)
        let (catalog, body, hasher, waiters, submitters) = (
            self.catalog, self.body, self.hasher, self.waiters, self.submitters
        )
        let clock = ContinuousClock()
        let fanOuts: [LoopFanOut]
        if case .batchedPerLoop(let loops) = delivery {
            fanOuts = loops.map { LoopFanOut(loop: $0, arrivals: arrivals) }
        } else {
            fanOuts = []
        }

        let submitStart = clock.now
        DispatchQueue.concurrentPerform(iterations: submitters) { submitter in
            for waiter in stride(from: submitter, to: waiters, by: submitters) {
                // Each request pays for its own parse, normalisation and key, as it would in the handler.
                guard let (input, key) = body.prepare(catalog: catalog, hasher: hasher) else {
                    unprepared.add(1, ordering: .relaxed)
                    continue
                }
                let request = table.submit(input, endpoint: endpoint, key: key, ownerKeyID: nil)
                if request.cacheOutcome == .coalesced { coalesced.add(1, ordering: .relaxed) }
                let callback: Job.Subscriber
                switch delivery {
                case .batchedPerLoop:
                    fanOuts[waiter % fanOuts.count].add(waiter, job: request.job)
                    continue
                case .direct:
                    callback = { event in
                        if case .completed = event.kind { arrivals.record(waiter) }
                    }
                case .eventLoops(let loops):
                    let loop = loops[waiter % loops.count]
                    callback = { event in
                        loop.execute {
                            if case .completed = event.kind { arrivals.record(waiter) }
                        }
                    }
                }
                // Nothing has happened to the job yet, so there is no replay to hand over.
                _ = request.job.subscribe(after: 0, callback)
            }
        }
        let submitPhase = submitStart.duration(to: clock.now)
        guard unprepared.load(ordering: .relaxed) == 0 else {
            throw RoundError(description: "the submit body did not normalise for \(body.modelID)")
        }
        let jobs = upstream.jobs
        guard let job = jobs.first else { throw RoundError(description: "no upstream job was started") }

        // The job is running before it completes, and the loops have handled that event: only completion is timed.
        job.receive(.started)
        switch delivery {
        case .direct:
            break
        case .eventLoops(let loops), .batchedPerLoop(let loops):
            for loop in loops { try? loop.submit {}.wait() }
        }

        let completedAt = clock.now
        job.receive(
            .succeeded(
                result: ["images": [["url": "https://relay.invalid/fox.png"]], "seed": 1_234_567],
                inferenceSeconds: 2.24
            )
        )
        let receiveReturned = completedAt.duration(to: clock.now)
        guard arrivals.waitForAll(timeout: .seconds(60)) else {
            throw RoundError(description: "only \(arrivals.arrived) of \(waiters) waiters saw COMPLETED within 60 s")
        }
        return Result(
            waiters: waiters,
            upstreamJobs: jobs.count,
            coalesced: coalesced.load(ordering: .relaxed),
            submitPhase: submitPhase,
            receiveReturned: receiveReturned,
            latency: LatencySummary(arrivals.latencies(since: completedAt))
        )
    }
}
