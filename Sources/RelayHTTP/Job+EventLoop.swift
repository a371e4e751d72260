import NIOCore
import RelayJobs

extension Job {
    /// Subscribes a handler living on `eventLoop`: `body` runs on that loop, and all subscribers on one loop share one
    /// hop per batch of events.
    func subscribe(
        after sequence: Int,
        on eventLoop: any EventLoop,
        _ body: @escaping @Sendable (JobEvent) -> Void
    ) -> Subscription {
        subscribe(after: sequence, loop: ObjectIdentifier(eventLoop), execute: { eventLoop.execute($0) }, body)
    }
}
