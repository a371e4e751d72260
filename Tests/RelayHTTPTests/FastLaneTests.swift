import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import RelayCore
import RelayJobs
import RelayStore
import Synchronization
import Testing

@testable import RelayHTTP

/// The fast lane inside the real HTTP/1.1 pipeline (`RelayHTTPServer.configureHTTP1`) on an EmbeddedChannel: it
/// answers what NIO's pipeline would, byte-compatible, keeps responses in request order when requests mix, and hands
/// NIO everything it does not understand.
@Suite struct FastLaneTests {
    /// `Key good:…` is the key `k1`; any other key is refused; no header is anonymous.
    struct OneKey: Authenticator {
        func authenticate(authorization: String?) -> Principal? {
            guard let authorization else { return .anonymous }
            return authorization == "Key good:secret" ? .key(id: "k1", tier: "admin") : nil
        }
        func issueToken(for principal: Principal, apps: [String], seconds: Int) -> String? { nil }
        func authenticate(token: String, app: String?) -> Principal? { nil }
    }

    /// One HTTP/1.1 response read back from the wire.
    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: String

        func field(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
    }

    struct Fixture {
        let directory: String
        let channel: EmbeddedChannel
        let done: RelayRequest
        let running: RelayRequest
        let services: RelayServices

        init(authenticator: any Authenticator = OneKey(), rateLimiter: RateLimiter? = nil) throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("fast-\(UUID().uuidString)").path
            let relay = try TestRelayServices(
                directory: directory,
                authenticator: authenticator,
                rateLimiter: rateLimiter
            )
            services = relay.services
            done = try relay.submit("a lighthouse", ownerKeyID: "k1")
            done.job.receive(
                .succeeded(result: ["images": [["url": "http://x/files/a.png"]], "seed": 7], inferenceSeconds: 1.5)
            )
            running = try relay.submit("a harbour", ownerKeyID: "k1")
            running.job.receive(.started)
            channel = EmbeddedChannel()
            try RelayHTTPServer.configureHTTP1(channel, services: services, scheme: "http")
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        }

        var fastLane: FastLane {
            get throws { try channel.pipeline.syncOperations.handler(type: FastLane.self) }
        }

        func send(_ text: String) throws {
            try channel.writeInbound(ByteBuffer(string: text))
            channel.embeddedEventLoop.run()
        }

