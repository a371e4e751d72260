import NIOCore
import Testing

@testable import RelayLoadKit

@Suite struct ResponseParserTests {
    /// Feeds `text` in pieces of `step` bytes and collects the `.end` summaries.
    private func responses(
        _ text: String,
        step: Int,
        options: ResponseParser.Options = .init()
    ) throws -> [ResponseSummary] {
        var parser = ResponseParser(options: options)
        var found: [ResponseSummary] = []
        let bytes = Array(text.utf8)
        var start = 0
        while start < bytes.count {
            var buffer = ByteBuffer(bytes: bytes[start..<min(bytes.count, start + step)])
            while let event = try parser.next(&buffer) {
                if case .end(let summary) = event { found.append(summary) }
            }
            #expect(buffer.readableBytes == 0)
            start += step
        }
        if let last = try parser.finish() { found.append(last) }
        return found
    }

    @Test func contentLengthResponsesBackToBackAtEverySplit() throws {
        let one = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Relay-Cache: hit\r\n\r\nhello"
        let two = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        let text = one + two
        for step in 1...text.utf8.count {
            let found = try responses(text, step: step, options: .init(watchedHeader: "x-relay-cache"))
            #expect(found.count == 2)
            #expect(found.first?.status == 200)
            #expect(found.first?.watchedValue == "hit")
            #expect(found.first?.bytes == one.utf8.count)
            #expect(found.last?.status == 404)
            #expect(found.last?.watchedValue == nil)
        }
    }

    @Test func chunkedBodiesWithExtensionsAndTrailers() throws {
        let text =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: 1\r\n\r\n"
            + "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
        for step in 1...text.utf8.count {
            let found = try responses(text, step: step)
            #expect(found.map(\.status) == [200, 201])
        }
    }

    @Test func bodilessStatusesAndInterimResponses() throws {
        let text =
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
            + "HTTP/1.1 204 No Content\r\n\r\n"
        let found = try responses(text, step: 7)
        #expect(found.map(\.status) == [304, 204])
    }

    @Test func headResponsesHaveNoBody() throws {
        var parser = ResponseParser()
        parser.expectsNoBody = true
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n")
        guard case .end(let summary) = try parser.next(&buffer) else {
            Issue.record("no end")
            return
        }
        #expect(summary.status == 200)
        #expect(parser.isIdle)
    }

    @Test func keepAliveFollowsVersionAndConnectionHeader() throws {
        #expect(
            try responses("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", step: 100).first?
                .keepAlive == false
        )
        #expect(try responses("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", step: 100).first?.keepAlive == false)
        #expect(
            try responses("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", step: 100).first?
                .keepAlive == true
        )
    }

    @Test func readUntilCloseEndsAtFinish() throws {
        let found = try responses("HTTP/1.1 200 OK\r\n\r\nstreamed until close", step: 4)
        #expect(found.count == 1)
        #expect(found.first?.keepAlive == false)
    }

    @Test func truncatedAndMalformedInputThrow() throws {
        var parser = ResponseParser()
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        _ = try parser.next(&buffer)
        #expect(throws: ResponseParseError.truncated) { try parser.finish() }

        var bad = ResponseParser()
        var garbage = ByteBuffer(string: "SSH-2.0-OpenSSH\r\n\r\n")
        #expect(throws: ResponseParseError.badHead) { try bad.next(&garbage) }

        var badChunk = ResponseParser()
        var chunk = ByteBuffer(string: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        #expect(throws: ResponseParseError.badChunkSize) {
            while try badChunk.next(&chunk) != nil {}
        }
    }

    @Test func headAndBodyEventsWhenAsked() throws {
        var parser = ResponseParser(options: .init(emitHead: true, emitBody: true))
        var buffer = ByteBuffer(
            string: "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/10\r\nContent-Length: 4\r\n\r\nabcd"
        )
        var head: ResponseHead?
        var body = ""
        var ended = false
        while let event = try parser.next(&buffer) {
            switch event {
            case .head(let value): head = value
            case .body(let chunk): body += String(buffer: chunk)
            case .end: ended = true
            }
        }
        #expect(head?.status == 206)
        #expect(head?.first("content-range") == "bytes 0-3/10")
        #expect(body == "abcd")
        #expect(ended)
    }
}
