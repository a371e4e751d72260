import NIOCore

/// Splits a `text/event-stream` body into event data (WHATWG §9.2.6), chunk by chunk: comments, `event:` and `id:`
/// are skipped (fal statuses are told apart by their JSON); several `data:` lines join with LF.
struct EventStreamDecoder: Sendable {
    static let maxEventBytes = 8 << 20
    private var pending = ByteBuffer()
    private var data: ByteBuffer?
    private var skipLineFeed = false

    mutating func feed(_ chunk: ByteBuffer) throws -> [ByteBuffer] {
        var chunk = chunk
        if skipLineFeed, chunk.readableBytesView.first == UInt8(ascii: "\n") { chunk.moveReaderIndex(forwardBy: 1) }
        skipLineFeed = false
        pending.writeBuffer(&chunk)
        var events: [ByteBuffer] = []
        while let end = pending.readableBytesView.firstIndex(where: {
            $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r")
        }) {
            guard let line = pending.readSlice(length: end - pending.readerIndex),
                let terminator = pending.readInteger(as: UInt8.self)
            else { break }
            if terminator == UInt8(ascii: "\r") {
                if let next = pending.readableBytesView.first {
                    if next == UInt8(ascii: "\n") { pending.moveReaderIndex(forwardBy: 1) }
                } else {
                    skipLineFeed = true
                }
            }
            if let event = try process(line) { events.append(event) }
        }
        guard pending.readableBytes <= Self.maxEventBytes else {
            throw SubmitFailure.failed("a status stream line exceeds \(Self.maxEventBytes) bytes")
        }
        pending.discardReadBytes()
        return events
    }

    private mutating func process(_ line: ByteBuffer) throws -> ByteBuffer? {
        var line = line
        guard line.readableBytes > 0 else {
            defer { data = nil }
            return data
        }
        guard line.readableBytesView.first != UInt8(ascii: ":") else { return nil }
        let colon = line.readableBytesView.firstIndex(of: UInt8(ascii: ":")) ?? line.writerIndex
        let field = line.readSlice(length: colon - line.readerIndex) ?? ByteBuffer()
        guard field.readableBytesView.elementsEqual("data".utf8) else { return nil }
        if line.readableBytes > 0 { line.moveReaderIndex(forwardBy: 1) }
        if line.readableBytesView.first == UInt8(ascii: " ") { line.moveReaderIndex(forwardBy: 1) }
        if data == nil {
            data = ByteBuffer()
        } else {
            data?.writeInteger(UInt8(ascii: "\n"))
        }
        data?.writeBuffer(&line)
        if let size = data?.readableBytes, size > Self.maxEventBytes {
            throw SubmitFailure.failed("a status stream event exceeds \(Self.maxEventBytes) bytes")
        }
        return nil
    }
}
