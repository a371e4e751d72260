#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One operation timed on the calling thread: ns/op over runs of at least `minimumRunTime` each, after a warm-up.
///
/// Each run is timed twice: by the wall clock, and by the thread's CPU clock, which leaves out the time the thread
/// spent descheduled. On a shared 2-core machine (other builds running) the CPU figure is the steadier one.
struct OperationBenchmark {
    /// The figures of one benchmark: ns/op of each run, by CPU time and by wall time.
    struct Result {
        let name: String
        let cpuNanosecondsPerRun: [Double]
        let wallNanosecondsPerRun: [Double]
        let iterationsPerRun: [Int]

        var cpuMedian: Double { Self.median(cpuNanosecondsPerRun) }
        var cpuFastest: Double { cpuNanosecondsPerRun.min() ?? .nan }
        var cpuSlowest: Double { cpuNanosecondsPerRun.max() ?? .nan }
        var wallMedian: Double { Self.median(wallNanosecondsPerRun) }

        private static func median(_ values: [Double]) -> Double {
            values.isEmpty ? .nan : values.sorted()[values.count / 2]
        }
    }

    let name: String
    /// Performs the operation `count` times. The loop lives in the body so that the call through the closure is
    /// paid once per batch, not once per operation.
    let body: (_ count: Int) -> Void

    func run(runs: Int, minimumRunTime: Duration, warmUp: Duration) -> Result {
        let clock = ContinuousClock()
        // Grow the batch until one takes ~10 ms, so the clock's own cost is negligible; this is also the warm-up.
        var batch = 1
        while clock.measure({ body(batch) }) < .milliseconds(10), batch < 1 << 30 {
            batch *= 2
        }
        let warmUpEnd = clock.now.advanced(by: warmUp)
        while clock.now < warmUpEnd { body(batch) }

        var cpu: [Double] = []
        var wall: [Double] = []
        var iterations: [Int] = []
        for _ in 0..<runs {
            var count = 0
            let start = clock.now
            let cpuStart = Self.threadCPUNanoseconds()
            var elapsed = Duration.zero
            repeat {
                body(batch)
                count += batch
                elapsed = start.duration(to: clock.now)
            } while elapsed < minimumRunTime
            cpu.append((Self.threadCPUNanoseconds() - cpuStart) / Double(count))
            wall.append(elapsed.nanoseconds / Double(count))
            iterations.append(count)
        }
        return Result(name: name, cpuNanosecondsPerRun: cpu, wallNanosecondsPerRun: wall, iterationsPerRun: iterations)
    }

    /// CPU time consumed by the calling thread so far.
    static func threadCPUNanoseconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Double(now.tv_sec) * 1e9 + Double(now.tv_nsec)
    }
}

/// Keeps a value alive so the optimiser cannot drop the work that produced it.
@inline(never)
@_optimize(none)
func blackHole<T>(_ value: T) {}

extension Duration {
    /// The duration as a floating-point count of nanoseconds.
    var nanoseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1e9 + Double(attoseconds) / 1e9
    }
}
