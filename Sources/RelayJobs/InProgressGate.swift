import RelayCore
import Synchronization

/// A caller's cap on upstream work in progress: whose (`owner`, a key id or an anonymous caller's address) and how
/// many of its jobs may hold upstream work at once.
public struct InProgressCap: Sendable, Hashable {
    public let owner: String
    public let limit: Int

    /// A limit below 1 is raised to 1: a cap that starts nothing is a ban, which is not this type's job.
    public init(owner: String, limit: Int) {
        self.owner = owner
        self.limit = max(1, limit)
    }
}

/// Upstream work in progress per caller, capped as fal caps each account: a job started beyond its caller's cap is
/// not refused but waits (`IN_QUEUE`, told its place) until one of the caller's jobs ends, normal before low priority
/// as in the upstream's own queue. So one caller's backlog of a thousand jobs does not stand in front of every other
/// caller's work. Only jobs a caller starts count: a hit or a request coalesced onto work in flight starts none.
///
/// One `SlotQueue` per caller with work in progress or waiting, dropped once it has neither, so that the anonymous
/// callers of a day leave nothing behind. A line keeps the limit it was made with until it is dropped.
final class InProgressGate: Sendable {
    private struct Line {
        let queue: SlotQueue
        /// Jobs of this caller in progress or waiting.
        var jobs: Int
    }

    private let lines = Mutex<[String: Line]>([:])
    private let scheduler: SlotQueue.Scheduler

    init(scheduler: @escaping SlotQueue.Scheduler = SlotQueue.taskScheduler) {
        self.scheduler = scheduler
    }

    /// Callers with a line now (tests: none is left once their jobs ended).
    var callers: Int { lines.withLock { $0.count } }

    /// Jobs waiting for their caller's cap, all callers together.
    var waiting: Int { lines.withLock { $0.values.reduce(0) { $0 + $1.queue.waitingCount } } }

    /// Starts `job` with `begin` once its caller has fewer than `cap.limit` jobs in progress. Until then the job is
    /// queued, told its place among its caller's waiting jobs plus `backlog()` (the jobs the upstream itself holds
    /// waiting, which it will wait behind next). The caller's place is given back when the job ends, however it ends;
    /// a job cancelled while it waits never begins.
    func start(
        _ job: Job,
        cap: InProgressCap,
        backlog: @escaping @Sendable () -> Int,
        begin: @escaping @Sendable () -> any UpstreamTask
    ) -> any UpstreamTask {
        let queue = lines.withLock { lines -> SlotQueue in
            var line = lines[cap.owner] ?? Line(queue: SlotQueue(slots: cap.limit, scheduler: scheduler), jobs: 0)
            line.jobs += 1
            lines[cap.owner] = line
            return line.queue
        }
        let gated = GatedTask()
        let waiting = Task {
            let ticket = queue.ticket()
            if job.priority == .low { job.whenRaised { queue.raise(ticket) } }
            job.setPositionSource { queue.place(of: ticket).map { $0 + backlog() } }
            do {
                try await queue.acquire(ticket: ticket, priority: job.priority) { place in
                    job.receive(.queued(position: place + backlog()))
                }
            } catch {
                self.leave(cap.owner)  // cancelled while it waited: it held no place
                return
            }
            // Its place goes back once, when the job ends: seen by the subscriber, or by the check just after it.
            let ended = Once()
            let giveBack: @Sendable () -> Void = {
                guard ended.claim() else { return }
                queue.release()
                self.leave(cap.owner)
            }
            let subscription = job.subscribe(after: .max) { event in
                if event.isTerminal { giveBack() }
            }
            if subscription.token == 0 || job.isTerminal {
                if subscription.token != 0 { job.unsubscribe(subscription.token) }
                giveBack()
                return
            }
            job.setPositionSource(nil)  // the upstream's own line, if it has one, names its own
            gated.begun(begin())
        }
        gated.waiting(on: waiting)
        return gated
    }

    private func leave(_ owner: String) {
        lines.withLock { lines in
            guard var line = lines[owner] else { return }
            line.jobs -= 1
            lines[owner] = line.jobs > 0 ? line : nil
        }
    }
}

/// A job's upstream task while it may still wait for its caller's cap: cancelling it stops the wait, or the upstream
/// work once that began.
private final class GatedTask: UpstreamTask {
    private struct State {
        var waiting: Task<Void, Never>?
        var upstream: (any UpstreamTask)?
        var cancelled = false
    }

    private let state = Mutex(State())

    func waiting(on task: Task<Void, Never>) {
        let cancelNow = state.withLock { state -> Bool in
            state.waiting = task
            return state.cancelled
        }
        if cancelNow { task.cancel() }
    }

    func begun(_ upstream: any UpstreamTask) {
        let cancelNow = state.withLock { state -> Bool in
            state.upstream = upstream
            return state.cancelled
        }
        if cancelNow { upstream.cancel() }
    }

    func cancel() {
        let (waiting, upstream) = state.withLock { state in
            state.cancelled = true
            return (state.waiting, state.upstream)
        }
        waiting?.cancel()
        upstream?.cancel()
    }
}
