import Foundation
import NIOCore

/// The once-a-second line on stderr: rate over the last second, totals, errors, open connections.
struct ProgressLine: Sendable {
    let enabled: Bool
    let workers: [NIOLoopBound<LoadWorker>]
    let terminal = isatty(STDERR_FILENO) != 0

    /// Waits `seconds`, printing a line each second.
    func run(label: String, seconds: Double) async throws {
        let end = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        var last = try await snapshot()
        var lastTime = ContinuousClock.now
        var elapsed = 0
        while ContinuousClock.now < end {
            let step = min(.seconds(1), end - ContinuousClock.now)
            try await Task.sleep(for: step)
            guard enabled else { continue }
            elapsed += 1
            let now = try await snapshot()
            let time = ContinuousClock.now
            let interval = time - lastTime
            let intervalSeconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
            let rate = intervalSeconds > 0 ? Double(now.responses - last.responses) / intervalSeconds : 0
            let line =
                "[\(label) \(pad(String(elapsed), 3))s] \(pad(String(format: "%.0f", rate), 10)) req/s  "
                + "\(pad(String(now.responses), 10)) responses  \(pad(String(now.errors), 6)) errors  "
                + "\(pad(String(now.openConnections), 5)) connections"
            write(line)
            last = now
            lastTime = time
        }
    }

    func finish() {
        if enabled && terminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    private func write(_ line: String) {
        let text = terminal ? "\r\u{1B}[K" + line : line + "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }

    private func pad(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }

    private func snapshot() async throws -> LoadWorker.Progress {
        var total = LoadWorker.Progress()
        for worker in workers {
            let progress = try await worker.eventLoop.submit { worker.value.progress }.get()
            total.responses += progress.responses
            total.errors += progress.errors
            total.openConnections += progress.openConnections
        }
        return total
    }
}
