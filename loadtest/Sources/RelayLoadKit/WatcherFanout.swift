import Foundation
public import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix
public import NIOSSL
import NIOWebSocket

/// Many watchers of one job — SSE status streams, `/ws` WebSockets, or both — each on its own connection, until the
/// terminal event. Per watcher: time to its first event, the lag of every live log-line event (receive time minus
/// the relay's own timestamp of that line), and when the terminal event arrived.
public enum WatcherFanout {
    /// Which transports the watchers use: one, or `mixed` (watchers alternate SSE, WS).
    public enum Mix: String, Codable, Sendable, CaseIterable {
        case sse, ws, mixed

        func transport(ofWatcher index: Int) -> WatcherTransport {
            switch self {
            case .sse: .sse
            case .ws: .ws
            case .mixed: index % 2 == 0 ? .sse : .ws
            }
        }
    }

    /// Where the watchers connect: the SSE request and the WebSocket upgrade plus the id to watch.
    public struct Target: Sendable {
        public var sse: RequestPlan
        public var ws: RequestPlan
        public var requestID: String

        /// `statusStream` is `…/requests/<id>/status/stream[?…]`; the WebSocket is `/ws` on the same server.
        public init?(statusStream: TargetURL, headers: [String]) {
            let path = statusStream.target.split(separator: "?").first.map(String.init) ?? statusStream.target
            let parts = path.split(separator: "/")
            guard let index = parts.firstIndex(of: "requests"), index + 1 < parts.count else { return nil }
            requestID = String(parts[index + 1])
            sse = RequestPlan(url: statusStream, headers: headers + ["Accept: text/event-stream"])
            ws = RequestPlan(url: statusStream.with(target: "/ws"), headers: headers)
        }
    }

    /// One histogram of lags in microseconds (1 µs … 10 min, 3 significant digits).
    public static func makeLagHistogram() -> Histogram<UInt64> {
        Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    }

    /// What the watchers of one process saw; processes' samples are merged into one report.
    public struct Sample: Codable, Sendable {
        public var watchers: [String: Int] = [:]
        /// Watchers that received the terminal event, by transport.
        public var completed: [String: Int] = [:]
        /// Connect start → first event, per watcher that got one (µs).
        public var firstEventMicroseconds: [UInt64] = []
        /// Wall-clock (Unix µs) arrival of the terminal event per completed watcher: the spread is max − min.
        public var terminalUnixMicroseconds: [Int64] = []
        /// Status events per completed watcher.
        public var events: [Int] = []
        public var replayed = 0
        /// Live log-line lags by transport (µs).
        public var lag: [String: Histogram<UInt64>] = [:]
        /// Live log-line lags of all transports by the Unix second of the relay's timestamp (µs, 2 digits), so the
        /// merged report can keep the events produced after the last watcher attached.
        public var lagBySecond: [String: Histogram<UInt64>] = [:]
        /// Wall-clock (Unix µs) of the first and the last watcher's first event.
        public var firstAttachUnixMicroseconds = Int64.max
        public var lastAttachUnixMicroseconds = Int64.min
        public var errors: [String: Int] = [:]

        public init() {}

        mutating func add(_ result: WatcherResult) {
            let transport = result.transport.rawValue
            watchers[transport, default: 0] += 1
            if let error = result.error {
                errors["\(transport) \(error)", default: 0] += 1
            }
            if let first = result.firstEventMicroseconds { firstEventMicroseconds.append(first) }
            if let first = result.firstEventUnixMicroseconds {
                firstAttachUnixMicroseconds = min(firstAttachUnixMicroseconds, first)
                lastAttachUnixMicroseconds = max(lastAttachUnixMicroseconds, first)
            }
            if let terminal = result.terminalUnixMicroseconds {
                completed[transport, default: 0] += 1
                terminalUnixMicroseconds.append(terminal)
                events.append(result.events)
            }
            replayed += result.replayed
            var histogram = lag[transport] ?? makeLagHistogram()
            var second: UInt64 = 0
            var secondHistogram: Histogram<UInt64>?
            for sample in result.lagSamples {
                let value = max(1, sample & 0xFFFF_FFFF)
                _ = histogram.record(value)
                if sample >> 32 != second {
                    if let secondHistogram { lagBySecond[String(second)] = secondHistogram }
                    second = sample >> 32
                    secondHistogram = lagBySecond[String(second)] ?? makeSecondHistogram()
                }
                _ = secondHistogram?.record(value)
            }
            if let secondHistogram { lagBySecond[String(second)] = secondHistogram }
            lag[transport] = histogram
        }

