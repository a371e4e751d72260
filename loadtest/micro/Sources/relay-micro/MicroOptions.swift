import Foundation

/// `relay-micro`'s command line.
struct MicroOptions {
    /// Which benchmarks run.
    enum Benchmark: String, CaseIterable {
        case canonicalize
        case fanOut = "fan-out"
    }

    /// A command line that cannot be used.
    struct UsageError: Error, CustomStringConvertible {
        let description: String
    }

    static let usage = """
        usage: relay-micro [--catalog PATH] [--only canonicalize|fan-out] [--runs N] [--rounds N]
                           [--waiters N] [--submitters N] [--profile ITERATIONS]
          --catalog      Config/models.json of the repository (default: found from the working directory or the
                         repository this was built from)
          --runs         timed runs per operation in A, ≥ 1 s each (default 5; the median is reported)
          --rounds       rounds of B per delivery mode (default 5)
          --waiters      identical submits in B (default 10000)
          --submitters   threads submitting at once in B (default 4)
          --profile      run only A's full path this many times, untimed (for valgrind --tool=callgrind)
        """

    var catalogPath: String
    var benchmarks = Set(Benchmark.allCases)
    var runs = 5
    var rounds = 5
    var waiters = 10_000
    var submitters = 4
    var profileIterations: Int?

    init(arguments: [String]) throws(UsageError) {
        catalogPath = Self.defaultCatalogPath()
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            func value() throws(UsageError) -> String {
                guard let value = rest.popFirst() else { throw UsageError(description: "\(flag) needs a value") }
                return value
            }
            func count() throws(UsageError) -> Int {
                let text = try value()
                guard let number = Int(text), number > 0 else {
                    throw UsageError(description: "\(flag) needs a positive integer, not \(text)")
                }
                return number
            }
            switch flag {
            case "--catalog": catalogPath = try value()
            case "--only":
                let name = try value()
                guard let benchmark = Benchmark(rawValue: name) else {
                    throw UsageError(description: "unknown benchmark \(name)")
                }
                benchmarks = [benchmark]
            case "--runs": runs = try count()
            case "--rounds": rounds = try count()
            case "--waiters": waiters = try count()
            case "--submitters": submitters = try count()
            case "--profile": profileIterations = try count()
            default: throw UsageError(description: "unknown argument \(flag)")
            }
        }
    }

    /// `Config/models.json` under the working directory, else in the repository this file was compiled from.
    private static func defaultCatalogPath(file: String = #filePath) -> String {
        let relative = "Config/models.json"
        if FileManager.default.fileExists(atPath: relative) { return relative }
        // file is <repo>/loadtest/micro/Sources/relay-micro/MicroOptions.swift
        var repository = URL(fileURLWithPath: file)
        for _ in 0..<5 { repository.deleteLastPathComponent() }
        return repository.appendingPathComponent(relative).path
    }
}
