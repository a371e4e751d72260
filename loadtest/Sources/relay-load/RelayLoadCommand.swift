import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import RelayLoadKit

/// The load generator's command line: one subcommand per scenario.
@main
struct RelayLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-load",
        abstract: "Closed-loop HTTP/1.1 load for MediaRelay (and nginx, for comparison), loopback only.",
        discussion: """
            Each connection sends a request, waits for the whole response, records its latency in an HDR \
            histogram and sends the next. After the warm-up the counters start from zero; the report gives \
            requests/s, transfer/s, p50/p90/p99/p99.9/max and errors by kind (--json for scripts).
            """,
        subcommands: [
            GetCommand.self, GetRangeCommand.self, PollCommand.self, SubmitMixCommand.self, NewTLSCommand.self,
            SSEFanoutCommand.self, WSFanoutCommand.self,
        ]
    )
}

/// Options every load scenario takes.
struct CommonOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "Concurrent connections (each with one request in flight).")
    var connections = 64

    @Option(name: [.short, .long], help: "Event loop threads of the load generator.")
    var threads = 1

    @Option(name: [.short, .long], help: "Measured seconds.")
    var duration = 10.0

    @Option(name: [.short, .long], help: "Warm-up seconds before measuring (not counted).")
    var warmup = 2.0

    @Option(help: "Seconds before an unanswered request counts as a timeout.")
    var timeout = 10.0

    @Option(help: "PEM file of the CA to trust for https (e.g. the relay's data/tls/ca.pem).")
    var caFile: String?

    @Flag(help: "Do not verify the server certificate.")
    var insecure = false

    @Option(name: [.customShort("H"), .long], help: "Extra request header \"Name: value\" (repeatable).")
    var header: [String] = []

    @Option(help: "API key, sent as \"Authorization: Key <key>\".")
    var key: String?

    @Option(help: "Seed of the request randomness (ranges, Zipf draws).")
    var seed: UInt64 = 1

    @Flag(help: "Print the report as JSON on stdout (the progress line stays on stderr).")
    var json = false

    @Option(help: "Also write the JSON report to this file.")
    var output: String?

    @Flag(help: "No progress line.")
    var quiet = false

    var headers: [String] {
        header + (key.map { ["Authorization: Key \($0)"] } ?? [])
    }

    func url(_ text: String) throws -> TargetURL {
        guard let url = TargetURL(text) else { throw ValidationError("not an http(s) URL: \(text)") }
        guard Self.isLoopback(url.host) else {
            throw ValidationError("relay-load sends traffic to loopback addresses only (127.0.0.0/8, ::1, localhost)")
        }
        return url
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    func configuration(
        plan: RequestPlan,
        newConnection: Bool = false,
        watchedHeader: String? = nil
    ) -> LoadConfiguration {
        LoadConfiguration(
            plan: plan,
            connections: connections,
            threads: threads,
            durationSeconds: duration,
            warmupSeconds: warmup,
            timeoutSeconds: timeout,
            newConnectionPerRequest: newConnection,
            caFile: caFile,
            insecure: insecure,
            watchedHeader: watchedHeader,
            progress: !quiet,
            seed: seed
        )
    }

    func tlsContext(for url: TargetURL) throws -> NIOSSLContext? {
        url.tls ? try LoadRunner.makeTLSContext(caFile: caFile, insecure: insecure) : nil
    }

    func report(_ report: LoadReport) throws {
        if let output {
            try Data((report.json() + "\n").utf8).write(to: URL(fileURLWithPath: output))
        }
        print(json ? report.json() : report.text())
    }

    /// Runs a setup request (submit, HEAD) on a short-lived event loop group.
    func setupRequest(_ plan: RequestPlan) async throws -> OneShotResponse {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let response = try await OneShotRequest.send(plan, on: group, tls: try tlsContext(for: plan.url))
            try await group.shutdownGracefully()
            return response
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Submits a job and returns the path of its status URL (fal's `status_url`, re-rooted on `url`'s server).
    func submitForStatusPath(url: TargetURL, body: String) async throws -> String {
        let response = try await setupRequest(RequestPlan(method: "POST", url: url, headers: headers, body: body))
        guard (200..<300).contains(response.head.status),
            let object = try JSONSerialization.jsonObject(with: Data(response.bodyText.utf8)) as? [String: Any],
            let statusURL = object["status_url"] as? String,
            let parsed = TargetURL(statusURL)
        else {
            throw ValidationError("submit to \(url) failed: \(response.head.status) \(response.bodyText.prefix(300))")
        }
        return parsed.target.split(separator: "?").first.map(String.init) ?? parsed.target
    }
}

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "GET one URL over and over (a cached result, /healthz, a media file)."
    )

    @OptionGroup var options: CommonOptions
    @Argument(help: "The URL, e.g. http://127.0.0.1:8080/healthz") var url: String
    @Flag(help: "Open a new connection for every request (Connection: close).") var newConnection = false

    func run() async throws {
        let plan = RequestPlan(url: try options.url(url), headers: options.headers, closeAfterResponse: newConnection)
        try options.report(
            try await LoadRunner.run(
                scenario: "get",
                configuration: options.configuration(plan: plan, newConnection: newConnection)
            )
        )
    }
}

