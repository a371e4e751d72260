import Foundation
import NIOCore
import RelayCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The progress of one request on stderr: a redrawn bar on a terminal, one plain line per change otherwise.
actor ProgressDisplay {
    private enum Phase: Equatable {
        case submitting
        case queued(position: Int?)
        case running(step: Int?, of: Int?)
        case completed
    }

    private static let spinner = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]
    private static let barWidth = 24

    let label: String
    let interactive: Bool
    private let started = ContinuousClock.now
    private var phase = Phase.submitting
    /// Log lines already shown (status polls repeat all logs, stream events carry only new ones).
    private var logsSeen = 0
    /// A progress line is drawn and must be cleared before anything else is written.
    private var drawn = false
    private var frame = 0
    private var ticker: Task<Void, Never>?
    private var finished = false

    init(label: String, interactive: Bool) {
        self.label = label
        self.interactive = interactive
    }

    /// Takes one status object (submit response, stream event or poll).
    func update(_ status: JSONValue, logsAreCumulative: Bool) {
        guard !finished else { return }
        let logs = status["logs"]?.arrayValue ?? []
        let fresh: ArraySlice<JSONValue>
        if logsAreCumulative {
            fresh = logs.count > logsSeen ? logs[logsSeen...] : []
            logsSeen = max(logsSeen, logs.count)
        } else {
            fresh = logs[...]
            logsSeen += logs.count
        }
        var step: (Int, Int)?
        for entry in fresh {
            guard let message = entry["message"]?.stringValue else { continue }
            if let parsed = Self.step(in: message) {
                step = parsed
            } else if !message.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                emit("  log: \(message)")
            }
        }
        let next: Phase
        switch status["status"]?.stringValue {
        case "IN_QUEUE":
            next = .queued(position: status["queue_position"]?.intValue)
        case "IN_PROGRESS":
            if let step {
                next = .running(step: step.0, of: step.1)
            } else if case .running = phase {
                next = phase
            } else {
                next = .running(step: nil, of: nil)
            }
        case "COMPLETED":
            if let step, case .running = phase { change(to: .running(step: step.0, of: step.1)) }
            next = .completed
            if let error = status["error"]?.stringValue { emit("  error: \(error)") }
        default:
            return
        }
        change(to: next)
    }

    /// A permanent line on stderr (the bar is redrawn below it).
    func note(_ text: String) {
        emit(text)
    }

    /// Clears the bar and stops redrawing.
    func finish() {
        finished = true
        ticker?.cancel()
        ticker = nil
        clear()
    }

    private func change(to next: Phase) {
        guard next != phase else { return }
        phase = next
        if interactive {
            startTicker()
            draw()
        } else {
            let elapsed = SubmitSession.format(ContinuousClock.now - started)
            Terminal.write(ByteBuffer(string: "[\(elapsed)] \(describe(next))\n"), to: STDERR_FILENO)
        }
    }

    private func describe(_ phase: Phase) -> String {
        switch phase {
        case .submitting: "submitting"
        case .queued(let position?): "in queue, position \(position)"
        case .queued(nil): "in queue"
        case .running(let step?, let total?): "in progress, step \(step)/\(total)"
        case .running: "in progress"
        case .completed: "completed"
        }
    }

    private func startTicker() {
        guard ticker == nil, !finished else { return }
        ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                await self?.draw()
            }
        }
    }

    private func draw() {
        guard interactive, !finished else { return }
        frame += 1
        let spin = Self.spinner[frame % Self.spinner.count]
        let elapsed = SubmitSession.format(ContinuousClock.now - started)
        var line = ""
        switch phase {
        case .submitting:
            line += "submitting"
        case .queued(let position):
            line += position.map { "in queue · position \($0)" } ?? "in queue"
        case .running(let step?, let total?) where total > 0:
            let filled = min(Self.barWidth, Self.barWidth * step / total)
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: Self.barWidth - filled)
            line += "[\(bar)] \(step)/\(total) \(100 * step / total)%"
        case .running:
            line += "in progress"
        case .completed:
            line += "completed, fetching the result"
        }
        line += " · \(elapsed)"
        // A line wider than the terminal wraps, and "\r" then redraws only its last row: shorten the label instead.
        let room = Terminal.columns() - 1 - line.count - 4
        let name = room >= label.count ? label : room > 8 ? "…" + label.suffix(room - 1) : ""
        line = name.isEmpty ? "\(spin) \(line)" : "\(spin) \(name)  \(line)"
        Terminal.write(ByteBuffer(string: "\r\u{1B}[2K" + line), to: STDERR_FILENO)
        drawn = true
    }

    private func emit(_ text: String) {
        clear()
        Terminal.write(ByteBuffer(string: text + "\n"), to: STDERR_FILENO)
        if interactive, !finished, phase != .submitting { draw() }
    }

    private func clear() {
        guard drawn else { return }
        Terminal.write(ByteBuffer(string: "\r\u{1B}[2K"), to: STDERR_FILENO)
        drawn = false
    }

    /// `n/N` in a log line like "step 3/28" or tqdm's "36%|███▋ | 10/28 [...]"; nil when there is none.
    static func step(in message: String) -> (Int, Int)? {
        let bytes = Array(message.utf8)
        var result: (Int, Int)?
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "/"), index > 0, index + 1 < bytes.count else {
                index += 1
                continue
            }
            var start = index
            while start > 0, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[start - 1]) { start -= 1 }
            var end = index + 1
            while end < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[end]) { end += 1 }
            if start < index, end > index + 1, start == 0 || !Self.isWordByte(bytes[start - 1]),
                end == bytes.count || !Self.isWordByte(bytes[end]) || bytes[end] == UInt8(ascii: " "),
                let done = Int(String(decoding: bytes[start..<index], as: UTF8.self)),
                let total = Int(String(decoding: bytes[(index + 1)..<end], as: UTF8.self)),
                total > 0, done <= total
            {
                result = (done, total)
            }
            index = end
        }
        return result
    }

    private static func isWordByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "/") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ":")
            || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
    }
}
