import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import RelayHTTP

@Suite struct HTTPPartsTapTests {
    /// llhttp stops at its own cap; the client is told the limit this relay was configured with.
    @Test func aHeaderOverflowIsA431NamingTheConfiguredLimit() throws {
        let channel = EmbeddedChannel()
        let timer = ConnectionTimer(limits: ConnectionClock.Limits(maxHeaderBytes: 4096))
        try channel.pipeline.syncOperations.addHandler(timer)
        try channel.pipeline.syncOperations.addHandler(HTTPPartsTap(timer: timer, maxURLBytes: 8192))
        channel.pipeline.fireErrorCaught(HTTPParserError.headerOverflow)
        let answer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let text = String(buffer: answer)
        #expect(text.hasPrefix("HTTP/1.1 431 "))
        #expect(text.contains(#""detail":"The request headers exceed 4096 bytes""#))
        #expect(text.contains("x-fal-error-type: request_header_fields_too_large"))
        _ = try? channel.finish()
    }
}
