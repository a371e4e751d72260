import Foundation
import NIOCore
import NIOPosix
import RelayCore

/// `relay-micro`: the speed targets measured and printed (never asserted). README.md has the figures.
@main
struct RelayMicro {
    static func main() {
        let options: MicroOptions
        do {
            options = try MicroOptions(arguments: Array(CommandLine.arguments.dropFirst()))
        } catch {
            FileHandle.standardError.write(Data("relay-micro: \(error)\n\n\(MicroOptions.usage)\n".utf8))
            exit(2)
        }
        guard let catalogBytes = FileManager.default.contents(atPath: options.catalogPath) else {
            fail("cannot read the model catalog at \(options.catalogPath) (use --catalog PATH)")
        }
        let catalog: ModelCatalog
        do {
            catalog = try ModelCatalog(json: [UInt8](catalogBytes))
        } catch {
            fail("\(options.catalogPath): \(error)")
        }
        // Any fixed secret: the figures do not depend on its value.
        let hasher = KeyedHasher(secret: Array(repeating: 0x5A, count: KeyedHasher.secretSize))
        let body = SubmitBody.fluxDev

        if let iterations = options.profileIterations {
            // Untimed, for `valgrind --tool=callgrind`: only the full path, so the profile is all about it.
            var keys = 0
            for _ in 0..<iterations where body.prepare(catalog: catalog, hasher: hasher) != nil { keys += 1 }
            print("prepared \(keys) of \(iterations) requests")
            return
        }
        print("relay-micro: catalog \(options.catalogPath), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        if options.benchmarks.contains(.canonicalize) {
            runCanonicalize(CanonicalizeBenchmark(catalog: catalog, body: body, hasher: hasher), options: options)
        }
        if options.benchmarks.contains(.fanOut) {
            let benchmark = FanOutBenchmark(
                catalog: catalog,
                body: body,
                hasher: hasher,
                waiters: options.waiters,
                submitters: options.submitters
            )
            runFanOut(benchmark, options: options)
        }
    }

    private static func runCanonicalize(_ benchmark: CanonicalizeBenchmark, options: MicroOptions) {
        print(
            "\nA. canonicalise + key of a typical \(benchmark.body.bytes.count)-byte \(benchmark.body.modelID) submit"
        )
        print("   one thread; warm-up 0.5 s, then \(options.runs) runs of ≥ 1 s each; ns/op by thread CPU time")
        print("   (median, min, max over the runs) and by wall-clock time (median)")
        print("   " + pad("operation", 68) + pad("cpu med", 10) + pad("min", 10) + pad("max", 10) + "wall med")
        let operations: [OperationBenchmark]
        do {
            operations = try benchmark.operations()
        } catch {
            fail(error.description)
        }
        for operation in operations {
            let result = operation.run(runs: options.runs, minimumRunTime: .seconds(1), warmUp: .milliseconds(500))
            print(
                "   " + pad(result.name, 68) + pad(format(result.cpuMedian), 10) + pad(format(result.cpuFastest), 10)
                    + pad(format(result.cpuSlowest), 10) + format(result.wallMedian)
            )
        }
    }

    private static func runFanOut(_ benchmark: FanOutBenchmark, options: MicroOptions) {
        print(
            "\nB. \(benchmark.waiters) concurrent identical submits from \(benchmark.submitters) threads → 1 upstream job; "
                + "completion → each waiter sees COMPLETED"
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { try? group.syncShutdownGracefully() }
        let loops = Array(group.makeIterator())
        let deliveries: [(String, FanOutBenchmark.Delivery)] = [
            ("callback on the completing thread", .direct),
            ("callback hops to 1 of 2 event loops", .eventLoops(loops)),
            ("sketch: one hop per loop, then the loop's waiters", .batchedPerLoop(loops)),
        ]
        for (name, delivery) in deliveries {
            print("   \(name): \(options.rounds) rounds; latency in µs")
            print(
                "   " + pad("round", 7) + pad("jobs", 6) + pad("coalesced", 11) + pad("submit ms", 11)
                    + pad("receive", 10) + pad("p50", 10) + pad("p99", 10) + "max"
            )
            var p99s: [Duration] = []
            for round in 1...options.rounds {
                do {
                    let result = try benchmark.run(delivery)
                    p99s.append(result.latency.p99)
                    print(
                        "   " + pad("\(round)", 7) + pad("\(result.upstreamJobs)", 6) + pad("\(result.coalesced)", 11)
                            + pad(format(result.submitPhase.nanoseconds / 1e6), 11)
                            + pad(result.receiveReturned.microsecondsText, 10)
                            + pad(result.latency.p50.microsecondsText, 10)
                            + pad(result.latency.p99.microsecondsText, 10)
                            + result.latency.max.microsecondsText
                    )
                } catch {
                    print("   \(round): \(error)")
                }
            }
            if !p99s.isEmpty {
                print("   median p99 over rounds: \(p99s.sorted()[p99s.count / 2].microsecondsText) µs")
            }
        }
    }

    private static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("relay-micro: \(message)\n".utf8))
        exit(1)
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    private static func format(_ value: Double) -> String {
        String(format: value < 100 ? "%.1f" : "%.0f", value)
    }
}
