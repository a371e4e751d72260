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

/// Reloads the certificate and key on SIGHUP: new connections get the new context, open ones keep theirs. A
/// reload that fails (unreadable or mismatched files) keeps the old certificate and logs why.
struct CertificateReloader: Service {
    let context: ReloadableTLSContext
    let logger: Logger
    let load: @Sendable () throws -> NIOSSLContext

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                do {
                    context.replace(with: try load())
                    logger.notice("TLS certificate reloaded (SIGHUP)")
                } catch {
                    logger.error(
                        "TLS certificate reload failed; keeping the current one",
                        metadata: ["error": "\(error)"]
                    )
                }
            }
        }
    }
}
