import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import RelayCore
import RelayJobs
import RelayStore
import Testing

@testable import RelayHTTP

/// The bare HTTP/1.1 SSE writer on an EmbeddedChannel (frames, pause and replay, pings, shutdown, close after
/// COMPLETED, the client leaving), and a whole HTTP/1.1 pipeline that an SSE request reduces to that one handler. Its
/// state machine has its own suite (JobStreamStateMachineTests).
@Suite struct StatusStreamHandlerTests {
    // MARK: - Handler

    struct Fixture {
        let directory: String
        let services: RelayServices
        let request: RelayRequest
        let channel = EmbeddedChannel()

        init() throws {
            directory =
                FileManager.default.temporaryDirectory.appendingPathComponent("bare-sse-\(UUID().uuidString)").path
            let relay = try TestRelayServices(directory: directory)
            services = relay.services
            request = try relay.submit("a bare stream")
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4000)).wait()
        }

        /// Installs a stream (after `after`) in place of an HTTP/1.1 handler (NIO's encoder), as `RelayHTTPHandler` does.
        @discardableResult
        func openStream(after: Int = 0, withLogs: Bool = true) throws -> StatusStreamHandler {
            try channel.pipeline.syncOperations.addHandler(HTTPResponseEncoder())
            let stream = StatusStream(
                request: request,
                base: FalWire.QueueBase(origin: "http://127.0.0.1", app: "fal-ai/flux"),
                withLogs: withLogs,
                after: after
            )
            let handler = StatusStreamHandler(services: services, stream: stream, access: nil, accessSink: nil)
            try StatusStreamHandler.takeOver(handler, pipeline: channel.pipeline)
            return handler
        }

        /// Everything written since the last call, as text.
        func written() throws -> String {
            var text = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
                text += String(buffer: buffer)
            }
            return text
        }

        func remove() {
            _ = try? channel.finish(acceptAlreadyClosed: true)
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    @Test func theStreamIsACloseDelimitedBodyOfIdentifiedEventsAndClosesAfterCompleted() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        fixture.request.job.receive(.queued(position: 0))
        let others = fixture.request.job.subscriberCount
        try fixture.openStream()
        #expect(try fixture.channel.pipeline.handlerContextsSync().map { $0.handler is StatusStreamHandler } == [true])
        #expect(fixture.services.jobs.statistics.watchers(.sse) == 1)
        #expect(fixture.request.job.subscriberCount == others + 1)
        let opening = try fixture.written()
        #expect(opening.hasPrefix("HTTP/1.1 200 OK\r\n"))
        let head = opening.components(separatedBy: "\r\n\r\n")[0].lowercased()
        #expect(head.contains("content-type: text/event-stream"))
        #expect(head.contains("connection: close"))
        #expect(!head.contains("transfer-encoding") && !head.contains("content-length"))
        #expect(head.contains("x-fal-request-id: \(fixture.request.id.lowercased())"))
        let first = try sseEvents(opening)
        #expect(first.count == 1 && first[0].data["status"]?.stringValue == "IN_QUEUE" && first[0].id != nil)

        fixture.request.job.receive(.started)
        fixture.request.job.receive(.log("step 1/1", level: .info))
        fixture.channel.embeddedEventLoop.run()
        let live = try sseEvents(try fixture.written())
        #expect(live.compactMap { $0.data["logs"]?.arrayValue?.first?["message"]?.stringValue } == ["step 1/1"])
        #expect(fixture.channel.isActive)

        fixture.request.job.receive(.succeeded(result: ["images": []], inferenceSeconds: 1))
        fixture.channel.embeddedEventLoop.run()
        let last = try sseEvents(try fixture.written())
        #expect(last.last?.data["status"]?.stringValue == "COMPLETED")
        #expect(!fixture.channel.isActive, "a close-delimited stream ends with the connection")
        #expect(fixture.services.jobs.statistics.watchers(.sse) == 0)
    }

    @Test func aResumedStreamStartsAfterTheLastSeenEvent() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let job = fixture.request.job
        job.receive(.queued(position: 0))
        job.receive(.started)
        job.receive(.log("one", level: .info))
        job.receive(.log("two", level: .info))
        let seen = job.status.lastSequence - 1
        try fixture.openStream(after: seen)
        let events = try sseEvents(try fixture.written())
        #expect(events.map(\.id) == [seen + 1])
        #expect(events[0].data["logs"]?.arrayValue?.compactMap { $0["message"]?.stringValue } == ["two"])
    }

    @Test func aStalledReaderIsSkippedThenCaughtUpFromTheLog() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let job = fixture.request.job
        job.receive(.queued(position: 0))
        try fixture.openStream()
        let first = try sseEvents(try fixture.written())
        fixture.channel.isWritable = false
        fixture.channel.pipeline.fireChannelWritabilityChanged()
        job.receive(.started)
        for step in 1...4 {
            job.receive(.log("step \(step)/4", level: .info))
        }
        fixture.channel.embeddedEventLoop.run()
        #expect(try fixture.written().isEmpty, "nothing is written into a full socket")
        fixture.channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try fixture.written().isEmpty, "no ping either")

        fixture.channel.isWritable = true
        fixture.channel.pipeline.fireChannelWritabilityChanged()
        let caughtUp = try sseEvents(try fixture.written())
        let lines = caughtUp.flatMap { ($0.data["logs"]?.arrayValue ?? []).compactMap { $0["message"]?.stringValue } }
        #expect(lines == (1...4).map { "step \($0)/4" })
        let ids = ([first[0].id] + caughtUp.map(\.id)).compactMap { $0 }
        #expect(ids == ids.sorted() && Set(ids).count == ids.count)
        job.receive(.succeeded(result: ["images": []], inferenceSeconds: 1))
        fixture.channel.embeddedEventLoop.run()
        #expect(try sseEvents(try fixture.written()).last?.data["status"]?.stringValue == "COMPLETED")
    }

    @Test func anIdleStreamIsPingedEveryInterval() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        fixture.request.job.receive(.queued(position: 0))
        try fixture.openStream()
        _ = try fixture.written()
        fixture.channel.embeddedEventLoop.advanceTime(by: .seconds(14))
        #expect(try fixture.written().isEmpty)
        fixture.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(try fixture.written() == ": ping\n\n")
        fixture.channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try fixture.written() == ": ping\n\n")
        try fixture.channel.close().wait()
        fixture.channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(try fixture.written().isEmpty)
    }

    @Test func shutdownEndsTheStreamWithARetryHintAndCloses() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let others = fixture.request.job.subscriberCount
        try fixture.openStream()
        _ = try fixture.written()
        fixture.channel.pipeline.fireUserInboundEventTriggered(RelayShutdownEvent())
        fixture.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        let text = try fixture.written()
        #expect(text.hasPrefix("retry: 1000\n"))
        #expect(text.components(separatedBy: "retry:").count == 2, "one hint")
        #expect(!fixture.channel.isActive)
        #expect(fixture.request.job.subscriberCount == others)
    }

    @Test func aClientThatLeavesIsUnsubscribedAndItsBytesIgnored() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let others = fixture.request.job.subscriberCount
        try fixture.openStream()
        _ = try fixture.written()
        try fixture.channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"))
        #expect(try fixture.channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(fixture.request.job.subscriberCount == others + 1)
        try fixture.channel.close().wait()
        #expect(fixture.request.job.subscriberCount == others)
        #expect(fixture.services.jobs.statistics.watchers(.sse) == 0)
    }

    // MARK: - The whole HTTP/1.1 pipeline

    @Test func anSSERequestReducesTheHTTP1PipelineToTheStream() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let channel = fixture.channel
        let kind = ConnectionKindTracker(statistics: fixture.services.jobs.statistics)
        kind.opened(.http1)
        try RelayHTTPServer.configureHTTP1(channel, services: fixture.services, scheme: "http", kind: kind)
        fixture.request.job.receive(.queued(position: 0))

        // A plain request first: the connection is kept alive; the fast lane answered it, NIO's handlers never came.
        try channel.writeInbound(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"))
        var text = try fixture.written()
        #expect(text.hasPrefix("HTTP/1.1 200 OK") && text.contains("content-length"))
        #expect(
            try channel.pipeline.handlerContextsSync().map { "\(type(of: $0.handler))" } == [
                "ConnectionStateHandler", "FastLane",
            ]
        )

        let uri = "/fal-ai/flux/requests/\(fixture.request.id)/status/stream?logs=1"
        try channel.writeInbound(
            ByteBuffer(string: "GET \(uri) HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n")
        )
        channel.embeddedEventLoop.run()
        #expect(try channel.pipeline.handlerContextsSync().map { "\(type(of: $0.handler))" } == ["StatusStreamHandler"])
        #expect(fixture.services.jobs.statistics.connections(.sseStream) == 1)
        #expect(fixture.services.jobs.statistics.connections(.http1) == 0)
        text = try fixture.written()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n") && text.contains("connection: close\r\n"))
        #expect(!text.lowercased().contains("transfer-encoding"))
        #expect(try sseEvents(text).first?.data["status"]?.stringValue == "IN_QUEUE")

        // The request after the head, pipelined or not, goes nowhere.
        try channel.writeInbound(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"))
        #expect(try fixture.written().isEmpty)

        fixture.request.job.receive(.succeeded(result: ["images": []], inferenceSeconds: 1))
        channel.embeddedEventLoop.run()
        text = try fixture.written()
        #expect(try sseEvents(text).last?.data["status"]?.stringValue == "COMPLETED")
        #expect(!text.contains("\r\n0\r\n"), "no chunk framing")
        #expect(!channel.isActive)
    }
}
