import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import RelayCore
import RelayStore
import Testing

@testable import RelayHTTP

/// The handler-side sequence (record → plan → body → writes) on a real socket with NIO's HTTP/1.1 pipeline, the
/// way RelayHTTPHandler is to do it: a FileRegion goes through HTTPResponseEncoder to sendfile, HEAD keeps its
/// Content-Length, 304 loses it, 416 carries a fal-shaped JSON error, and a keep-alive connection serves the next
/// request after a body.
@Suite struct MediaServingTests {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]
    }

    @Test(arguments: [true, false])
    func servesRangesConditionalsAndHead(zeroCopy: Bool) async throws {
        let fixture = try MediaFileSourceTests.Fixture()
        defer { fixture.remove() }
        let png = MediaFileSourceTests.png(300_000)
        let wav = MediaFileSourceTests.wav(samples: 100_000)
        let pngRecord = try await fixture.store.put(png, mediaType: .png)
        let wavRecord = try await fixture.store.put(wav, mediaType: .wav)
        let server = try await Self.startServer(source: fixture.source, zeroCopy: zeroCopy)
        defer { server.close(promise: nil) }
        let port = try #require(server.localAddress?.port)
        let pngPath = "/files/\(pngRecord.fileName)"
        let etag = "\"\(pngRecord.digest.hex)\""

        let full = try await Self.exchange(port: port, [("GET", pngPath, [])]).first
        #expect(full?.status == 200)
        #expect(full?.headers["content-length"] == "300000")
        #expect(full?.headers["content-type"] == "image/png")
        #expect(full?.headers["etag"] == etag)
        #expect(full?.headers["cache-control"] == "public, max-age=31536000, immutable")
        #expect(full?.headers["accept-ranges"] == "bytes")
        #expect(full?.headers["x-content-type-options"] == "nosniff")
        #expect(full?.headers["x-fal-request-id"] != nil)
        #expect(full?.body == png)

        let partial = try await Self.exchange(port: port, [("GET", pngPath, [("Range", "bytes=100000-")])]).first
        #expect(partial?.status == 206)
        #expect(partial?.headers["content-range"] == "bytes 100000-299999/300000")
        #expect(partial?.headers["content-length"] == "200000")
        #expect(partial?.body == Array(png[100_000...]))

        let head = try await Self.exchange(port: port, [("HEAD", pngPath, [("Range", "bytes=-10")])]).first
        #expect(head?.status == 206)
        #expect(head?.headers["content-length"] == "10")
        #expect(head?.headers["content-range"] == "bytes 299990-299999/300000")
        #expect(head?.body == [])

        let notModified = try await Self.exchange(port: port, [("GET", pngPath, [("If-None-Match", etag)])]).first
        #expect(notModified?.status == 304)
        #expect(notModified?.headers["etag"] == etag)
        #expect(notModified?.headers["content-length"] == nil)
        #expect(notModified?.body == [])

        let unsatisfiable = try await Self.exchange(port: port, [("GET", pngPath, [("Range", "bytes=300000-")])]).first
        #expect(unsatisfiable?.status == 416)
        #expect(unsatisfiable?.headers["content-range"] == "bytes */300000")
        #expect(unsatisfiable?.headers["content-type"] == "application/json")
        #expect(unsatisfiable?.headers["x-fal-error-type"] == "range_not_satisfiable")
        let error = try #require(unsatisfiable?.body).withUnsafeBytes { try JSONValue(parsing: $0) }
        #expect(error.objectValue?["error_type"] == .string("range_not_satisfiable"))
        #expect(error.objectValue?["detail"] != nil)

        let audio = try await Self.exchange(
            port: port,
            [("GET", "/files/\(wavRecord.fileName)", [("Range", "bytes=44-1043")])]
        ).first
        #expect(audio?.status == 206)
        #expect(audio?.headers["content-type"] == "audio/wav")
        #expect(audio?.body == Array(wav[44..<1044]))

        let missing = try await Self.exchange(
            port: port,
            [("GET", "/files/\(String(repeating: "0", count: 32)).png", [])]
        ).first
        #expect(missing?.status == 404)

        // Keep-alive: a body, a HEAD, a 304 and another body on one connection, in order.
        let sequence = try await Self.exchange(
            port: port,
            [
                ("GET", pngPath, [("Range", "bytes=0-99999")]),
                ("HEAD", pngPath, []),
                ("GET", pngPath, [("If-None-Match", "W/\(etag)")]),
                ("GET", pngPath, [("Range", "bytes=299000-")]),
            ]
        )
        #expect(sequence.map(\.status) == [206, 200, 304, 206])
        #expect(sequence.first?.body == Array(png[0..<100_000]))
        #expect(sequence.last?.body == Array(png[299_000...]))
    }

    // MARK: - A client and a server on port 0

    static func startServer(source: MediaFileSource, zeroCopy: Bool) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandler(MediaReferenceHandler(source: source, zeroCopy: zeroCopy))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    /// Sends the requests pipelined on one connection (the last with `Connection: close`) and parses the responses.
    static func exchange(port: Int, _ requests: [(String, String, [(String, String)])]) async throws -> [Response] {
        var text = ""
        for (index, (method, path, fields)) in requests.enumerated() {
            text += "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            for (name, value) in fields { text += "\(name): \(value)\r\n" }
            if index == requests.count - 1 { text += "Connection: close\r\n" }
            text += "\r\n"
        }
        let received = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: [UInt8].self)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CollectingHandler(done: received))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
        let bytes = try await received.futureResult.get()
        return try parse(bytes, methods: requests.map(\.0))
    }

    struct MalformedResponse: Error {}

    static func parse(_ bytes: [UInt8], methods: [String]) throws -> [Response] {
        var responses: [Response] = []
        var rest = bytes[...]
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        for method in methods {
            guard let end = rest.firstRange(of: separator) else { throw MalformedResponse() }
            let lines = String(decoding: rest[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
            guard let statusLine = lines.first, let status = Int(statusLine.split(separator: " ")[1]) else {
                throw MalformedResponse()
            }
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespaces
                )
            }
            rest = rest[end.upperBound...]
            let length = method == "HEAD" || status == 304 ? 0 : Int(headers["content-length"] ?? "0") ?? 0
            guard rest.count >= length else { throw MalformedResponse() }
            responses.append(Response(status: status, headers: headers, body: Array(rest.prefix(length))))
            rest = rest.dropFirst(length)
        }
        guard rest.isEmpty else { throw MalformedResponse() }
        return responses
    }

    /// Collects every inbound byte until the server closes the connection.
    final class CollectingHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private var bytes: [UInt8] = []
        private let done: EventLoopPromise<[UInt8]>

        init(done: EventLoopPromise<[UInt8]>) {
            self.done = done
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            bytes += Array(Self.unwrapInboundIn(data).readableBytesView)
        }

        func channelInactive(context: ChannelHandlerContext) {
            done.succeed(bytes)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            done.fail(error)
            context.close(promise: nil)
        }
    }
}

