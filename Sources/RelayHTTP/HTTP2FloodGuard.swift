import NIOCore

/// How often a client may do something cheap for it and dear for the relay on one connection: reset a stream it
/// opened (the rapid-reset attack, CVE-2023-44487, makes the relay build a stream for each), or send a frame that
/// carries nothing (empty DATA, an empty CONTINUATION) or earns a stream error. Counted per window of time, so a
/// browser that cancels now and then over hours is never cut off, and a client doing it in bulk is: the connection
/// ends with GOAWAY ENHANCE_YOUR_CALM. Time is passed in.
struct HTTP2FloodGuard {
    let limit: Int
    let window: TimeAmount
    private var started: NIODeadline?
    private var count = 0

    init(limit: Int, window: TimeAmount = .seconds(30)) {
        self.limit = limit
        self.window = window
    }

    /// One more occurrence at `now`; false once the window holds more than `limit`.
    mutating func allow(at now: NIODeadline) -> Bool {
        if let started, now - started < window {
            count += 1
        } else {
            started = now
            count = 1
        }
        return count <= limit
    }
}
