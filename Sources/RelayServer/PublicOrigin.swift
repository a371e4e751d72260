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

/// Where media URLs point; known only once the listeners are bound (port 0 picks the port).
final class PublicOrigin: Sendable {
    private let origin = Mutex("http://127.0.0.1")

    var value: String { origin.withLock { $0 } }

    func set(_ value: String) {
        let trimmed = value.hasSuffix("/") ? String(value.dropLast()) : value
        origin.withLock { $0 = trimmed }
    }
}