struct NewTLSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new-tls",
        abstract: "GET one https URL on a new TLS connection per request: full handshakes (no resumption)."
    )

    @OptionGroup var options: CommonOptions
    @Argument(help: "An https URL, e.g. https://127.0.0.1:8443/healthz") var url: String

    func run() async throws {
        let target = try options.url(url)
        guard target.tls else { throw ValidationError("new-tls needs an https URL") }
        let plan = RequestPlan(url: target, headers: options.headers, closeAfterResponse: true)
        try options.report(
            try await LoadRunner.run(
                scenario: "new-tls",
                configuration: options.configuration(plan: plan, newConnection: true)
            )
        )
    }
}

struct GetRangeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-range",
        abstract: "Random single-range GETs (Range: bytes=a-b) on one media file; 206 is success."
    )

    @OptionGroup var options: CommonOptions
    @Argument(help: "The media URL, e.g. http://127.0.0.1:8080/files/<digest>.png") var url: String
    @Option(help: "Longest range in bytes (lengths are uniform in 1…this).") var maxLength = 65536
    @Option(help: "The file's size in bytes (default: asked with HEAD).") var fileSize: Int?

    func run() async throws {
        let target = try options.url(url)
        var size = fileSize
        if size == nil {
            let head = try await options.setupRequest(
                RequestPlan(method: "HEAD", url: target, headers: options.headers)
            )
            size = head.head.first("content-length").flatMap(Int.init)
            guard (200..<300).contains(head.head.status), size != nil else {
                throw ValidationError("HEAD \(url) gave \(head.head.status) without a Content-Length; pass --file-size")
            }
        }
        let plan = RequestPlan(
            url: target,
            headers: options.headers,
            variation: .randomRange(fileSize: size ?? 1, maxLength: maxLength)
        )
        try options.report(
            try await LoadRunner.run(scenario: "get-range", configuration: options.configuration(plan: plan))
        )
    }
}

struct PollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "poll",
        abstract: "Status polls of one request id.",
        discussion: """
            URL is a status URL (…/requests/<id>/status), or a model endpoint (…/fal-ai/flux/dev): then one \
            job is submitted with --body first and its status URL is polled.
            """
    )

    @OptionGroup var options: CommonOptions
    @Argument(help: "A status URL or a model endpoint") var url: String
    @Option(help: "JSON body of the submit when URL is a model endpoint.")
    var body = #"{"prompt":"relay-load poll","seed":1,"image_size":{"width":256,"height":256}}"#
    @Flag(help: "Ask for logs (?logs=1).") var logs = false

    func run() async throws {
        var target = try options.url(url)
        if !target.target.contains("/requests/") {
            target = target.with(target: try await options.submitForStatusPath(url: target, body: body))
        }
        if logs { target = target.with(target: target.target + (target.target.contains("?") ? "&" : "?") + "logs=1") }
        let plan = RequestPlan(url: target, headers: options.headers)
        try options.report(try await LoadRunner.run(scenario: "poll", configuration: options.configuration(plan: plan)))
    }
}

