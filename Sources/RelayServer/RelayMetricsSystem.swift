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

/// The process-wide Prometheus registry behind swift-metrics (bootstrapped once, at the first `run`).
enum RelayMetricsSystem {
    static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()
}
