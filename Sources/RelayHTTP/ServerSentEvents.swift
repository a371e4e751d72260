import NIOCore
import RelayCore

/// Server-Sent Events framing (WHATWG HTML §9.2) for every stream the relay sends.
enum ServerSentEvents {
    /// `id: n` (optional), `data: <json>`, blank line.
    static func frame(data: JSONValue, id: Int?, allocator: ByteBufferAllocator) -> ByteBuffer {
        var bytes: [UInt8] = id.map { Array("id: \($0)\n".utf8) } ?? []
        bytes.append(contentsOf: "data: ".utf8)
        data.write(into: &bytes)
        bytes.append(contentsOf: [UInt8(ascii: "\n"), UInt8(ascii: "\n")])
        return allocator.buffer(bytes: bytes)
    }

    /// A comment that keeps idle intermediaries from closing the stream.
    static let keepAlive = ": ping\n\n"

    /// Sent as the relay shuts down: reconnect soon, to this relay's successor or another instance, resuming with
    /// Last-Event-ID.
    static let shutdownHint = "retry: 1000\n: the relay is shutting down; reconnect with Last-Event-ID\n\n"
}
