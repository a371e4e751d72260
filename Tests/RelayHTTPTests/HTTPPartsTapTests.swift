import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import RelayHTTP

@Suite struct HTTPPartsTapTests {
    /// llhttp stops at its own cap; the client is told the limit this relay was configured with.
    @Test func aHeaderOverflowIsA431NamingTheConfiguredLimit() throws {
        let channel = EmbeddedChannel()
        let timer = ConnectionStateHandler(limits: ConnectionStateMachine.Limits(maxHeaderBytes: 4096))
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

/// The connection's state handler and its probe on an EmbeddedChannel whose loop is the clock: deadlines fire when the
/// test moves time, never by sleeping.
@Suite struct ConnectionStateTests {
    func channel(
        limits: ConnectionStateMachine.Limits = ConnectionStateMachine.Limits()
    ) throws -> (EmbeddedChannel, ConnectionStateHandler) {
        let channel = EmbeddedChannel()
        let loop = channel.embeddedEventLoop
        let timer = ConnectionStateHandler(limits: limits, now: { loop.now })
        try channel.pipeline.syncOperations.addHandler(timer)
        try channel.pipeline.syncOperations.addHandler(HTTPPartsTap(timer: timer, maxURLBytes: 8192))
        return (channel, timer)
    }

    @Test func aHeadNotCompleteInTimeIs408OnTheInjectedClock() throws {
        // The handler alone: its bytes would reach NIO's decoder next, which this test does not need.
        let channel = EmbeddedChannel()
        let loop = channel.embeddedEventLoop
        let limits = ConnectionStateMachine.Limits(headerTimeout: .seconds(10))
        try channel.pipeline.syncOperations.addHandler(ConnectionStateHandler(limits: limits, now: { loop.now }))
        try channel.writeInbound(ByteBuffer(string: "GET /healthz HTTP/1.1\r\n"))
        #expect(try channel.readInbound(as: ByteBuffer.self) != nil)
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        let answer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: answer).hasPrefix("HTTP/1.1 408 "))
        _ = try? channel.finish()
    }

    @Test func responsesOwedAndTheResponseInProgressLiveInTheOneMachine() throws {
        let (channel, timer) = try channel()
        #expect(timer.owesNoResponse && !timer.isResponding)
        timer.requestForwarded()
        timer.requestForwarded()
        #expect(!timer.owesNoResponse && timer.requestsForwarded == 2)
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .continue)))
        #expect(!timer.isResponding, "a 100 Continue is not the response")
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        #expect(timer.isResponding)
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(!timer.isResponding && !timer.owesNoResponse)
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(timer.owesNoResponse)
        // A parser error while a response is under way is closed, not answered (the bytes would interleave).
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        while try channel.readOutbound(as: HTTPServerResponsePart.self) != nil {}
        channel.pipeline.fireErrorCaught(HTTPParserError.invalidHeaderToken)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try? channel.finish()
    }
}