        /// Everything written so far, split into responses (`bodiless`: answers to HEAD).
        func responses(bodiless: Bool = false) throws -> [Response] {
            var wire = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
                wire += String(buffer: buffer)
            }
            var responses: [Response] = []
            var rest = Substring(wire)
            while let end = rest.range(of: "\r\n\r\n") {
                let lines = rest[..<end.lowerBound].components(separatedBy: "\r\n")
                let status = Int(lines[0].split(separator: " ")[1])!
                let headers = lines.dropFirst().map { line -> (String, String) in
                    let colon = line.firstIndex(of: ":")!
                    return (
                        line[..<colon].lowercased(),
                        line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                    )
                }
                let length = bodiless ? 0 : Int(headers.first { $0.0 == "content-length" }?.1 ?? "0")!
                rest = rest[end.upperBound...]
                let body = String(rest.utf8.prefix(length))!
                rest = rest.dropFirst(body.count)
                responses.append(Response(status: status, headers: headers, body: body))
            }
            #expect(rest.isEmpty, "trailing bytes: \(rest.debugDescription)")
            return responses
        }

        func remove() {
            _ = try? channel.finish()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static let key = "Authorization: Key good:secret\r\n"

    /// The same request through the fast lane and through NIO (`Connection: keep-alive, x` is not plain keep-alive,
    /// so the lane forwards it): the same status, fields and body.
    @Test(arguments: [
        "GET /fal-ai/flux/requests/{done}", "HEAD /fal-ai/flux/requests/{done}",
        "GET /fal-ai/flux/requests/{done}/status",
        "GET /fal-ai/flux/requests/{done}/status?logs=1", "GET /fal-ai/flux/requests/{running}/status",
        "GET /fal-ai/flux/requests/{running}", "GET /fal-ai/flux/requests/0000dead/status", "GET /healthz",
        "GET /fal-ai/other/requests/{done}",
    ])
    func fastAnswersEqualNIOs(requestLine: String) throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let line = requestLine.replacingOccurrences(of: "{done}", with: fixture.done.id)
            .replacingOccurrences(of: "{running}", with: fixture.running.id)
        try fixture.send("\(line) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n")
        try fixture.send("\(line) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)Connection: keep-alive, x\r\n\r\n")
        let answers = try fixture.responses(bodiless: line.hasPrefix("HEAD"))
        try #require(answers.count == 2)
        let (fast, slow) = (answers[0], answers[1])
        #expect(fast.status == slow.status)
        #expect(fast.body == slow.body)
        func comparable(_ response: Response) -> [String] {
            response.headers.filter { $0.0 != "x-fal-request-id" || !line.contains("healthz") }.map {
                "\($0.0): \($0.1)"
            }.sorted()
        }
        #expect(comparable(fast) == comparable(slow))
        #expect(try fixture.fastLane.timer.requestsForwarded == 1, "only the second request went through NIO")
    }

    @Test func aWrongKeyIsRefusedTheSameWay() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let path = "/fal-ai/flux/requests/\(fixture.done.id)"
        try fixture.send(
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Key bad:key\r\n\r\nGET \(path) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Key bad:key\r\nConnection: keep-alive, x\r\n\r\n"
        )
        let answers = try fixture.responses()
        try #require(answers.count == 2)
        #expect(answers.map(\.status) == [401, 401])
        #expect(answers[0].body == answers[1].body)
        #expect(answers[0].field("x-fal-error-type") == answers[1].field("x-fal-error-type"))
    }

    @Test func pipelinedRequestsKeepTheirOrderWhenNIOOwesAResponse() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let result = "GET /fal-ai/flux/requests/\(fixture.done.id) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        // A submit (NIO's, answered once its record is durable — at once here), then reads, in one segment.
        let body = #"{"prompt":"a lighthouse"}"#
        let submit =
            "POST /fal-ai/flux/dev HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        try fixture.send(submit + result + "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n" + result)
        let answers = try fixture.responses()
        try #require(answers.count == 4)
        #expect(answers[0].body.contains("\"request_id\""))
        #expect(answers[1].body.contains("\"seed\":7"))
        #expect(answers[2].body == #"{"status":"ok"}"#)
        #expect(answers[3].body.contains("\"seed\":7"))
        // Once NIO owes nothing, the lane answers again.
        let lane = try fixture.fastLane
        let forwarded = lane.timer.requestsForwarded
        try fixture.send(result)
        #expect(try fixture.responses().first?.body.contains("\"seed\":7") == true)
        #expect(lane.timer.requestsForwarded == forwarded)
        #expect(lane.timer.owesNoResponse)
    }

    @Test func headsAndBodiesSplitAcrossReadsArriveWhole() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let request = "GET /fal-ai/flux/requests/\(fixture.done.id) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        for byte in request.utf8 {
            try fixture.send(String(decoding: [byte], as: UTF8.self))
        }
        #expect(try fixture.responses().map(\.status) == [200])
        let body = #"{"prompt":"a quiet harbour at dawn"}"#
        let submit =
            "POST /fal-ai/flux/dev HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)Content-Length: \(body.utf8.count)\r\n\r\n"
        try fixture.send(submit + body.prefix(5))
        try fixture.send(String(body.dropFirst(5).prefix(10)))
        try fixture.send(String(body.dropFirst(15)) + request)
        let answers = try fixture.responses()
        #expect(answers.map(\.status) == [200, 200])
        #expect(answers.first?.body.contains("IN_QUEUE") == true)
        #expect(answers.last?.body.contains("\"seed\":7") == true)
    }

    /// The lane remembers the last request line's route: a different target, Host or method must be routed anew.
    @Test func aRepeatedLineReusesItsRouteAndAnyChangeReroutes() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let result = "/fal-ai/flux/requests/\(fixture.done.id)"
        try fixture.send(
            "GET \(result) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\nGET \(result) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        )
        let twice = try fixture.responses()
        #expect(twice.count == 2 && twice.allSatisfy { $0.body.contains("\"seed\":7") })
        try fixture.send("GET \(result)/status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n")
        #expect(try fixture.responses().first?.body.contains("COMPLETED") == true)
        try fixture.send("HEAD \(result)/status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n")
        let head = try fixture.responses(bodiless: true)
        #expect(head.first?.status == 200 && head.first?.body.isEmpty == true)
        // The run host has no result route: NIO answers (405), and the lane did not reuse the queue host's route.
        try fixture.send("GET \(result) HTTP/1.1\r\nHost: localhost\r\n\(Self.key)\r\n")
        #expect(try fixture.responses().first?.status == 405)
        try fixture.send("GET \(result) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n")
        #expect(try fixture.responses().first?.body.contains("\"seed\":7") == true)
    }

    /// `Key good:secret` is `k1` of `tier` until revoked; the key table's version moves with every change, and the
    /// authentications are counted.
    final class VersionedKeys: Authenticator {
        struct State {
            var version: UInt64 = 1
            var revoked = false
            var tier = "admin"
            var authentications = 0
        }

        let state = Mutex(State())

        func authenticate(authorization: String?) -> Principal? {
            state.withLock { state in
                state.authentications += 1
                guard let authorization else { return .anonymous }
                return authorization == "Key good:secret" && !state.revoked ? .key(id: "k1", tier: state.tier) : nil
            }
        }
        func issueToken(for principal: Principal, apps: [String], seconds: Int) -> String? { nil }
        func authenticate(token: String, app: String?) -> Principal? { nil }
        func keyTableVersion() -> UInt64? { state.withLock { $0.version } }

        func revoke() {
            state.withLock { state in
                state.revoked = true
                state.version += 1
            }
        }

        var authentications: Int { state.withLock { $0.authentications } }
    }

    @Test func aFinishedReadIsSentAgainFromItsBytesUntilTheKeyTableChanges() throws {
        let keys = VersionedKeys()
        let fixture = try Fixture(authenticator: keys)
        defer { fixture.remove() }
        let result = "GET /fal-ai/flux/requests/\(fixture.done.id) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        try fixture.send(result + result + result)
        let three = try fixture.responses()
        #expect(three.count == 3 && three.allSatisfy { $0.status == 200 && $0.body.contains("\"seed\":7") })
        #expect(
            three.map { $0.headers.map { "\($0.0): \($0.1)" } }.allSatisfy {
                $0 == three[0].headers.map { "\($0.0): \($0.1)" }
            }
        )
        #expect(keys.authentications == 1, "the second and third answer were the first one's bytes")
        keys.revoke()
        try fixture.send(result)
        #expect(try fixture.responses().map(\.status) == [401])
    }

    @Test func aSweepThatRemovesRequestsEndsTheReplay() throws {
        let fixture = try Fixture(authenticator: VersionedKeys())
        defer { fixture.remove() }
        let status =
            "GET /fal-ai/flux/requests/\(fixture.done.id)/status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        try fixture.send(status)
        #expect(try fixture.responses().map(\.status) == [200])
        let removed = fixture.services.jobs.sweep(
            now: Timestamp(secondsSinceEpoch: Timestamp.now().secondsSinceEpoch + 86_400)
        )
        #expect(removed >= 1)
        try fixture.send(status)
        #expect(try fixture.responses().map(\.status) == [404])
    }

    @Test func aRunningRequestIsAskedAnewEveryTime() throws {
        let keys = VersionedKeys()
        let fixture = try Fixture(authenticator: keys)
        defer { fixture.remove() }
        let status =
            "GET /fal-ai/flux/requests/\(fixture.running.id)/status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        try fixture.send(status)
        #expect(try fixture.responses().first?.body.contains("IN_PROGRESS") == true)
        fixture.running.job.receive(.succeeded(result: ["seed": 8], inferenceSeconds: 1))
        try fixture.send(status)
        #expect(try fixture.responses().first?.body.contains("COMPLETED") == true)
        #expect(keys.authentications == 2)
    }

    @Test func aReplayIsStillChargedToTheCallersRateLimit() throws {
        let keys = VersionedKeys()
        keys.state.withLock { $0.tier = "pro" }
        // Reads of one request: a burst of 3, refilled once a minute on a clock that stands still.
        let policy = RateLimitPolicy(requestReads: RateLimitPolicy.Limit(quota: 1, windowSeconds: 60, burst: 3))
        let fixture = try Fixture(authenticator: keys, rateLimiter: RateLimiter(policy: policy) { .zero })
        defer { fixture.remove() }
        let result = "GET /fal-ai/flux/requests/\(fixture.done.id) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        try fixture.send(String(repeating: result, count: 5))
        #expect(try fixture.responses().map(\.status) == [200, 200, 200, 429, 429])
        #expect(keys.authentications == 1)
    }

    /// The names of the handlers in the pipeline, in order.
    static func handlerNames(_ channel: EmbeddedChannel) throws -> [String] {
        try channel.pipeline.handlerContextsSync().map { "\(type(of: $0.handler))" }
    }

    @Test func nioHTTPHandlersJoinOnlyWhenARequestNeedsThem() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let result = "GET /fal-ai/flux/requests/\(fixture.done.id) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        try fixture.send(result + "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
        #expect(try fixture.responses().map(\.status) == [200, 200])
        #expect(try Self.handlerNames(fixture.channel) == ["ConnectionStateHandler", "FastLane"])
        // Not plain keep-alive: the lane hands it on, and the HTTP handlers join behind the lane, once.
        try fixture.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive, x\r\n\r\n")
        let joined = try Self.handlerNames(fixture.channel)
        #expect(
            joined.count > 2 && joined.prefix(2) == ["ConnectionStateHandler", "FastLane"]
                && joined.last == "RelayHTTPHandler"
        )
        try fixture.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive, x\r\n\r\n" + result)
        #expect(try fixture.responses().map(\.status) == [200, 200, 200])
        #expect(try Self.handlerNames(fixture.channel) == joined)
    }

    /// A watcher's connection goes from the lane straight to the bare SSE writer: NIO's HTTP handlers are never added
    /// (only to be removed again), and bytes pipelined after the stream's request go nowhere.
    @Test func aStatusStreamGoesStraightToTheSSEWriter() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let channel = EmbeddedChannel()
        let installs = Mutex(0)
        let timer = ConnectionStateHandler(limits: fixture.services.limits.connection)
        try channel.pipeline.syncOperations.addHandler(timer)
        let lane = FastLane(services: fixture.services, scheme: "http", timer: timer) {
            _,
            _ in
            installs.withLock { $0 += 1 }
        }
        try channel.pipeline.syncOperations.addHandler(lane)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        let stream = "GET /fal-ai/flux/requests/\(fixture.done.id)/status/stream HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        try channel.writeInbound(ByteBuffer(string: stream + Self.key + "\r\nGET /healthz HTTP/1.1\r\n\r\n"))
        channel.embeddedEventLoop.run()
        var wire = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { wire += String(buffer: buffer) }
        #expect(wire.hasPrefix("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream"))
        #expect(
            wire.contains(#""status":"COMPLETED""#) && !wire.contains("healthz") && !wire.contains(#"{"status":"ok"}"#)
        )
        #expect(installs.withLock { $0 } == 0)
        #expect(try Self.handlerNames(channel) == ["StatusStreamHandler"] || !channel.isActive)
        // The installer is what a request the lane hands on calls.
        let other = EmbeddedChannel()
        let otherTimer = ConnectionStateHandler(limits: fixture.services.limits.connection)
        try other.pipeline.syncOperations.addHandler(otherTimer)
        try other.pipeline.syncOperations.addHandler(
            FastLane(services: fixture.services, scheme: "http", timer: otherTimer) { _, _ in
                installs.withLock { $0 += 1 }
            }
        )
        try other.writeInbound(
            ByteBuffer(string: "POST /fal-ai/flux/dev HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        )
        #expect(installs.withLock { $0 } == 1)
        _ = try? other.finish()
        _ = try? channel.finish()
    }

    @Test func shutdownClosesAConnectionThatOnlyHadFastRequests() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try fixture.send(
            "GET /fal-ai/flux/requests/\(fixture.done.id) HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)\r\n"
        )
        #expect(try fixture.responses().map(\.status) == [200])
        #expect(fixture.channel.isActive)
        fixture.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        fixture.channel.embeddedEventLoop.run()
        #expect(!fixture.channel.isActive)
    }

    @Test func anErrorClosesAConnectionThatOnlyHadFastRequests() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try fixture.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
        fixture.channel.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        fixture.channel.embeddedEventLoop.run()
        #expect(!fixture.channel.isActive)
    }

    @Test func aChunkedBodyHandsTheConnectionToNIO() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let chunk = #"{"prompt":"chunked bodies"}"#
        let size = String(chunk.utf8.count, radix: 16)
        try fixture.send(
            "POST /fal-ai/flux/dev HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\(Self.key)Transfer-Encoding: chunked\r\n\r\n\(size)\r\n\(chunk)\r\n0\r\n\r\n"
        )
        try fixture.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
        let answers = try fixture.responses()
        #expect(answers.map(\.status) == [200, 200])
        #expect(try fixture.fastLane.timer.requestsForwarded == 0, "opaque: NIO framed both, the lane counted nothing")
    }

    @Test func malformedRequestsGetNIOsFalShapedErrors() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try fixture.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nBad Header: x\r\n\r\n")
        let answers = try fixture.responses()
        #expect(answers.map(\.status) == [400])
        #expect(answers.first?.body.contains("bad_request") == true)
    }

    @Test func unwritableChannelsStopReading() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        final class ReadCounter: ChannelOutboundHandler {
            typealias OutboundIn = Never
            var reads = 0
            func read(context: ChannelHandlerContext) {
                reads += 1
                context.read()
            }
        }
        let counter = ReadCounter()
        try fixture.channel.pipeline.syncOperations.addHandler(counter, position: .first)
        fixture.channel.isWritable = false
        fixture.channel.pipeline.fireChannelWritabilityChanged()
        fixture.channel.read()
        #expect(counter.reads == 0, "a read waits while the client does not take its answers")
        fixture.channel.isWritable = true
        fixture.channel.pipeline.fireChannelWritabilityChanged()
        #expect(counter.reads == 1)
    }
}
