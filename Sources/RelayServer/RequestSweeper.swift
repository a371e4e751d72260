import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Prometheus
import RelayCore
import RelayHTTP
import RelayJobs
import RelayStore
import RelayUpstreams
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Forgets finished requests past their retention and the request-log segments nothing needs any more, once a
/// minute; at shutdown waits for the log's last group commit.
struct RequestSweeper: Service {
    let jobs: JobTable

    func run() async throws {
        // Graceful shutdown does not cancel by itself: turn it into cancellation so the sleep ends at once.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(60))
                jobs.sweep()
                await jobs.sweepLog()
            }
        }
        await jobs.log?.flush()
    }
}