        public mutating func merge(_ other: Sample) {
            watchers.merge(other.watchers, uniquingKeysWith: +)
            completed.merge(other.completed, uniquingKeysWith: +)
            firstEventMicroseconds += other.firstEventMicroseconds
            terminalUnixMicroseconds += other.terminalUnixMicroseconds
            events += other.events
            replayed += other.replayed
            for (transport, histogram) in other.lag {
                var mine = lag[transport] ?? makeLagHistogram()
                mine.add(histogram)
                lag[transport] = mine
            }
            for (second, histogram) in other.lagBySecond {
                var mine = lagBySecond[second] ?? makeSecondHistogram()
                mine.add(histogram)
                lagBySecond[second] = mine
            }
            firstAttachUnixMicroseconds = min(firstAttachUnixMicroseconds, other.firstAttachUnixMicroseconds)
            lastAttachUnixMicroseconds = max(lastAttachUnixMicroseconds, other.lastAttachUnixMicroseconds)
            errors.merge(other.errors, uniquingKeysWith: +)
        }
    }

    static func makeSecondHistogram() -> Histogram<UInt64> {
        Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .two)
    }

    /// Relay memory with the watchers attached and idle (a single process of watchers).
    public struct Memory: Codable, Sendable {
        public var pids: [Int32]
        /// Watchers that saw their first event, i.e. were subscribed, when the attached figure was read.
        public var attached: Int
        public var rssBeforeKiB: Int
        public var rssAttachedKiB: Int
        public var rssSettledKiB: Int
        public var settleSeconds: Double
        public var rssAfterCloseKiB: Int
        /// (settled − before) / attached.
        public var bytesPerConnection: Double

        enum CodingKeys: String, CodingKey {
            case pids, attached
            case rssBeforeKiB = "rss_before_kib"
            case rssAttachedKiB = "rss_attached_kib"
            case rssSettledKiB = "rss_settled_kib"
            case settleSeconds = "settle_s"
            case rssAfterCloseKiB = "rss_after_close_kib"
            case bytesPerConnection = "bytes_per_connection"
        }

        /// The sum of the processes' VmRSS, in KiB, from /proc/<pid>/status.
        public static func rssKiB(pids: [Int32]) throws -> Int {
            try pids.map(rssKiB(pid:)).reduce(0, +)
        }

        static func rssKiB(pid: Int32) throws -> Int {
            let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
            else { throw IOError(errnoCode: ENOENT, reason: "no VmRSS in /proc/\(pid)/status") }
            return kib
        }
    }

    /// The merged result, for people and scripts.
    public struct Report: Codable, Sendable {
        public var url: String
        public var transport: Mix
        public var processes: Int
        public var watchers: [String: Int]
        public var completed: [String: Int]
        public var allCompleted: Bool
        public var errors: [String: Int]
        public var eventsTotal: Int
        public var eventsPerWatcherMin: Int
        public var eventsPerWatcherMax: Int
        public var replayedEvents: Int
        public var firstEventMs: [String: Double]
        /// Live log-line lag by transport and "all": receive time − the relay's timestamp of the line.
        public var lagMs: [String: [String: Double]]
        /// Seconds from the first to the last watcher's first event (attaching them all).
        public var attachSeconds: Double
        /// The lag of events the relay produced after the last watcher attached (from the next whole second on).
        public var lagAfterAttachMs: [String: Double]
        /// Terminal event arrival − the first watcher's terminal arrival, over all completed watchers.
        public var terminalAfterFirstMs: [String: Double]
        /// Time between the first and the last watcher receiving the terminal event.
        public var endSpreadMs: Double
        public var wallSeconds: Double
        public var memory: Memory?

        enum CodingKeys: String, CodingKey {
            case url, transport, processes, watchers, completed, errors, memory
            case allCompleted = "all_completed"
            case eventsTotal = "events_total"
            case eventsPerWatcherMin = "events_per_watcher_min"
            case eventsPerWatcherMax = "events_per_watcher_max"
            case replayedEvents = "replayed_events"
            case firstEventMs = "first_event_ms"
            case lagMs = "lag_ms"
            case attachSeconds = "attach_s"
            case lagAfterAttachMs = "lag_after_attach_ms"
            case terminalAfterFirstMs = "terminal_after_first_ms"
            case endSpreadMs = "end_spread_ms"
            case wallSeconds = "wall_s"
        }

        public init(url: String, transport: Mix, processes: Int, sample: Sample, wallSeconds: Double, memory: Memory? = nil) {
            self.url = url
            self.transport = transport
            self.processes = processes
            watchers = sample.watchers
            completed = sample.completed
            allCompleted = sample.completed.values.reduce(0, +) == sample.watchers.values.reduce(0, +)
            errors = sample.errors
            eventsTotal = sample.events.reduce(0, +)
            eventsPerWatcherMin = sample.events.min() ?? 0
            eventsPerWatcherMax = sample.events.max() ?? 0
            replayedEvents = sample.replayed
            firstEventMs = Self.percentiles(of: sample.firstEventMicroseconds)
            var lag: [String: [String: Double]] = [:]
            var all = makeLagHistogram()
            for (transport, histogram) in sample.lag where histogram.totalCount > 0 {
                lag[transport] = Self.percentiles(histogram)
                all.add(histogram)
            }
            if sample.lag.count > 1 { lag["all"] = Self.percentiles(all) }
            lagMs = lag
            attachSeconds =
                sample.lastAttachUnixMicroseconds >= sample.firstAttachUnixMicroseconds
                ? Double(sample.lastAttachUnixMicroseconds - sample.firstAttachUnixMicroseconds) / 1e6 : 0
            var steady = makeSecondHistogram()
            let firstSteadySecond = sample.lastAttachUnixMicroseconds / 1_000_000 + 1
            for (second, histogram) in sample.lagBySecond where (Int64(second) ?? 0) >= firstSteadySecond {
                steady.add(histogram)
            }
            lagAfterAttachMs = Self.percentiles(steady)
            let first = sample.terminalUnixMicroseconds.min() ?? 0
            terminalAfterFirstMs = Self.percentiles(of: sample.terminalUnixMicroseconds.map { UInt64($0 - first) })
            endSpreadMs = Double((sample.terminalUnixMicroseconds.max() ?? 0) - first) / 1000
            self.wallSeconds = wallSeconds
            self.memory = memory
        }

        static func percentiles(of values: [UInt64]) -> [String: Double] {
            var histogram = makeLagHistogram()
            for value in values { _ = histogram.record(max(1, value)) }
            return percentiles(histogram)
        }

        static func percentiles(_ histogram: Histogram<UInt64>) -> [String: Double] {
            guard histogram.totalCount > 0 else { return [:] }
            var result = ["count": Double(histogram.totalCount), "max": Double(histogram.max) / 1000]
            for (name, percentile) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)] {
                result[name] = Double(histogram.valueAtPercentile(percentile)) / 1000
            }
            return result
        }

        public func text() -> String {
            func line(_ values: [String: Double]) -> String {
                values.isEmpty
                    ? "-"
                    : ["p50", "p90", "p99", "p99.9", "max"].map { "\($0) \(values[$0] ?? 0)" }.joined(separator: "  ")
                        + "  (n=\(Int(values["count"] ?? 0)))"
            }
            func counts(_ values: [String: Int]) -> String {
                values.isEmpty ? "0" : values.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            }
            var text = """
                \(transport.rawValue) fan-out \(url)
                  watchers \(counts(watchers)) in \(processes) processes; terminal event received: \(counts(completed))\(allCompleted ? " (all)" : " (NOT all)"), \(String(format: "%.2f", wallSeconds)) s
                  status events \(eventsTotal) (per completed watcher \(eventsPerWatcherMin)…\(eventsPerWatcherMax)), replayed (older than the subscription, not in lag) \(replayedEvents)
                  first event ms     \(line(firstEventMs))
                """
            for key in lagMs.keys.sorted() {
                text += "\n  lag ms \(key.padding(toLength: 4, withPad: " ", startingAt: 0))       \(line(lagMs[key] ?? [:]))"
            }
            text += """

                  attaching all watchers took \(String(format: "%.2f", attachSeconds)) s; lag of events after that:
                  lag ms after attach \(line(lagAfterAttachMs))
                  terminal after first ms  \(line(terminalAfterFirstMs))
                  end spread \(String(format: "%.3f", endSpreadMs)) ms
                  errors \(counts(errors))
                """
            if let memory {
                text += """

                      relay RSS KiB: before \(memory.rssBeforeKiB), \(memory.attached) attached \(memory.rssAttachedKiB), after \(memory.settleSeconds) s \(memory.rssSettledKiB), after close \(memory.rssAfterCloseKiB)
                      bytes per idle connection \(String(format: "%.0f", memory.bytesPerConnection))
                    """
            }
            return text
        }

        public func json() -> String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        }
    }

    /// Opens `watchers` connections (in batches, so the listen backlog is not flooded) and waits up to
    /// `timeoutSeconds` for all of them to end. With `memoryOf` (the server's pids, summed), reads its RSS before connecting,
    /// once every watcher has its first event, and `settleSeconds` later, then closes them all.
    public static func watch(
        target: Target,
        mix: Mix,
        watchers: Int,
        threads: Int,
        tls: NIOSSLContext?,
        timeoutSeconds: Double,
        memoryOf pids: [Int32]? = nil,
        settleSeconds: Double = 5,
        sourceAddresses: Int = 1
    ) async throws -> (Sample, Memory?) {
        let url = target.sse.url
        let address = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let sseRequest = target.sse.encode(body: nil, allocator: ByteBufferAllocator())
        let wsHead = webSocketHead(target.ws)
        let requestID = target.requestID
        let serverHostname = url.hostIsIPAddress ? nil : url.host
        let deadline = NIODeadline.now() + .milliseconds(Int64(timeoutSeconds * 1000))
        let attached = AttachCounter()
        let rssBefore = try pids.map { try Memory.rssKiB(pids: $0) }
        var results: [EventLoopFuture<WatcherResult>] = []
        var channels: [EventLoopFuture<any Channel>] = []
        var started = 0
        while started < watchers {
            let batch = min(256, watchers - started)
            var connects: [EventLoopFuture<Void>] = []
            for index in started..<started + batch {
                let loop = group.next()
                let promise = loop.makePromise(of: WatcherResult.self)
                results.append(promise.futureResult)
                let transport = mix.transport(ofWatcher: index)
                var bootstrap = ClientBootstrap(group: loop)
                if sourceAddresses > 1 {
                    // Spread over loopback source addresses 127.0.1.1…, as many clients would be (per-IP caps).
                    let k = index % min(sourceAddresses, 250)
                    bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: "127.0.1.\(1 + k)", port: 0))
                }
                let connect = bootstrap
                    .connectTimeout(.seconds(10))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            let pipeline = channel.pipeline.syncOperations
                            if let tls {
                                try pipeline.addHandler(
                                    NIOSSLClientHandler(context: tls, serverHostname: serverHostname)
                                )
                            }
                            let state = WatcherState(
                                transport: transport,
                                deadline: deadline,
                                attached: pids == nil ? nil : attached,
                                promise: promise
                            )
                            switch transport {
                            case .sse:
                                try pipeline.addHandler(SSEWatcherHandler(request: sseRequest, state: state))
                            case .ws:
                                try addWebSocketHandlers(pipeline, channel: channel, head: wsHead, requestID: requestID, state: state)
                            }
                        }
                    }
                    .connect(to: address)
                channels.append(connect)
                connects.append(connect.map { _ in () }.recover { _ in () })
            }
            try await EventLoopFuture.andAllComplete(connects, on: group.next()).get()
            started += batch
        }
        var memory: Memory?
        if let pids, let rssBefore {
            let limit = ContinuousClock.now + .seconds(timeoutSeconds)
            while attached.settled < watchers && ContinuousClock.now < limit {
                try await Task.sleep(for: .milliseconds(100))
            }
            let rssAttached = try Memory.rssKiB(pids: pids)
            try await Task.sleep(for: .milliseconds(Int64(settleSeconds * 1000)))
            let rssSettled = try Memory.rssKiB(pids: pids)
            let count = attached.attached
            for channel in channels { channel.whenSuccess { $0.close(promise: nil) } }
            for future in results { _ = try await future.get() }
            try await Task.sleep(for: .milliseconds(Int64(settleSeconds * 1000)))
            memory = Memory(
                pids: pids,
                attached: count,
                rssBeforeKiB: rssBefore,
                rssAttachedKiB: rssAttached,
                rssSettledKiB: rssSettled,
                settleSeconds: settleSeconds,
                rssAfterCloseKiB: try Memory.rssKiB(pids: pids),
                bytesPerConnection: Double(rssSettled - rssBefore) * 1024 / Double(max(1, count))
            )
        }
        var sample = Sample()
        for future in results { sample.add(try await future.get()) }
        try await group.shutdownGracefully()
        return (sample, memory)
    }

    private static func webSocketHead(_ plan: RequestPlan) -> HTTPRequestHead {
        var headers = HTTPHeaders([("Host", plan.url.authority), ("User-Agent", "relay-load")])
        for line in plan.headers {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.add(
                name: String(line[..<colon]),
                value: line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            )
        }
        return HTTPRequestHead(version: .http1_1, method: .GET, uri: plan.url.target, headers: headers)
    }

    private static func addWebSocketHandlers(
        _ pipeline: ChannelPipeline.SynchronousOperations,
        channel: any Channel,
        head: HTTPRequestHead,
        requestID: String,
        state: WatcherState
    ) throws {
        let bound = NIOLoopBound(state, eventLoop: channel.eventLoop)
        let requester = WebSocketUpgradeRequestHandler(head: head, state: state)
        let boundRequester = NIOLoopBound(requester, eventLoop: channel.eventLoop)
        let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 23) { channel, _ in
            channel.eventLoop.makeCompletedFuture {
                boundRequester.value.upgradeSucceeded()
                let sync = channel.pipeline.syncOperations
                _ = sync.removeHandler(name: WebSocketUpgradeRequestHandler.name)
                try sync.addHandler(WebSocketWatcherHandler(requestID: requestID, state: bound.value))
            }
        }
        try pipeline.addHTTPClientHandlers(
            leftOverBytesStrategy: .forwardBytes,
            withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
        )
        try pipeline.addHandler(requester, name: WebSocketUpgradeRequestHandler.name)
    }
}
