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

/// The process-wide log handler (bootstrapped once, at the first `run`; later runs in the same process — tests —
/// keep the first format).
enum RelayLogging {
    private static let done = Mutex(false)

    static func bootstrap(format: LogFormat, level: Logger.Level) {
        let first = done.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        LoggingSystem.bootstrap { label in RelayLogHandler(label: label, format: format, level: level) }
    }
}
