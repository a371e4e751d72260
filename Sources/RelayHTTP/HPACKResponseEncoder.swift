import NIOCore
import NIOHPACK

/// The relay's HPACK encoder for response header blocks (RFC 7541). It never adds to the peer's dynamic table: every
/// field is an indexed `:status` or a literal without indexing (a static-table name where there is one), and no
/// string is Huffman-coded. So it keeps no state beyond the table size updates it owes the peer, a block can be
/// encoded once and sent again on any stream or connection, and encoding costs a copy of the bytes.
struct HPACKResponseEncoder {
    /// The peer's SETTINGS_HEADER_TABLE_SIZE, once lowered below the size in force: the next block must start by
    /// signalling it (RFC 7541 §4.2). The relay's own table holds nothing, so the size is all it signals.
    private var owedSizeUpdate: Int?
    private var tableSize = 4096

    /// The peer's decoder table size changed (its SETTINGS, which the connection acknowledges). Only a smaller
    /// size matters: the encoder keeps the smallest it was allowed, since it stores nothing either way.
    mutating func peerTableSizeChanged(_ size: Int) {
        guard size < tableSize else { return }
        tableSize = size
        owedSizeUpdate = size
    }

    /// The size update the next block must start with, once.
    mutating func takeOwedPrefix(into buffer: inout ByteBuffer) {
        guard let size = owedSizeUpdate else { return }
        owedSizeUpdate = nil
        Self.writeInteger(size, prefixBits: 5, flags: 0x20, into: &buffer)
    }

    var owesSizeUpdate: Bool { owedSizeUpdate != nil }

    /// A header block from the multiplexer's streams (`:status` among the fields, as NIO's codec makes them).
    static func block(_ headers: HPACKHeaders, into buffer: inout ByteBuffer) {
        for (name, value, indexing) in headers {
            if name == ":status", let code = UInt(value) {
                writeStatus(code, into: &buffer)
            } else {
                writeField(name: name, value: value, neverIndexed: indexing == .neverIndexed, into: &buffer)
            }
        }
    }

    static func writeStatus(_ status: UInt, into buffer: inout ByteBuffer) {
        switch status {
        case 200: buffer.writeInteger(UInt8(0x88))
        case 204: buffer.writeInteger(UInt8(0x89))
        case 206: buffer.writeInteger(UInt8(0x8A))
        case 304: buffer.writeInteger(UInt8(0x8B))
        case 400: buffer.writeInteger(UInt8(0x8C))
        case 404: buffer.writeInteger(UInt8(0x8D))
        case 500: buffer.writeInteger(UInt8(0x8E))
        default:
            // Literal without indexing, name `:status` (static index 8).
            buffer.writeInteger(UInt8(0x08))
            let digits = String(status)
            writeInteger(digits.utf8.count, prefixBits: 7, flags: 0, into: &buffer)
            buffer.writeString(digits)
        }
    }

    static func writeField(name: String, value: String, neverIndexed: Bool = false, into buffer: inout ByteBuffer) {
        // Literal without indexing is 0000xxxx, never indexed 0001xxxx; the low four bits name a static entry.
        let flags: UInt8 = neverIndexed ? 0x10 : 0
        if let index = staticNameIndex(name) {
            writeInteger(index, prefixBits: 4, flags: flags, into: &buffer)
        } else {
            buffer.writeInteger(flags)
            writeInteger(name.utf8.count, prefixBits: 7, flags: 0, into: &buffer)
            buffer.writeString(name)
        }
        writeInteger(value.utf8.count, prefixBits: 7, flags: 0, into: &buffer)
        buffer.writeString(value)
    }

    /// RFC 7541 §5.1.
    static func writeInteger(_ value: Int, prefixBits: Int, flags: UInt8, into buffer: inout ByteBuffer) {
        let limit = (1 << prefixBits) - 1
        guard value >= limit else {
            buffer.writeInteger(flags | UInt8(value))
            return
        }
        buffer.writeInteger(flags | UInt8(limit))
        var rest = value - limit
        while rest >= 128 {
            buffer.writeInteger(UInt8(rest & 0x7F | 0x80))
            rest >>= 7
        }
        buffer.writeInteger(UInt8(rest))
    }

    /// The static table's entry for a response field's name (RFC 7541 Appendix A), for the names responses carry.
    private static func staticNameIndex(_ name: String) -> Int? {
        switch name {
        case "accept-ranges": 18
        case "access-control-allow-origin": 20
        case "age": 21
        case "allow": 22
        case "cache-control": 24
        case "content-disposition": 25
        case "content-encoding": 26
        case "content-length": 28
        case "content-range": 30
        case "content-type": 31
        case "date": 33
        case "etag": 34
        case "expires": 36
        case "last-modified": 44
        case "link": 45
        case "location": 46
        case "retry-after": 53
        case "server": 54
        case "set-cookie": 55
        case "strict-transport-security": 56
        case "vary": 59
        case "via": 60
        case "www-authenticate": 61
        default: nil
        }
    }
}
