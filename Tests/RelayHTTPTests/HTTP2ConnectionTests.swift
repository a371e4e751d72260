import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import Testing

@testable import RelayHTTP

/// The relay's HTTP/2 connection between two EmbeddedChannels: NIO's own client codec on one side (an independent
/// implementation checks every frame and header block the relay writes), `HTTP2Connection` and NIO's multiplexer with
/// a small responder on the other. Bytes move only when a test says so; no clock, no sleep.
@Suite struct HTTP2ConnectionTests {
    /// A stream channel's handler: answers `?size=N` with N bytes, and any body with "got N bytes".
    final class Responder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        var uri = ""
        var received = 0

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): uri = head.uri
            case .body(let body): received += body.readableBytes
            case .end:
                let size = uri.split(separator: "=").last.flatMap { Int($0) }
                let body = size.map { String(repeating: "x", count: $0) } ?? "got \(received) bytes"
                var head = HTTPResponseHead(version: .http1_1, status: .ok)
                head.headers.add(name: "content-length", value: String(body.utf8.count))
                head.headers.add(name: "x-Relay-Test", value: "yes")
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                guard uri.hasPrefix("/chained") else {
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                    return
                }
                // The end written once the body is out, as the relay's media responses do: from inside the flush.
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                let end = wrapOutboundOut(.end(nil))
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body))))).whenComplete { _ in
                    bound.value.writeAndFlush(end, promise: nil)
                }
            }
        }
    }

    final class Pair {
        let client = EmbeddedChannel()
        let server = EmbeddedChannel()
        private let opened = NIOLockedValueBox(0)
        var streamChannels: Int { opened.withLockedValue { $0 } }

        init(
            clientSettings: HTTP2Settings = nioDefaultSettings,
            lane: HTTP2FastLane? = nil,
            now: @escaping () -> NIODeadline = NIODeadline.now
        ) throws {
            try client.pipeline.syncOperations.addHandler(
                NIOHTTP2Handler(mode: .client, initialSettings: clientSettings, headerBlockValidation: .disabled)
            )
            try server.pipeline.syncOperations.addHandler(HTTP2Connection(settings: .init(), lane: lane, now: now))
            try server.pipeline.syncOperations.addHandler(
                HTTP2StreamMultiplexer(mode: .server, channel: server) { [opened] stream in
                    opened.withLockedValue { $0 += 1 }
                    return stream.eventLoop.makeCompletedFuture {
                        try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                        try stream.pipeline.syncOperations.addHandler(Responder())
                    }
                }
            )
            let address = try SocketAddress(ipAddress: "127.0.0.1", port: 443)
            try server.connect(to: address).wait()
            try client.connect(to: address).wait()
            try exchange()
        }

        /// Moves bytes both ways until neither side has anything to send.
        func exchange() throws {
            var moved = true
            var rounds = 0
            while moved {
                rounds += 1
                guard rounds < 1_000 else {
                    Issue.record("the two sides never went quiet")
                    return
                }
                moved = false
                while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                    try server.writeInbound(bytes)
                    moved = true
                }
                while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                    try client.writeInbound(bytes)
                    moved = true
                }
            }
        }

        func send(_ frame: HTTP2Frame) throws {
            try client.writeOutbound(frame)
            try exchange()
        }

        /// The frames the client received since the last call (SETTINGS and its ACKs left out).
        func received() throws -> [HTTP2Frame] {
            var frames: [HTTP2Frame] = []
            while let frame = try client.readInbound(as: HTTP2Frame.self) {
                if case .settings = frame.payload { continue }
                frames.append(frame)
            }
            return frames
        }
    }

    static func request(_ method: String, _ path: String, extra: [(String, String)] = []) -> HPACKHeaders {
        HPACKHeaders([(":method", method), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", path)] + extra)
    }

    static func headers(_ stream: Int, _ fields: HPACKHeaders, endStream: Bool = true) -> HTTP2Frame {
        HTTP2Frame(streamID: HTTP2StreamID(stream), payload: .headers(.init(headers: fields, endStream: endStream)))
    }

    static func data(_ stream: Int, _ bytes: Int, endStream: Bool) -> HTTP2Frame {
        let body = ByteBuffer(repeating: 0x61, count: bytes)
        return HTTP2Frame(
            streamID: HTTP2StreamID(stream),
            payload: .data(.init(data: .byteBuffer(body), endStream: endStream))
        )
    }

    static func body(_ frames: [HTTP2Frame]) -> String {
        frames.compactMap { frame -> String? in
            guard case .data(let data) = frame.payload, case .byteBuffer(let bytes) = data.data else { return nil }
            return String(buffer: bytes)
        }.joined()
    }

    @Test func aRequestGoesToAStreamChannelAndItsAnswerComesBack() throws {
        let pair = try Pair()
        try pair.send(Self.headers(1, Self.request("GET", "/echo?size=5")))
        let frames = try pair.received()
        guard case .headers(let head) = frames.first?.payload else {
            Issue.record("no HEADERS: \(frames)")
            return
        }
        #expect(head.headers.first(name: ":status") == "200")
        #expect(head.headers.first(name: "x-relay-test") == "yes")
        #expect(Self.body(frames) == "xxxxx")
        #expect(pair.streamChannels == 1)
        guard case .data(let last) = frames.last?.payload else { return }
        #expect(last.endStream)
    }

    @Test func anAnswerWaitsForTheClientsWindow() throws {
        var settings = nioDefaultSettings
        settings.append(HTTP2Setting(parameter: .initialWindowSize, value: 10))
        let pair = try Pair(clientSettings: settings)
        try pair.send(Self.headers(1, Self.request("GET", "/echo?size=100")))
        #expect(Self.body(try pair.received()).count == 10)
        try pair.send(HTTP2Frame(streamID: 1, payload: .windowUpdate(windowSizeIncrement: 50)))
        #expect(Self.body(try pair.received()).count == 50)
        try pair.send(HTTP2Frame(streamID: 1, payload: .windowUpdate(windowSizeIncrement: 40)))
        let rest = try pair.received()
        #expect(Self.body(rest).count == 40)
        guard case .data(let last) = rest.last?.payload else {
            Issue.record("no end: \(rest)")
            return
        }
        #expect(last.endStream)
    }

    @Test func anUploadLargerThanTheWindowsIsReadWhileTheStreamChannelGrantsMore() throws {
        let pair = try Pair()
        let size = 200_000
        try pair.send(
            Self.headers(
                1,
                Self.request("POST", "/upload", extra: [("content-length", String(size))]),
                endStream: false
            )
        )
        var sent = 0
        while sent < size {
            let piece = min(16_384, size - sent)
            sent += piece
            // Not `writeOutbound`: it waits for the write, and NIO's client holds what the window cannot take.
            pair.client.writeAndFlush(Self.data(1, piece, endStream: sent == size), promise: nil)
        }
        try pair.exchange()
        #expect(Self.body(try pair.received()) == "got 200000 bytes")
    }

    @Test func aMalformedRequestResetsItsStreamOnly() throws {
        let pair = try Pair()
        try pair.send(Self.headers(1, Self.request("GET", "/echo?size=1", extra: [("X-Upper", "no")])))
        let reset = try pair.received()
        guard case .rstStream(let code) = reset.first?.payload else {
            Issue.record("no RST_STREAM: \(reset)")
            return
        }
        #expect(code == .protocolError)
        try pair.send(Self.headers(3, Self.request("GET", "/echo?size=2")))
        #expect(Self.body(try pair.received()) == "xx")
        #expect(pair.streamChannels == 1)
    }

    @Test func aFrameNoClientMaySendEndsTheConnectionWithGoAway() throws {
        let server = EmbeddedChannel()
        try server.pipeline.syncOperations.addHandler(HTTP2Connection(settings: .init(), lane: nil))
        try server.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        var bytes = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        HTTP2Wire.writeSettings(&bytes, [])
        HTTP2Wire.writeFrameHeader(&bytes, length: 0, type: .headers, flags: HTTP2Wire.Flag.endHeaders, stream: 2)
        try server.writeInbound(bytes)
        var out = ByteBuffer()
        while var piece = try server.readOutbound(as: ByteBuffer.self) { out.writeBuffer(&piece) }
        var frames: [(HTTP2Wire.FrameHeader, ByteBuffer)] = []
        while let header = HTTP2Wire.peekFrameHeader(out) {
            out.moveReaderIndex(forwardBy: 9)
            frames.append((header, out.readSlice(length: header.length)!))
        }
        #expect(frames.map(\.0.known) == [.settings, .settings, .goAway])
        var goAway = frames.last!.1
        #expect(goAway.readInteger(as: UInt32.self) == 0)
        #expect(goAway.readInteger(as: UInt32.self) == UInt32(HTTP2ErrorCode.protocolError.networkCode))
        #expect(!server.isActive)
    }

    @Test func quiescingSendsGoAwayAndClosesOnceTheLastStreamEnds() throws {
        let pair = try Pair()
        try pair.send(Self.headers(1, Self.request("POST", "/upload"), endStream: false))
        pair.server.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try pair.exchange()
        let goAway = try pair.received()
        guard case .goAway(let last, let code, _) = goAway.first?.payload else {
            Issue.record("no GOAWAY: \(goAway)")
            return
        }
        #expect(last == 1)
        #expect(code == .noError)
        #expect(pair.server.isActive)
        try pair.send(Self.data(1, 3, endStream: true))
        #expect(Self.body(try pair.received()) == "got 3 bytes")
        #expect(!pair.server.isActive)
    }

    @Test func aStreamResetForItsPriorityStillKeepsTheHeaderTableInStep() throws {
        let pair = try Pair()
        // Raw frames from here on (NIO's client will not send a stream depending on itself).
        var bytes = ByteBuffer()
        var first = ByteBuffer(bytes: [0x82, 0x87, 0x84, 0x41, 9] + Array("127.0.0.1".utf8))
        first.writeBytes([0x40, 3] + Array("x-a".utf8) + [1] + Array("b".utf8))  // both into the dynamic table
        HTTP2Wire.writeFrameHeader(
            &bytes,
            length: 5 + first.readableBytes,
            type: .headers,
            flags: HTTP2Wire.Flag.endHeaders | HTTP2Wire.Flag.endStream | HTTP2Wire.Flag.priority,
            stream: 1
        )
        bytes.writeInteger(UInt32(1))  // depends on itself
        bytes.writeInteger(UInt8(15))
        bytes.writeBuffer(&first)
        let second: [UInt8] = [0x82, 0x87, 0x84, 0xBF, 0xBE]  // :authority and x-a from the dynamic table
        HTTP2Wire.writeFrameHeader(
            &bytes,
            length: second.count,
            type: .headers,
            flags: HTTP2Wire.Flag.endHeaders | HTTP2Wire.Flag.endStream,
            stream: 3
        )
        bytes.writeBytes(second)
        try pair.server.writeInbound(bytes)
        var out = ByteBuffer()
        while var piece = try pair.server.readOutbound(as: ByteBuffer.self) { out.writeBuffer(&piece) }
        var seen: [(HTTP2Wire.FrameType?, Int32)] = []
        while let header = HTTP2Wire.peekFrameHeader(out) {
            out.moveReaderIndex(forwardBy: 9 + header.length)
            seen.append((header.known, header.stream))
        }
        #expect(seen.contains { $0 == (.rstStream, 1) })
        #expect(seen.contains { $0 == (.headers, 3) })
        #expect(!seen.contains { $0.0 == .goAway })
    }

    @Test func manyResetsInAWindowEndTheConnectionAndSpreadOutTheyDoNot() throws {
        let clock = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
        let pair = try Pair(now: { clock.withLockedValue { $0 } })
        var stream = 1
        func openAndReset(_ count: Int) throws {
            for _ in 0..<count {
                pair.client.writeAndFlush(
                    Self.headers(stream, Self.request("POST", "/upload"), endStream: false),
                    promise: nil
                )
                pair.client.writeAndFlush(
                    HTTP2Frame(streamID: HTTP2StreamID(stream), payload: .rstStream(.cancel)),
                    promise: nil
                )
                stream += 2
            }
            try pair.exchange()
        }
        try openAndReset(150)
        clock.withLockedValue { $0 = $0 + .seconds(31) }
        try openAndReset(150)
        #expect(!(try pair.received()).contains { if case .goAway = $0.payload { true } else { false } })
        try openAndReset(60)
        let frames = try pair.received()
        guard
            case .goAway(_, let code, _) = frames.last(where: { if case .goAway = $0.payload { true } else { false } })?
                .payload
        else {
            Issue.record("no GOAWAY after 210 resets in a window")
            return
        }
        #expect(code == .enhanceYourCalm)
    }

    @Test func streamsWaitingOnTheConnectionWindowAreServedInTurn() throws {
        var settings = nioDefaultSettings
        settings.append(HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20))
        let pair = try Pair(clientSettings: settings)
        for stream in [1, 3, 5] {
            pair.client.writeAndFlush(Self.headers(stream, Self.request("GET", "/echo?size=40000")), promise: nil)
        }
        try pair.exchange()
        func bytes(_ frames: [HTTP2Frame]) -> [Int: Int] {
            var count: [Int: Int] = [:]
            for frame in frames {
                guard case .data(let data) = frame.payload else { continue }
                count[Int(frame.streamID), default: 0] += data.data.readableBytes
            }
            return count
        }
        // The connection's 65,535 bytes: stream 1 whole, stream 3 the rest, stream 5 nothing yet.
        #expect(bytes(try pair.received()) == [1: 40_000, 3: 25_535])
        try pair.send(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: 10_000)))
        #expect(bytes(try pair.received()) == [3: 10_000])
        // The next grant goes to stream 5 first, not to stream 3 again.
        try pair.send(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: 10_000)))
        #expect(bytes(try pair.received()) == [5: 10_000])
    }

    @Test func anAnswerEndedFromInsideAFlushIsSentOnce() throws {
        let pair = try Pair()
        try pair.send(Self.headers(1, Self.request("GET", "/chained?size=7")))
        let frames = try pair.received()
        #expect(Self.body(frames) == "xxxxxxx")
        #expect(frames.filter { if case .headers = $0.payload { true } else { false } }.count == 1)
        // The connection goes on: the next request is answered, with nothing of the first sent again.
        try pair.send(Self.headers(3, Self.request("GET", "/echo?size=2")))
        let next = try pair.received()
        #expect(Self.body(next) == "xx")
        #expect(next.allSatisfy { $0.streamID == 3 })
    }

    @Test func trailersOfARequestAnswered431NeverReachTheMultiplexer() throws {
        var settings = nioDefaultSettings
        settings.append(HTTP2Setting(parameter: .initialWindowSize, value: 16))
        let pair = try Pair(clientSettings: settings)
        // Raw frames (NIO's client sends no CONTINUATION); the server's HPACK table is still empty.
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        var block = ByteBuffer()
        let big = Self.request("POST", "/upload", extra: [("x-big", String(repeating: "a", count: 40_000))])
        try encoder.encode(headers: big, to: &block)
        var bytes = ByteBuffer()
        HTTP2Wire.writeHeaders(&bytes, stream: 1, block: block, endStream: false, maxFrameSize: 16_384)
        var trailers = ByteBuffer()
        try encoder.encode(headers: HPACKHeaders([("x-trailer", "1")]), to: &trailers)
        HTTP2Wire.writeHeaders(&bytes, stream: 1, block: trailers, endStream: true, maxFrameSize: 16_384)
        HTTP2Wire.writeWindowUpdate(&bytes, stream: 1, increment: 1_000)
        try pair.server.writeInbound(bytes)
        var out = ByteBuffer()
        while var piece = try pair.server.readOutbound(as: ByteBuffer.self) { out.writeBuffer(&piece) }
        var headers = ByteBuffer()
        var body = ByteBuffer()
        var ended = false
        while let header = HTTP2Wire.peekFrameHeader(out) {
            out.moveReaderIndex(forwardBy: 9)
            var payload = out.readSlice(length: header.length)!
            guard header.stream == 1 else { continue }
            if header.known == .headers { headers.writeBuffer(&payload) }
            if header.known == .data {
                body.writeBuffer(&payload)
                ended = ended || header.has(HTTP2Wire.Flag.endStream)
            }
        }
        #expect(String(buffer: headers).contains("431"))
        #expect(String(buffer: body).contains("32768"))
        #expect(ended)
        #expect(pair.streamChannels == 0)
    }

    @Test func aFloodOfEmptyFramesEndsTheConnection() throws {
        let pair = try Pair()
        try pair.send(Self.headers(1, Self.request("POST", "/upload"), endStream: false))
        // Raw: 1,001 empty DATA frames, each free for the client and a frame to pass on for the relay.
        var bytes = ByteBuffer()
        for _ in 0...1_000 { HTTP2Wire.writeFrameHeader(&bytes, length: 0, type: .data, stream: 1) }
        try pair.server.writeInbound(bytes)
        var out = ByteBuffer()
        while var piece = try pair.server.readOutbound(as: ByteBuffer.self) { out.writeBuffer(&piece) }
        var goAway: UInt32?
        while let header = HTTP2Wire.peekFrameHeader(out) {
            out.moveReaderIndex(forwardBy: 9)
            var payload = out.readSlice(length: header.length)!
            if header.known == .goAway {
                _ = payload.readInteger(as: UInt32.self)
                goAway = payload.readInteger(as: UInt32.self)
            }
        }
        #expect(goAway == UInt32(HTTP2ErrorCode.enhanceYourCalm.networkCode))
        #expect(!pair.server.isActive)
    }
}
