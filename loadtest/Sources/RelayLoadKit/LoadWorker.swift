import NIOCore
import NIOPosix
import NIOSSL

/// One event loop's share of the connections and its counters. Loop-confined: the runner reaches it only
/// through `NIOLoopBound` and `submit`.
final class LoadWorker {
    enum Phase {
        case warmingUp
        case measuring
        case stopped
    }

    /// Counts over the whole run (warm-up included) for the progress line.
    struct Progress: Sendable {
        var responses = 0
        var errors = 0
        var openConnections = 0
    }

    private let loop: any EventLoop
    private let configuration: LoadConfiguration
    private let address: SocketAddress
    private let tls: NIOSSLContext?
    private let connectionCount: Int
    private let timeoutNanoseconds: UInt64
    private let parserOptions: ResponseParser.Options
    private var source: RequestSource
    private(set) var phase = Phase.warmingUp
    private var stats = LoadStats()
    private(set) var progress = Progress()
    private var open: [ObjectIdentifier: LoadConnectionHandler] = [:]
    private var sweeper: RepeatedTask?

    var isRunning: Bool { phase != .stopped }
    var newConnectionPerRequest: Bool { configuration.newConnectionPerRequest }

    init(
        loop: any EventLoop,
        configuration: LoadConfiguration,
        address: SocketAddress,
        tls: NIOSSLContext?,
        connectionCount: Int,
        seed: UInt64
    ) {
        self.loop = loop
        self.configuration = configuration
        self.address = address
        self.tls = tls
        self.connectionCount = connectionCount
        self.timeoutNanoseconds = UInt64(max(0.001, configuration.timeoutSeconds) * 1e9)
        self.parserOptions = ResponseParser.Options(watchedHeader: configuration.watchedHeader)
        self.source = RequestSource(plan: configuration.plan, seed: seed, allocator: ByteBufferAllocator())
    }

    // MARK: - Control (from the runner)

    func start() {
        for _ in 0..<connectionCount { connect() }
        let bound = NIOLoopBound(self, eventLoop: loop)
        sweeper = loop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
            bound.value.sweepTimeouts()
        }
    }

    func beginMeasuring() {
        stats = LoadStats()
        phase = .measuring
    }

    /// Stops sending, closes every connection and hands over what the measured window counted.
    func stop() -> LoadStats {
        phase = .stopped
        sweeper?.cancel()
        sweeper = nil
        for handler in open.values { handler.close() }
        return stats
    }

    // MARK: - Connections

    private func connect() {
        guard isRunning else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        let tls = self.tls
        let serverHostname = configuration.plan.url.hostIsIPAddress ? nil : configuration.plan.url.host
        let parserOptions = self.parserOptions
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(Int64(max(1, configuration.timeoutSeconds.rounded(.up)))))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls {
                        try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    }
                    try pipeline.addHandler(LoadConnectionHandler(worker: bound.value, parserOptions: parserOptions))
                }
            }
            .connect(to: address)
            .assumeIsolated()
            .whenFailure { [self] error in
                recordFailure(kind: "connect")
                reconnect(afterError: true)
            }
    }

    func connectionActive(_ handler: LoadConnectionHandler) {
        open[ObjectIdentifier(handler)] = handler
        progress.openConnections += 1
        if phase == .measuring { stats.connectionsOpened += 1 }
    }

    func connectionInactive(_ handler: LoadConnectionHandler, afterError: Bool) {
        if open.removeValue(forKey: ObjectIdentifier(handler)) != nil {
            progress.openConnections -= 1
        }
        reconnect(afterError: afterError)
    }

    /// Replaces a closed connection; after an error, a short pause keeps a dead server from spinning the loop.
    private func reconnect(afterError: Bool) {
        guard isRunning else { return }
        if afterError {
            loop.assumeIsolated().scheduleTask(in: .milliseconds(20)) { [self] in connect() }
        } else {
            connect()
        }
    }

    private func sweepTimeouts() {
        let now = NIODeadline.now().uptimeNanoseconds
        for handler in open.values where handler.inFlight && now &- handler.requestStartedAt > timeoutNanoseconds {
            handler.timeOut()
        }
    }

    // MARK: - Requests (from the handlers)

    func nextRequest(allocator: ByteBufferAllocator) -> ByteBuffer {
        source.next(allocator: allocator)
    }

    func record(_ response: ResponseSummary, latencyNanoseconds: UInt64) {
        progress.responses += 1
        guard phase == .measuring else { return }
        stats.record(response, latencyNanoseconds: latencyNanoseconds, watching: parserOptions.watchedHeader != nil)
    }

    func recordFailure(kind: String) {
        guard isRunning else { return }
        progress.errors += 1
        guard phase == .measuring else { return }
        stats.recordError(kind)
    }
}

@available(*, unavailable)
extension LoadWorker: Sendable {}
