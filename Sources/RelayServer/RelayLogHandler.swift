import Foundation
public import Logging
import RelayCore
import Synchronization

/// How log lines look.
public enum LogFormat: String, Sendable, CaseIterable {
    /// `ts=… level=info logger=access msg=request method=GET …` (https://brandur.org/logfmt)
    case logfmt
    /// One JSON object per line.
    case json
}

/// A swift-log handler writing logfmt or JSON lines to standard error through one buffered writer: lines are
/// gathered and written in batches (at most every 50 ms, or at 64 KiB), so an access line per request does not
/// cost a syscall per request. Warnings and worse are written at once.
public struct RelayLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let format: LogFormat
    private let sink: LogSink

    public init(label: String, format: LogFormat, level: Logger.Level, sink: LogSink = .standardError) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("ts", Self.timestamp()), ("level", event.level.rawValue), ("logger", label), ("msg", "\(event.message)"),
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for key in merged.keys.sorted() {
            fields.append((key, "\(merged[key]!)"))
        }
        sink.write(Self.render(fields, as: format), urgent: event.level >= .warning)
    }

    /// Renders one line (without its newline).
    static func render(_ fields: [(String, String)], as format: LogFormat) -> String {
        switch format {
        case .logfmt:
            return fields.map { key, value in "\(key)=\(logfmtValue(value))" }.joined(separator: " ")
        case .json:
            var object = JSONObject()
            for (key, value) in fields {
                object[key] = .string(value)
            }
            return String(decoding: JSONValue.object(object).serialized(), as: UTF8.self)
        }
    }

    /// Bare when it can be, else quoted with `"` and `\` escaped and control characters spelled out.
    static func logfmtValue(_ value: String) -> String {
        let needsQuotes =
            value.isEmpty
            || value.utf8.contains { $0 <= 0x20 || $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: "\"") || $0 == 0x7F }
        guard needsQuotes else { return value }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\u{\(String(scalar.value, radix: 16))}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    static func timestamp() -> String {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        var parts = tm()
        var seconds = time.tv_sec
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(time.tv_nsec / 1_000_000), 3))Z"
    }
}

/// Where log lines go: a file descriptor, written in batches by one background thread.
public final class LogSink: Sendable {
    public static let standardError = LogSink(fileDescriptor: 2)

    private let fileDescriptor: Int32
    private let buffer = Mutex<(bytes: [UInt8], flusherRunning: Bool)>(([], false))
    /// Held while a batch is taken and written, so batches reach the descriptor in order.
    private let writing = Mutex(())
    private static let flushBytes = 64 * 1024

    public init(fileDescriptor: Int32) {
        self.fileDescriptor = fileDescriptor
    }

    func write(_ line: String, urgent: Bool) {
        let startFlusher = buffer.withLock { state -> Bool in
            state.bytes.append(contentsOf: line.utf8)
            state.bytes.append(UInt8(ascii: "\n"))
            if urgent || state.bytes.count >= Self.flushBytes { return false }
            if state.flusherRunning { return false }
            state.flusherRunning = true
            return true
        }
        if urgent {
            flush()
        } else if startFlusher {
            // One short-lived thread per batch window: no thread sits idle when nothing is logged.
            Thread.detachNewThread { [self] in
                Thread.sleep(forTimeInterval: 0.05)
                buffer.withLock { $0.flusherRunning = false }
                flush()
            }
        } else if buffer.withLock({ $0.bytes.count >= Self.flushBytes }) {
            flush()
        }
    }

    /// Writes out everything buffered (also called at shutdown).
    public func flush() {
        writing.withLock { _ in
            let bytes = buffer.withLock { state -> [UInt8] in
                defer { state.bytes.removeAll(keepingCapacity: true) }
                return state.bytes
            }
            writeAll(bytes)
        }
    }

    private func writeAll(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes {
                Glibc.write(fileDescriptor, $0.baseAddress! + offset, $0.count - offset)
            }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}
