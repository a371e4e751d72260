import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import RelayHTTP

/// The watch protocol's pre-encoded server frames are byte for byte what NIO's frame encoder writes.
@Suite struct EncodedWebSocketFrameTests {
    @Test(arguments: [0, 5, 125, 126, 200, 65535, 65536, 70000])
    func aPreEncodedTextFrameMatchesNIOsEncoder(size: Int) throws {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 32) }
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        defer { _ = try? channel.finish() }
        try channel.writeOutbound(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: payload)))
        var expected = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) {
            expected.writeBuffer(&part)
        }
        #expect(WebSocketSessionHandler.encodedTextFrame(payload, allocator: ByteBufferAllocator()) == expected)
    }
}
