import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import RelayHTTP

/// Shutdown waits for the last connection to close (no poll), or for its deadline.
@Suite struct ConnectionRegistryTests {
    @Test func drainedReturnsWhenTheLastConnectionCloses() async throws {
        let registry = ConnectionRegistry()
        await registry.drained()  // none open: at once
        let first = EmbeddedChannel()
        let second = EmbeddedChannel()
        registry.add(first)
        registry.add(second)
        let returned = Returned()
        let waiting = Task {
            await registry.drained()
            returned.flag.withLock { $0 = true }
        }
        _ = try first.finish()
        for _ in 0..<100 { await Task.yield() }
        #expect(registry.count == 1 && !returned.flag.withLock { $0 }, "one connection is still open")
        _ = try second.finish()
        await waiting.value
        #expect(registry.count == 0 && returned.flag.withLock { $0 })
    }

    @Test func aDeadlineEndsTheWaitWithConnectionsStillOpen() async throws {
        let registry = ConnectionRegistry()
        let open = EmbeddedChannel()
        registry.add(open)
        await registry.drained(until: .now)
        #expect(registry.count == 1)
        registry.closeAll()
        open.embeddedEventLoop.run()
        #expect(registry.count == 0)
    }
}

private final class Returned: Sendable {
    let flag = Mutex(false)
}
