import NIOCore
import NIOHTTP2

/// HTTP/2's framing (RFC 9113 §4, §6): frame types, flags, the nine-byte frame header, and the frames a server
/// writes itself. Bytes go straight into the connection's outbound buffer; nothing here allocates a frame object.
enum HTTP2Wire {
    static let preface: StaticString = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    static let prefaceLength = 24
    static let frameHeaderLength = 9
    /// The smallest SETTINGS_MAX_FRAME_SIZE (and its default); the largest is 2^24 - 1.
    static let defaultMaxFrameSize = 16_384
    static let maxWindow = Int(Int32.max)
    static let defaultWindow = 65_535

    enum FrameType: UInt8 {
        case data = 0
        case headers = 1
        case priority = 2
        case rstStream = 3
        case settings = 4
        case pushPromise = 5
        case ping = 6
        case goAway = 7
        case windowUpdate = 8
        case continuation = 9
    }

    enum Flag {
        static let endStream: UInt8 = 0x1
        static let ack: UInt8 = 0x1
        static let endHeaders: UInt8 = 0x4
        static let padded: UInt8 = 0x8
        static let priority: UInt8 = 0x20
    }

    enum Setting: UInt16 {
        case headerTableSize = 1
        case enablePush = 2
        case maxConcurrentStreams = 3
        case initialWindowSize = 4
        case maxFrameSize = 5
        case maxHeaderListSize = 6
    }

    /// A frame's nine-byte header.
    struct FrameHeader: Equatable {
        var length: Int
        /// The raw type: unknown types are read and ignored (RFC 9113 §4.1).
        var type: UInt8
        var flags: UInt8
        var stream: Int32

        var known: FrameType? { FrameType(rawValue: type) }
        func has(_ flag: UInt8) -> Bool { flags & flag != 0 }
    }

    /// The header at the buffer's reader index, without moving it; nil until all nine bytes are there.
    static func peekFrameHeader(_ buffer: ByteBuffer) -> FrameHeader? {
        guard buffer.readableBytes >= frameHeaderLength,
            let lengthHigh = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            let lengthLow = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt8.self),
            let type = buffer.getInteger(at: buffer.readerIndex + 3, as: UInt8.self),
            let flags = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self),
            let stream = buffer.getInteger(at: buffer.readerIndex + 5, as: UInt32.self)
        else { return nil }
        return FrameHeader(
            length: Int(lengthHigh) << 8 | Int(lengthLow),
            type: type,
            flags: flags,
            stream: Int32(bitPattern: stream & 0x7FFF_FFFF)
        )
    }

    static func writeFrameHeader(
        _ buffer: inout ByteBuffer,
        length: Int,
        type: FrameType,
        flags: UInt8 = 0,
        stream: Int32 = 0
    ) {
        buffer.writeInteger(UInt16(truncatingIfNeeded: length >> 8))
        buffer.writeInteger(UInt8(truncatingIfNeeded: length))
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(flags)
        buffer.writeInteger(UInt32(bitPattern: stream))
    }

    static func writeSettings(_ buffer: inout ByteBuffer, _ settings: [(Setting, UInt32)]) {
        writeFrameHeader(&buffer, length: settings.count * 6, type: .settings)
        for (setting, value) in settings {
            buffer.writeInteger(setting.rawValue)
            buffer.writeInteger(value)
        }
    }

    static func writeSettingsAck(_ buffer: inout ByteBuffer) {
        writeFrameHeader(&buffer, length: 0, type: .settings, flags: Flag.ack)
    }

    static func writePingAck(_ buffer: inout ByteBuffer, opaque: UInt64) {
        writeFrameHeader(&buffer, length: 8, type: .ping, flags: Flag.ack)
        buffer.writeInteger(opaque)
    }

    static func writeGoAway(_ buffer: inout ByteBuffer, lastStream: Int32, code: HTTP2ErrorCode, debug: String = "") {
        writeFrameHeader(&buffer, length: 8 + debug.utf8.count, type: .goAway)
        buffer.writeInteger(UInt32(bitPattern: lastStream))
        buffer.writeInteger(UInt32(code.networkCode))
        buffer.writeString(debug)
    }

    static func writeReset(_ buffer: inout ByteBuffer, stream: Int32, code: HTTP2ErrorCode) {
        writeFrameHeader(&buffer, length: 4, type: .rstStream, stream: stream)
        buffer.writeInteger(UInt32(code.networkCode))
    }

    static func writeWindowUpdate(_ buffer: inout ByteBuffer, stream: Int32, increment: Int) {
        writeFrameHeader(&buffer, length: 4, type: .windowUpdate, stream: stream)
        buffer.writeInteger(UInt32(increment))
    }

    /// A header block as one HEADERS frame and as many CONTINUATION frames as `maxFrameSize` requires.
    static func writeHeaders(
        _ buffer: inout ByteBuffer,
        stream: Int32,
        block: ByteBuffer,
        endStream: Bool,
        maxFrameSize: Int
    ) {
        var block = block
        var type = FrameType.headers
        var flags = endStream ? Flag.endStream : 0
        repeat {
            let length = min(block.readableBytes, maxFrameSize)
            let last = length == block.readableBytes
            writeFrameHeader(
                &buffer,
                length: length,
                type: type,
                flags: flags | (last ? Flag.endHeaders : 0),
                stream: stream
            )
            var piece = block.readSlice(length: length)!
            buffer.writeBuffer(&piece)
            type = .continuation
            flags = 0
        } while block.readableBytes > 0
    }
}
