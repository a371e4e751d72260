import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// How a watcher follows the job: the SSE status stream or the `/ws` WebSocket.
public enum WatcherTransport: String, Codable, Sendable, CaseIterable {
    case sse
    case ws
}

/// What one watcher saw.
struct WatcherResult: Sendable {
    var transport: WatcherTransport
    var error: String?
    var events = 0
    /// Events whose server timestamp is older than the subscription: a catch-up replay, not a live delivery.
    var replayed = 0
    var firstEventMicroseconds: UInt64?
    /// Wall-clock (Unix µs) arrival of the first event: the watcher is attached from then on.
    var firstEventUnixMicroseconds: Int64?
    /// Wall-clock (Unix µs) arrival of the terminal event (`"status":"COMPLETED"`), nil if it never came.
    var terminalUnixMicroseconds: Int64?
    /// Each live log-line event: the Unix second of the relay's timestamp (high 32 bits) and receive time minus that
    /// timestamp in microseconds (low 32 bits).
    var lagSamples: [UInt64] = []
}

/// Counts watchers that saw their first event, and those that ended before one, so a memory measurement knows when
/// every watcher is attached (or never will be).
public final class AttachCounter: Sendable {
    private let counts = NIOLockedValueBox((attached: 0, gaveUp: 0))
    public init() {}
    func attach() { counts.withLockedValue { $0.attached += 1 } }
    func giveUp() { counts.withLockedValue { $0.gaveUp += 1 } }
    public var attached: Int { counts.withLockedValue { $0.attached } }
    public var settled: Int { counts.withLockedValue { $0.attached + $0.gaveUp } }
}

/// The measurement and the life cycle every watcher shares, whatever its transport: per-event bookkeeping (first
/// event, server-timestamp lag, terminal event), the deadline, and completing the watcher's promise exactly once.
/// Lives on the watcher channel's event loop; its handlers hold it.
final class WatcherState {
    private let promise: EventLoopPromise<WatcherResult>
    private let createdAt = NIODeadline.now().uptimeNanoseconds
    private let deadline: NIODeadline
    private let attached: AttachCounter?
    private var result: WatcherResult
    /// Unix µs when the subscription (the SSE request, the `watch` message) was sent.
    private var subscribedAt = Int64.max
    private var timeout: Scheduled<Void>?
    private(set) var done = false

    init(
        transport: WatcherTransport,
        deadline: NIODeadline,
        attached: AttachCounter?,
        promise: EventLoopPromise<WatcherResult>
    ) {
        self.result = WatcherResult(transport: transport)
        self.deadline = deadline
        self.attached = attached
        self.promise = promise
    }

    func start(channel: any Channel) {
        let bound = NIOLoopBound((self, channel), eventLoop: channel.eventLoop)
        timeout = channel.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.0.finish(channel: bound.value.1, error: "timeout")
        }
    }

    func subscribed() {
        subscribedAt = Self.unixMicroseconds()
    }

    /// Records one event (an SSE `data:` block or a WebSocket text message); true when it was the terminal event.
    func record(event bytes: UnsafeRawBufferPointer) -> Bool {
        let now = Self.unixMicroseconds()
        result.events += 1
        if result.firstEventMicroseconds == nil {
            result.firstEventMicroseconds = (NIODeadline.now().uptimeNanoseconds &- createdAt) / 1000
            result.firstEventUnixMicroseconds = now
            attached?.attach()
        }
        if let stamp = Self.find(Self.timestampKey, in: bytes).flatMap({ Self.parseTimestamp(bytes, at: $0) }) {
            if stamp >= subscribedAt {
                let lag = UInt64(UInt32(clamping: max(0, now - stamp)))
                result.lagSamples.append(UInt64(UInt32(clamping: stamp / 1_000_000)) << 32 | lag)
            } else {
                result.replayed += 1
            }
        }
        guard Self.find(Self.completedKey, in: bytes) != nil else { return false }
        result.terminalUnixMicroseconds = now
        return true
    }

    /// Ends the watcher: `error` nil means the stream ended normally (it is an error if no terminal event came).
    func finish(channel: any Channel, error: String?) {
        guard !done else { return }
        done = true
        timeout?.cancel()
        if result.firstEventMicroseconds == nil { attached?.giveUp() }
        result.error = error ?? (result.terminalUnixMicroseconds == nil ? "ended_without_terminal" : nil)
        promise.succeed(result)
        channel.close(promise: nil)
    }

    static func unixMicroseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }

    // MARK: scanning the status JSON without decoding it (the relay writes compact JSON)

    static let timestampKey = Array(#""timestamp":""#.utf8)
    static let completedKey = Array(#""status":"COMPLETED""#.utf8)

    /// The index just past the first occurrence of `needle`, or nil.
    static func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer) -> Int? {
        guard haystack.count >= needle.count, let first = needle.first else { return nil }
        var index = 0
        let last = haystack.count - needle.count
        while index <= last {
            if haystack[index] == first {
                var matched = 1
                while matched < needle.count && haystack[index + matched] == needle[matched] { matched += 1 }
                if matched == needle.count { return index + matched }
            }
            index += 1
        }
        return nil
    }

    /// Parses the relay's log timestamp, `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (UTC, 6 fraction digits), into Unix µs.
    static func parseTimestamp(_ bytes: UnsafeRawBufferPointer, at start: Int) -> Int64? {
        guard bytes.count >= start + 26 else { return nil }
        func number(_ offset: Int, _ length: Int) -> Int64? {
            var value: Int64 = 0
            for index in start + offset..<start + offset + length {
                let digit = bytes[index] &- UInt8(ascii: "0")
                guard digit < 10 else { return nil }
                value = value * 10 + Int64(digit)
            }
            return value
        }
        guard let year = number(0, 4), let month = number(5, 2), let day = number(8, 2), let hour = number(11, 2),
            let minute = number(14, 2), let second = number(17, 2), let micros = number(20, 6),
            (1...12).contains(month)
        else { return nil }
        // Days from civil (Howard Hinnant's algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return ((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros
    }
}

@available(*, unavailable)
extension WatcherState: Sendable {}