struct SubmitMixCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit-mix",
        abstract: "Duplicate-heavy submits: Zipf over K prompts, so most are hits or coalesced; counts x-relay-cache.",
        discussion: """
            Each request POSTs --body-template with {i} replaced by a rank drawn from Zipf(--zipf) over \
            --prompts ranks (rank 0 the most popular), with the generator seeded by --seed. The default template \
            sets "seed" to the rank, so the catalog's seeded dedup policy caches the result.
            """
    )

    @OptionGroup var options: CommonOptions
    @Argument(help: "The model endpoint, e.g. http://127.0.0.1:8080/fal-ai/flux/dev") var url: String
    @Option(help: "Distinct prompts (K).") var prompts = 64
    @Option(help: "Zipf exponent s (P(rank k) ∝ 1/(k+1)^s).") var zipf = 1.1
    @Option(help: "Request body; {i} is the drawn rank.")
    var bodyTemplate = #"{"prompt":"relay-load prompt {i}","seed":{i},"image_size":{"width":256,"height":256}}"#

    func run() async throws {
        guard prompts > 0 else { throw ValidationError("--prompts must be positive") }
        let plan = RequestPlan(
            method: "POST",
            url: try options.url(url),
            headers: options.headers,
            variation: .zipfBodies(bodyTemplate: bodyTemplate, prompts: prompts, exponent: zipf)
        )
        let configuration = options.configuration(plan: plan, watchedHeader: "x-relay-cache")
        try options.report(try await LoadRunner.run(scenario: "submit-mix", configuration: configuration))
    }
}

/// The options and the run of both fan-out scenarios (sse-fanout, ws-fanout): one job, many watchers, spread over
/// child processes of this program, one merged report.
struct FanoutOptions: ParsableArguments {
    @Argument(help: "A status stream URL (…/requests/<id>/status/stream) or a model endpoint") var url: String
    @Option(help: "Watchers in all.") var watchers = 1000
    @Option(help: "Processes to spread the watchers over.") var processes = 1
    @Option(help: "sse, ws, or mixed (watchers alternate SSE and WS). Default: the scenario's own.")
    var transport: String?
    @Option(help: "JSON body of the submit when URL is a model endpoint.")
    var body =
        #"{"prompt":"relay-load fan-out","seed":7,"image_size":{"width":512,"height":512},"num_inference_steps":28}"#
    @Option(help: "Memory: the server's pid (repeatable: the sum, e.g. nginx's master and workers); read VmRSS before, with all watchers attached, and --settle s later, then close (one process).")
    var memoryPid: [Int32] = []
    @Option(help: "Seconds to wait after attaching before the settled RSS reading (and after closing).") var settle = 5.0
    @Option(help: "Spread the watchers over this many loopback source addresses (127.0.1.1…), as many clients would be: the relay caps connections per address (max_connections_per_ip, 1024).")
    var sourceAddresses = 1
    @Flag(help: .hidden) var child = false

