public import NIOCore

/// Splits a `text/event-stream` body into the `data` of its events (WHATWG HTML §9.2.6), chunk by chunk.
///
/// Pure and incremental: chunks may end anywhere, in the middle of a line or between a CR and its LF. Lines end
/// with LF, CR or CRLF; `:` lines are comments (keep-alives); `event:`, `id:` and `retry:` are ignored because fal
/// status events are told apart by their JSON; several `data:` lines of one event are joined with LF. An event is
/// dispatched at its blank line only, so a stream that stops mid-event yields nothing for it.
public struct FalEventStreamParser: Sendable {
    /// Why the stream cannot be read on.
    public struct Overflow: Error, Sendable, Hashable, CustomStringConvertible {
        public let limit: Int
        public var description: String { "an event-stream line or event exceeds \(limit) bytes" }
    }

    /// Upper bound of one line and of one event's data.
    let maxEventBytes: Int
    private var pending: ByteBuffer
    private var data: ByteBuffer?
    /// The previous chunk ended with CR: an LF at the start of the next one belongs to it.
    private var skipLineFeed = false

    public init(maxEventBytes: Int = 8 << 20, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        self.maxEventBytes = maxEventBytes
        self.pending = allocator.buffer(capacity: 1024)
    }

    /// Consumes a chunk; returns the data of every event it completed, in order.
    public mutating func feed(_ chunk: ByteBuffer) throws(Overflow) -> [ByteBuffer] {
        var chunk = chunk
        if skipLineFeed, chunk.readableBytes > 0 {
            skipLineFeed = false
            if chunk.readableBytesView.first == UInt8(ascii: "\n") {
                chunk.moveReaderIndex(forwardBy: 1)
            }
        }
        pending.writeBuffer(&chunk)
        var events: [ByteBuffer] = []
        while let end = pending.readableBytesView.firstIndex(where: {
            $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r")
        }) {
            let length = end - pending.readerIndex
            guard let line = pending.readSlice(length: length), let terminator = pending.readInteger(as: UInt8.self)
            else { break }
            if terminator == UInt8(ascii: "\r") {
                if let next = pending.readableBytesView.first {
                    if next == UInt8(ascii: "\n") { pending.moveReaderIndex(forwardBy: 1) }
                } else {
                    skipLineFeed = true
                }
            }
            if let event = try process(line) {
                events.append(event)
            }
        }
        guard pending.readableBytes <= maxEventBytes else { throw Overflow(limit: maxEventBytes) }
        pending.discardReadBytes()
        return events
    }

    private mutating func process(_ line: ByteBuffer) throws(Overflow) -> ByteBuffer? {
        var line = line
        guard line.readableBytes > 0 else {
            defer { data = nil }
            return data
        }
        if line.readableBytesView.first == UInt8(ascii: ":") { return nil }
        let field: ByteBuffer
        if let colon = line.readableBytesView.firstIndex(of: UInt8(ascii: ":")) {
            field = line.readSlice(length: colon - line.readerIndex) ?? ByteBuffer()
            line.moveReaderIndex(forwardBy: 1)
            if line.readableBytesView.first == UInt8(ascii: " ") { line.moveReaderIndex(forwardBy: 1) }
        } else {
            field = line
            line.moveReaderIndex(to: line.writerIndex)
        }
        guard field.readableBytesView.elementsEqual("data".utf8) else { return nil }
        if data == nil {
            data = ByteBuffer()
        } else {
            data?.writeInteger(UInt8(ascii: "\n"))
        }
        data?.writeBuffer(&line)
        if let size = data?.readableBytes, size > maxEventBytes { throw Overflow(limit: maxEventBytes) }
        return nil
    }
}
