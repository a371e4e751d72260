import Foundation
import NIOCore
import NIOPosix
public import NIOSSL

/// Runs one closed-loop load: warm-up, then the measured window, with a progress line on stderr once a second.
public enum LoadRunner {
    public static func run(scenario: String, configuration: LoadConfiguration) async throws -> LoadReport {
        precondition(configuration.connections > 0 && configuration.threads > 0)
        let url = configuration.plan.url
        let address = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
        let tls = url.tls ? try makeTLSContext(caFile: configuration.caFile, insecure: configuration.insecure) : nil
        let threads = min(configuration.threads, configuration.connections)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        do {
            let report = try await run(
                scenario: scenario,
                configuration: configuration,
                group: group,
                threads: threads,
                address: address,
                tls: tls
            )
            try await group.shutdownGracefully()
            return report
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// A client TLS context that trusts `caFile` (PEM) or the system roots.
    public static func makeTLSContext(caFile: String?, insecure: Bool) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile {
            tls.trustRoots = .file(caFile)
        }
        if insecure {
            tls.certificateVerification = .none
        }
        return try NIOSSLContext(configuration: tls)
    }

    private static func run(
        scenario: String,
        configuration: LoadConfiguration,
        group: MultiThreadedEventLoopGroup,
        threads: Int,
        address: SocketAddress,
        tls: NIOSSLContext?
    ) async throws -> LoadReport {
        var workers: [NIOLoopBound<LoadWorker>] = []
        var index = 0
        for loop in group.makeIterator() {
            let share = configuration.connections / threads + (index < configuration.connections % threads ? 1 : 0)
            let seed = configuration.seed &+ UInt64(index)
            let worker = try await loop.submit {
                NIOLoopBound(
                    LoadWorker(
                        loop: loop,
                        configuration: configuration,
                        address: address,
                        tls: tls,
                        connectionCount: share,
                        seed: seed
                    ),
                    eventLoop: loop
                )
            }.get()
            workers.append(worker)
            index += 1
        }

        let progress = ProgressLine(enabled: configuration.progress, workers: workers)
        for worker in workers {
            try await worker.eventLoop.submit { worker.value.start() }.get()
        }
        if configuration.warmupSeconds > 0 {
            try await progress.run(label: "warm-up", seconds: configuration.warmupSeconds)
        }

        let startedAt = Date()
        let windowStart = ContinuousClock.now
        let cpuStart = processCPUSeconds()
        for worker in workers {
            try await worker.eventLoop.submit { worker.value.beginMeasuring() }.get()
        }
        try await progress.run(label: "measure", seconds: configuration.durationSeconds)
        var stats = LoadStats()
        for worker in workers {
            stats.merge(try await worker.eventLoop.submit { worker.value.stop() }.get())
        }
        let elapsed = ContinuousClock.now - windowStart
        let cpu = processCPUSeconds() - cpuStart
        progress.finish()
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        var report = LoadReport(
            scenario: scenario,
            configuration: configuration,
            stats: stats,
            durationSeconds: seconds,
            startedAt: startedAt
        )
        report.clientCPUSeconds = (cpu * 100).rounded() / 100
        return report
    }

    /// User + system CPU time of this process so far: what the load generator itself cost.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
