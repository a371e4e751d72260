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

/// Expires media by TTL and byte budget every 30 s; at shutdown flushes pending manifests and writes the
/// result index's snapshot so the next start is fast.
struct StoreSweeper: Service {
    let expiry: BlobExpiry
    let results: ResultIndex
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await expiry.run(every: .seconds(30)) { outcome in
                        if case .failure(let error) = outcome {
                            logger.warning("store sweep failed", metadata: ["error": "\(error)"])
                        }
                    }
                }
                // A fresh snapshot keeps the rescan after a crash small.
                group.addTask {
                    while (try? await Task.sleep(for: .seconds(300))) != nil {
                        _ = try? await results.writeSnapshot()
                    }
                }
            }
        }
        await results.flush()
        do {
            _ = try await results.writeSnapshot()
        } catch {
            logger.warning("result snapshot not written", metadata: ["error": "\(error)"])
        }
    }
}
