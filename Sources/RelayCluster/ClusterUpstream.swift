public import AsyncHTTPClient
public import Logging
public import RelayCore
public import RelayJobs
import Synchronization

/// A model's upstream as a node of a fleet runs it: one generation per RequestKey in the whole fleet.
///
/// For each job: a result some node already stored is served from the fleet's index; otherwise the node claims the
/// key (`relay_claims`, a lease renewed by its heartbeat) and runs the model's own upstream, or, when a live peer
/// holds the claim, follows that peer's job (`PeerFollow`). A peer that dies or leaves mid-job loses its claim when
/// the lease runs out; the follower then claims the key and runs the job itself: the synthetic upstream starts it
/// again; an origin job the dead node had submitted is followed at the origin by its id, kept with the claim.
public final class ClusterUpstream: Upstream {
    let local: any Upstream
    let node: ClusterNode
    let http: HTTPClient
    let logger: Logger

    public init(local: any Upstream, node: ClusterNode, http: HTTPClient, logger: Logger) {
        self.local = local
        self.node = node
        self.http = http
        self.logger = logger
    }

    public func start(_ job: Job) -> any UpstreamTask {
        // Work that is never shared (a `no-cache` submission's, a model that never dedups) is never claimed: it is
        // generated here, neither answered from the fleet's index nor following another node's run of the key. A
        // request another node took follows its own job there first (`ClusterJobRun`).
        if !job.shared, !node.tookElsewhere(job) {
            job.caughtUp()
            node.countGeneration()
            return local.start(job)
        }
        let run = ClusterJobRun(job: job, upstream: self)
        run.task = Task { await run.run() }
        return run
    }

    public func resume(_ job: Job, from handle: UpstreamHandle, attachedAt: Timestamp) -> (any UpstreamTask)? {
        local.resume(job, from: handle, attachedAt: attachedAt)
    }
}

/// One job's way through the fleet (see `ClusterUpstream`).
final class ClusterJobRun: UpstreamTask, Sendable {
    private struct State {
        var cancelled = false
        var local: (any UpstreamTask)?
        var task: Task<Void, Never>?
    }

    let job: Job
    let upstream: ClusterUpstream
    private let state = Mutex(State())

    init(job: Job, upstream: ClusterUpstream) {
        self.job = job
        self.upstream = upstream
    }

    var task: Task<Void, Never>? {
        get { state.withLock { $0.task } }
        set { state.withLock { $0.task = newValue } }
    }

    func cancel() {
        let (local, task) = state.withLock { state in
            state.cancelled = true
            return (state.local, state.task)
        }
        local?.cancel()
        task?.cancel()
    }

    /// How many times in a row the database may fail this job's steps before the job fails with 503.
    static let patience = 10

    func run() async {
        let node = upstream.node
        // An adopted request follows its own job on the node that took it while that node lives: the same events
        // under the same numbers, from the first to the end, even if that job ended already.
        if let adopted = job.adoptedFrom, adopted.nodeID != node.configuration.nodeID,
            let owner = node.fleet.first(where: { $0.nodeID == adopted.nodeID && $0.alive })
        {
            let follow = PeerFollow(
                job: job,
                nodeURL: owner.nodeURL,
                request: adopted,
                token: node.peerToken,
                http: upstream.http,
                logger: upstream.logger
            )
            if case .finished = await follow.run() { return }
        }
        job.caughtUp()
        // A `no-cache` request taken up here whose own run could not be followed (its node died or restarted) is
        // generated again here, under no claim: never a shared run's output, nor holding the key's claim for one.
        if !job.shared {
            // Numbered past the dead run's numbers all the same (the database's clock, as a claim's).
            let clock = try? await node.eventNumberClock()
            job.numberFrom(clock ?? Int(Timestamp.now().secondsSinceEpoch * 1_000_000))
            runHere(claimed: false)
            return
        }
        // The submission that started this job claimed its key a moment ago, and found no result. (Only a job this
        // node's own submission started: an adopted request's job asks the database.)
        if !node.tookElsewhere(job),
            case .won(let handle, let numberFrom) = node.takeFreshClaim(job.key)
        {
            job.numberFrom(numberFrom)
            runHere(following: handle)
            return
        }
        var failures = 0
        while !Task.isCancelled, !job.isTerminal {
            do {
                if let cached = try await node.result(job.key), case .success(let result, let seconds) = cached.outcome
                {
                    job.receive(.succeeded(result: result, inferenceSeconds: seconds))
                    return
                }
                switch try await node.claim(job.key) {
                case .won(let handle, let numberFrom):
                    job.numberFrom(numberFrom)
                    runHere(following: handle)
                    return
                case .heldBy(let nodeID, let nodeURL):
                    let follow = PeerFollow(
                        job: job,
                        nodeURL: nodeURL,
                        token: node.peerToken,
                        http: upstream.http,
                        logger: upstream.logger
                    )
                    switch await follow.run() {
                    case .finished:
                        return
                    case .lost(let reason):
                        upstream.logger.info(
                            "lost the peer that runs a job; waiting for its claim to lapse",
                            metadata: ["peer": "\(nodeID)", "reason": "\(reason)", "key": "\(job.key)"]
                        )
                        // Claimed again the moment its lease lapses (a few ms after), or in a second at most: a
                        // peer that only restarted renews its claim, and is followed again.
                        let left: Duration
                        do { left = try await node.leaseLeft(job.key) ?? .zero } catch { left = .seconds(1) }
                        try? await Task.sleep(for: min(.seconds(1), left + .milliseconds(20)))
                    }
                }
                failures = 0
            } catch {
                failures += 1
                guard failures < Self.patience else {
                    job.receive(
                        .failed(
                            .unavailable("the fleet's database is unavailable: \(error)", type: "cluster_unavailable")
                        )
                    )
                    return
                }
                try? await Task.sleep(for: .milliseconds(300))
            }
        }
    }

    /// This node holds the claim: the model's own upstream does the work. The claim is released when the job ends,
    /// after its result (if stored) was published: the table publishes before its subscribers hear of the end.
    /// `claimed`: the job holds its key's claim (released as it ends); not so for work that is never shared.
    private func runHere(following handle: UpstreamHandle? = nil, claimed: Bool = true) {
        let node = upstream.node
        let job = self.job
        let cacheable = JobTable.isCacheable(job.input)
        if claimed {
            _ = job.subscribe(after: job.status.lastSequence) { event in
                guard case .completed(let outcome) = event.kind else { return }
                if case .success = outcome, cacheable { return }
                node.release(job.key)
            }
        }
        // A job an origin accepted under a node that died is followed there by its id, not submitted again.
        let resumed = handle.flatMap { upstream.local.resume(job, from: $0, attachedAt: .now()) }
        if resumed == nil { node.countGeneration() }
        let local = resumed ?? upstream.local.start(job)
        let cancelled = state.withLock { state in
            state.local = local
            return state.cancelled
        }
        if cancelled { local.cancel() }
    }
}
