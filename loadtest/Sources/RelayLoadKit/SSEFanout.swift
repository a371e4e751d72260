import Foundation
import Histogram
import NIOCore
import NIOPosix
public import NIOSSL

/// Many Server-Sent-Events watchers of one job: each opens its own connection, reads the stream until the
/// server closes it after the terminal event, and reports when its first event and its end arrived.
public enum SSEFanout {
    /// What the watchers of one process saw; processes' samples are merged into one report.
    public struct Sample: Codable, Sendable {
        /// Connect start → first complete event, per watcher that got one (microseconds).
        public var firstEventMicroseconds: [UInt64] = []
        /// Wall-clock time (Unix microseconds) at which each completed stream ended: the fan-out spread across
        /// processes is max − min of these.
        public var endUnixMicroseconds: [Int64] = []
        /// Events received per completed watcher.
        public var events: [Int] = []
        public var errors: [String: Int] = [:]
        public var watchers = 0

        public init() {}

        public mutating func merge(_ other: Sample) {
            firstEventMicroseconds += other.firstEventMicroseconds
            endUnixMicroseconds += other.endUnixMicroseconds
            events += other.events
            errors.merge(other.errors, uniquingKeysWith: +)
            watchers += other.watchers
        }
    }

    /// The merged result, for people and scripts.
    public struct Report: Codable, Sendable {
        public var url: String
        public var processes: Int
        public var watchers: Int
        public var completed: Int
        public var errors: [String: Int]
        public var eventsTotal: Int
        public var eventsPerWatcherMin: Int
        public var eventsPerWatcherMax: Int
        public var firstEventMs: [String: Double]
        /// Time between the first and the last watcher seeing the end of the stream.
        public var endSpreadMs: Double
        public var wallSeconds: Double

        enum CodingKeys: String, CodingKey {
            case url, processes, watchers, completed, errors
            case eventsTotal = "events_total"
            case eventsPerWatcherMin = "events_per_watcher_min"
            case eventsPerWatcherMax = "events_per_watcher_max"
            case firstEventMs = "first_event_ms"
            case endSpreadMs = "end_spread_ms"
            case wallSeconds = "wall_s"
        }

        public init(url: String, processes: Int, sample: Sample, wallSeconds: Double) {
            self.url = url
            self.processes = processes
            watchers = sample.watchers
            completed = sample.endUnixMicroseconds.count
            errors = sample.errors
            eventsTotal = sample.events.reduce(0, +)
            eventsPerWatcherMin = sample.events.min() ?? 0
            eventsPerWatcherMax = sample.events.max() ?? 0
            var histogram = Histogram<UInt64>(
                lowestDiscernibleValue: 1,
                highestTrackableValue: 3_600_000_000,
                numberOfSignificantValueDigits: .three
            )
            for value in sample.firstEventMicroseconds { _ = histogram.record(max(1, value)) }
            if histogram.totalCount > 0 {
                firstEventMs = [
                    "p50": Double(histogram.valueAtPercentile(50)) / 1000,
                    "p90": Double(histogram.valueAtPercentile(90)) / 1000,
                    "p99": Double(histogram.valueAtPercentile(99)) / 1000,
                    "max": Double(histogram.max) / 1000,
                ]
            } else {
                firstEventMs = [:]
            }
            if let low = sample.endUnixMicroseconds.min(), let high = sample.endUnixMicroseconds.max() {
                endSpreadMs = Double(high - low) / 1000
            } else {
                endSpreadMs = 0
            }
            self.wallSeconds = wallSeconds
        }

        public func text() -> String {
            let errorText =
                errors.isEmpty
                ? "0" : errors.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
            return """
                sse-fanout \(url)
                  \(watchers) watchers in \(processes) processes, \(completed) streams completed, \(String(format: "%.2f", wallSeconds)) s
                  events \(eventsTotal) (per watcher \(eventsPerWatcherMin)…\(eventsPerWatcherMax))
                  first event ms  p50 \(firstEventMs["p50"] ?? 0)  p90 \(firstEventMs["p90"] ?? 0)  p99 \(firstEventMs["p99"] ?? 0)  max \(firstEventMs["max"] ?? 0)
                  end of stream spread \(String(format: "%.3f", endSpreadMs)) ms
                  errors \(errorText)
                """
        }

        public func json() -> String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        }
    }

    /// Opens `watchers` streams (in batches, so the listen backlog is not flooded) and waits up to
    /// `timeoutSeconds` for all of them to end.
    public static func watch(
        plan: RequestPlan,
        watchers: Int,
        threads: Int,
        tls: NIOSSLContext?,
        timeoutSeconds: Double
    ) async throws -> Sample {
        let url = plan.url
        let address = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let request = plan.encode(body: nil, allocator: ByteBufferAllocator())
        let serverHostname = url.hostIsIPAddress ? nil : url.host
        let deadline = NIODeadline.now() + .milliseconds(Int64(timeoutSeconds * 1000))
        var results: [EventLoopFuture<WatcherResult>] = []
        var started = 0
        while started < watchers {
            let batch = min(256, watchers - started)
            var connects: [EventLoopFuture<Void>] = []
            for _ in 0..<batch {
                let loop = group.next()
                let promise = loop.makePromise(of: WatcherResult.self)
                results.append(promise.futureResult)
                let connect = ClientBootstrap(group: loop)
                    .connectTimeout(.seconds(10))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            let pipeline = channel.pipeline.syncOperations
                            if let tls {
                                try pipeline.addHandler(
                                    NIOSSLClientHandler(context: tls, serverHostname: serverHostname)
                                )
                            }
                            try pipeline.addHandler(
                                SSEWatcherHandler(request: request, deadline: deadline, promise: promise)
                            )
                        }
                    }
                    .connect(to: address)
                connects.append(connect.map { _ in () }.recover { _ in () })
            }
            try await EventLoopFuture.andAllComplete(connects, on: group.next()).get()
            started += batch
        }
        var sample = Sample()
        sample.watchers = watchers
        for future in results {
            let result = try await future.get()
            if let error = result.error {
                sample.errors[error, default: 0] += 1
                continue
            }
            if let first = result.firstEventMicroseconds { sample.firstEventMicroseconds.append(first) }
            sample.endUnixMicroseconds.append(result.endUnixMicroseconds)
            sample.events.append(result.events)
        }
        try await group.shutdownGracefully()
        return sample
    }
}