    func run(options: CommonOptions, defaultMix: WatcherFanout.Mix) async throws {
        guard let mix = transport.map({ WatcherFanout.Mix(rawValue: $0) }) ?? defaultMix else {
            throw ValidationError("--transport is sse, ws or mixed")
        }
        if !memoryPid.isEmpty && processes > 1 { throw ValidationError("--memory-pid needs --processes 1") }
        var target = try options.url(url)
        if !target.target.contains("/requests/") {
            let status = try await options.submitForStatusPath(url: target, body: body)
            target = target.with(target: status + "/stream?logs=1")
        }
        guard let watchTarget = WatcherFanout.Target(statusStream: target, headers: options.headers) else {
            throw ValidationError("no request id in \(target)")
        }
        let start = ContinuousClock.now
        var sample = WatcherFanout.Sample()
        var memory: WatcherFanout.Memory?
        if processes <= 1 || child {
            (sample, memory) = try await WatcherFanout.watch(
                target: watchTarget,
                mix: mix,
                watchers: watchers,
                threads: options.threads,
                tls: try options.tlsContext(for: target),
                timeoutSeconds: options.duration,
                memoryOf: memoryPid.isEmpty ? nil : memoryPid,
                settleSeconds: settle,
                sourceAddresses: sourceAddresses
            )
        } else {
            sample = try await runChildren(url: target, mix: mix, options: options)
        }
        if child {
            FileHandle.standardOutput.write(try JSONEncoder().encode(sample))
            return
        }
        let wall = ContinuousClock.now - start
        let report = WatcherFanout.Report(
            url: target.description,
            transport: mix,
            processes: max(1, processes),
            sample: sample,
            wallSeconds: Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18,
            memory: memory
        )
        if let output = options.output {
            try Data((report.json() + "\n").utf8).write(to: URL(fileURLWithPath: output))
        }
        print(options.json ? report.json() : report.text())
    }

    /// Runs this program once per process with its share of the watchers and merges their samples.
    private func runChildren(url: TargetURL, mix: WatcherFanout.Mix, options: CommonOptions) async throws
        -> WatcherFanout.Sample
    {
        let executable = URL(fileURLWithPath: "/proc/self/exe")
        var children: [(Process, Pipe)] = []
        for index in 0..<processes {
            let share = watchers / processes + (index < watchers % processes ? 1 : 0)
            var arguments = [
                "sse-fanout", url.description, "--child", "--transport", mix.rawValue, "--watchers", String(share),
                "--threads", String(options.threads), "--duration", String(options.duration),
                "--source-addresses", String(sourceAddresses),
            ]
            if let caFile = options.caFile { arguments += ["--ca-file", caFile] }
            if options.insecure { arguments.append("--insecure") }
            for line in options.headers { arguments += ["--header", line] }
            let process = Process()
            process.executableURL = executable
            process.arguments = arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            children.append((process, pipe))
        }
        var merged = WatcherFanout.Sample()
        for (process, pipe) in children {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                merged.errors["child_failed", default: 0] += 1
                continue
            }
            merged.merge(try JSONDecoder().decode(WatcherFanout.Sample.self, from: data))
        }
        return merged
    }
}

private let fanoutDiscussion = """
    URL is a status stream (…/requests/<id>/status/stream?logs=1), or a model endpoint: then one job is submitted \
    with --body and all watchers follow it (SSE: the status stream with ?logs=1; WS: GET /ws on the same server and \
    {"type":"watch","request_id":…}). Start the relay with a time scale above 0 (e.g. --synthetic-time-scale 1) \
    so the job runs while the watchers attach. With --processes P the watchers are split over P child processes \
    of this program; the report merges them: first-event latency, the lag of every live log-line event (receive \
    time minus the relay's timestamp of that line), whether every watcher got the terminal event, and the spread \
    between the first and the last watcher receiving it. --memory-pid reads the relay's VmRSS around N idle watchers.
    """

struct SSEFanoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sse-fanout",
        abstract: "Many SSE (or, with --transport, WS or mixed) watchers of one job, across several processes.",
        discussion: fanoutDiscussion
    )

    @OptionGroup var options: CommonOptions
    @OptionGroup var fanout: FanoutOptions

    func run() async throws { try await fanout.run(options: options, defaultMix: .sse) }
}

struct WSFanoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws-fanout",
        abstract: "Many /ws WebSocket watchers of one job (sse-fanout --transport ws).",
        discussion: fanoutDiscussion
    )

    @OptionGroup var options: CommonOptions
    @OptionGroup var fanout: FanoutOptions

    func run() async throws { try await fanout.run(options: options, defaultMix: .ws) }
}