/// The media part of RelayHTTPHandler, reduced to files: the reference for how the handler drives MediaFileSource.
final class MediaReferenceHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let source: MediaFileSource
    private let zeroCopy: Bool
    private var head: HTTPRequestHead?
    /// Which request is being answered: a late callback for an earlier one is dropped.
    private var exchange = 0
    private var busy = false

    init(source: MediaFileSource, zeroCopy: Bool) {
        self.source = source
        self.zeroCopy = zeroCopy
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let name = head.uri.split(separator: "/").last ?? ""
            let parts = name.split(separator: ".")
            guard parts.count == 2, let digest = Digest128(hex: parts[0]),
                let mediaType = MediaType.forExtension(parts[1])
            else {
                respondError(context: context, head: head, status: 404, detail: "No such file", type: "not_found")
                return
            }
            exchange += 1
            busy = true
            let number = exchange
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            source.record(digest, mediaType: mediaType, eventLoop: context.eventLoop).whenComplete { result in
                let (handler, context) = bound.value
                handler.plan(context: context, head: head, number: number, result: result)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        busy = false
        context.fireChannelInactive()
    }

    private func plan(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        number: Int,
        result: Result<BlobRecord?, any Error>
    ) {
        guard busy, number == exchange else { return }
        let record: BlobRecord
        switch result {
        case .success(let found?):
            record = found
        case .success(nil):
            busy = false
            return respondError(context: context, head: head, status: 404, detail: "No such file", type: "not_found")
        case .failure:
            busy = false
            return respondError(
                context: context,
                head: head,
                status: 500,
                detail: "Could not read the file",
                type: "internal_error"
            )
        }
        let plan = MediaResponsePlan(method: head.method, requestHeaders: head.headers, record: record)
        if plan.outcome == .unsatisfiable {
            busy = false
            let detail = "Range not satisfiable: the file is \(record.size) bytes long"
            return respondError(
                context: context,
                head: head,
                status: 416,
                detail: detail,
                type: "range_not_satisfiable",
                extra: plan.headers
            )
        }
        guard let range = plan.body else {
            // HEAD, 304 or an empty blob: the head is the whole response.
            busy = false
            writeHead(context: context, head: head, status: plan.status, headers: plan.headers)
            return end(context: context, keepAlive: head.isKeepAlive)
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        source.body(
            of: record,
            range: range,
            zeroCopy: zeroCopy,
            allocator: context.channel.allocator,
            eventLoop: context.eventLoop
        )
        .whenComplete { result in
            let (handler, context) = bound.value
            handler.send(context: context, head: head, number: number, plan: plan, result: result)
        }
    }

    private func send(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        number: Int,
        plan: MediaResponsePlan,
        result: Result<MediaBody?, any Error>
    ) {
        guard busy, number == exchange else {
            if case .success(let body?) = result { body.discard() }  // the exchange ended (client gone): close the file
            return
        }
        busy = false
        let body: MediaBody
        switch result {
        case .success(let loaded?):
            body = loaded
        case .success(nil):
            return respondError(context: context, head: head, status: 404, detail: "No such file", type: "not_found")
        case .failure:
            return respondError(
                context: context,
                head: head,
                status: 500,
                detail: "Could not read the file",
                type: "internal_error"
            )
        }
        writeHead(context: context, head: head, status: plan.status, headers: plan.headers)
        let keepAlive = head.isKeepAlive
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        body.write(on: context.eventLoop) { part in
            bound.value.1.writeAndFlush(Self.wrapOutboundOut(.body(part)))
        }.whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success:
                handler.end(context: context, keepAlive: keepAlive)
            case .failure:
                context.close(promise: nil)  // the body was cut short: never end the response normally
            }
        }
    }

    private func writeHead(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        status: HTTPResponseStatus,
        headers: HTTPHeaders
    ) {
        var headers = headers
        headers.add(name: "x-fal-request-id", value: RequestID.make())
        if !head.isKeepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
            promise: nil
        )
    }

    private func end(context: ChannelHandlerContext, keepAlive: Bool) {
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }

    private func respondError(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        status: Int,
        detail: String,
        type: String,
        extra: HTTPHeaders = [:]
    ) {
        let json = JSONValue.object(["detail": .string(detail), "error_type": .string(type)]).serialized()
        var headers = extra
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(json.count))
        headers.add(name: "x-fal-error-type", value: type)
        writeHead(context: context, head: head, status: HTTPResponseStatus(statusCode: status), headers: headers)
        if head.method != .HEAD {
            context.write(
                Self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: json)))),
                promise: nil
            )
        }
        end(context: context, keepAlive: head.isKeepAlive)
    }
}

@available(*, unavailable)
extension MediaReferenceHandler: Sendable {}
