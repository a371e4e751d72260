import NIOCore
import RelayJobs
import Synchronization

/// Counts a connection under its protocol (HTTP/1.1, HTTP/2, or WebSocket after an upgrade) while it is open.
final class ConnectionKindTracker: Sendable {
    private let statistics: RelayStatistics
    private let kind = Mutex<RelayStatistics.ConnectionKind?>(nil)

    init(statistics: RelayStatistics) {
        self.statistics = statistics
    }

    func opened(_ new: RelayStatistics.ConnectionKind) {
        let old = kind.withLock { kind in
            defer { kind = new }
            return kind
        }
        if let old { statistics.connectionClosed(old) }
        statistics.connectionOpened(new)
    }

    func closed() {
        if let old = kind.withLock({ kind in
            defer { kind = nil }
            return kind
        }) {
            statistics.connectionClosed(old)
        }
    }
}

/// Sent through every connection's pipeline when the relay shuts down, before `ChannelShouldQuiesceEvent`.
struct RelayShutdownEvent: Sendable {}

/// Open connections, so that shutdown can quiesce them, wait until the last one has closed (not poll for it), and
/// close what is left at the drain deadline: the idea of NIO's `ServerQuiescingHelper`, for a registry that also
/// holds HTTP/2 streams (whose SSE needs the shutdown hint).
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        /// Waiting for `channels` to be empty, by waiter id.
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        state.withLock { $0.channels[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.remove(id)
        }
    }

    private func remove(_ id: ObjectIdentifier) {
        let resumed = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.channels.removeValue(forKey: id)
            guard state.channels.isEmpty else { return [] }
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in resumed { waiter.resume() }
    }

    var count: Int { state.withLock { $0.channels.count } }

    /// Returns once no connection is open (at once if none is), or when the calling task is cancelled.
    func drained() async {
        let waiter = state.withLock { state -> Int in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    guard !state.channels.isEmpty, !Task.isCancelled else { return true }
                    state.waiters[waiter] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: waiter) }?.resume()
        }
    }

    /// Waits until every connection has closed or `deadline` passes, whichever is first.
    func drained(until deadline: ContinuousClock.Instant) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.drained() }
            group.addTask { try? await Task.sleep(until: deadline) }
            await group.next()
            group.cancelAll()
        }
    }

    func quiesceAll() {
        for channel in state.withLock({ Array($0.channels.values) }) {
            // First tell open SSE streams (HTTPServerPipelineHandler consumes the quiesce event itself).
            channel.pipeline.fireUserInboundEventTriggered(RelayShutdownEvent())
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    func closeAll() {
        for channel in state.withLock({ Array($0.channels.values) }) {
            channel.close(promise: nil)
        }
    }
}
