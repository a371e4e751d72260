import ArgumentParser
import FalQueue
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `media-relay submit`: one generation through a relay (or fal itself), followed live and saved to disk.
struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a request to a relay (or fal), follow its progress, and save the media it returns.",
        discussion: """
            Progress goes to stderr (a live bar on a terminal, one line per change otherwise); stdout holds only \
            the saved paths, one per line, or the result JSON with --json. Ctrl-C cancels the request before \
            exiting. Exit status: 0 done; 1 the request failed (HTTP error, failed generation, download, timeout); \
            2 invalid arguments or input (nothing was sent); 130 interrupted.
            """
    )

    @Argument(help: "Endpoint id, e.g. fal-ai/flux/dev") var model: String
    @Option(help: ArgumentHelp("The input object: literal JSON, @file, or - for stdin", valueName: "json|@file|-"))
    var input: String
    @Option(
        help: ArgumentHelp(
            "Directory for the media, created if missing (default: the current directory)",
            valueName: "dir"
        )
    )
    var out: String?
    @Option(
        help: ArgumentHelp(
            "Queue API base URL (default $MEDIA_RELAY_HOST, else http://127.0.0.1:8080; https://queue.fal.run for fal)",
            valueName: "url"
        )
    )
    var host: String?
    @Option(help: "API key, sent as Authorization: Key … (default $FAL_KEY)") var key: String?
    @Option(help: ArgumentHelp("Extra PEM CA certificate(s) to trust; SSL_CERT_FILE is honoured too", valueName: "pem"))
    var ca: String?
    @Flag(help: "Print the result JSON on stdout instead of downloading the media") var json = false
    @Option(help: ArgumentHelp("Give up after this many seconds, cancelling the request", valueName: "seconds"))
    var timeout: Int = 600

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let plan: SubmitPlan
        do {
            plan = try SubmitPlan(command: self, environment: environment)
        } catch {
            Terminal.error(error.message)
            throw ExitCode(error.exitCode)
        }
        let display = ProgressDisplay(
            label: plan.endpoint.description,
            interactive: Terminal.stderrIsInteractive(environment)
        )
        let queue: FalQueueClient
        do {
            queue = try FalQueueClient(
                configuration: SubmitSession.configuration(plan),
                logger: Logger(label: "media-relay.submit", factory: { _ in SwiftLogNoOpLogHandler() }),
                retryNotes: { retry in await display.note(SubmitSession.note(retry)) }
            )
        } catch {
            Terminal.error("invalid --host \"\(plan.host)\": \(error)")
            throw ExitCode(2)
        }
        let session = SubmitSession(plan: plan, queue: queue, display: display)

        let signals = InterruptSignals()
        let work = Task { try await SubmitSession.within(seconds: plan.timeoutSeconds) { try await session.run() } }
        signals.install { work.cancel() }
        let outcome = await work.result
        signals.uninstall()
        await display.finish()
        try? await queue.shutdown()

        switch outcome {
        case .success:
            return
        case .failure where signals.received != nil:
            Terminal.error("interrupted")
            throw ExitCode(128 + (signals.received ?? SIGINT))
        case .failure(let failure as SubmitFailure):
            Terminal.error(failure.message)
            throw ExitCode(failure.exitCode)
        case .failure(let error):
            Terminal.error("\(error)")
            throw ExitCode(1)
        }
    }
}
