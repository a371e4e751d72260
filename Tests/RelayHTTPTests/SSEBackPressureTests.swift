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

/// The SSE status stream on an EmbeddedChannel: while the channel is not writable nothing is written (events wait in
/// the job's log), and when it drains every event arrives once, in order; shutdown ends a stream cleanly.
@Suite struct SSEBackPressureTests {
    struct Fixture {
        let directory: String
        let channel: EmbeddedChannel
        let request: RelayRequest

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("sse-\(UUID().uuidString)").path
            let relay = try TestRelayServices(directory: directory)
            let services = relay.services
            request = try relay.submit("a lighthouse")
            channel = EmbeddedChannel(handler: RelayHTTPHandler(services: services, scheme: "http"))
        }

        func openStream(lastEventID: Int? = nil) throws {
            var head = HTTPRequestHead(
                version: .http1_1,
                method: .GET,
                uri: "/fal-ai/flux/requests/\(request.id)/status/stream?logs=1"
            )
            head.headers.add(name: "host", value: "127.0.0.1")
            if let lastEventID { head.headers.add(name: "last-event-id", value: String(lastEventID)) }
            try channel.writeInbound(HTTPServerRequestPart.head(head))
            try channel.writeInbound(HTTPServerRequestPart.end(nil))
        }

        /// Every SSE event written so far: (id, data JSON); also whether the response ended.
        func drain() throws -> (events: [(id: Int?, data: JSONValue)], ended: Bool) {
            var text = ""
            var ended = false
            while let part = try channel.readOutbound(as: HTTPServerResponsePart.self) {
                switch part {
                case .head: break
                case .body(.byteBuffer(let buffer)): text += String(buffer: buffer)
                case .body(.fileRegion): Issue.record("unexpected file region")
                case .end: ended = true
                }
            }
            let events = try sseEvents(text)
            return (events, ended)
        }

        func remove() {
            _ = try? channel.finish()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    @Test func aStalledReaderGetsNothingUntilItDrainsThenEverythingOnceInOrder() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        fixture.request.job.receive(.queued(position: 0))
        try fixture.openStream()
        let first = try fixture.drain()
        #expect(first.events.count == 1)
        #expect(first.events.first?.data["status"]?.stringValue == "IN_QUEUE")

        fixture.channel.isWritable = false
        fixture.channel.pipeline.fireChannelWritabilityChanged()
        fixture.request.job.receive(.started)
        for step in 1...5 {
            fixture.request.job.receive(.log("step \(step)/5", level: .info))
        }
        fixture.channel.embeddedEventLoop.run()
        #expect(try fixture.drain().events.isEmpty, "nothing may be written while the channel is not writable")

        fixture.channel.isWritable = true
        fixture.channel.pipeline.fireChannelWritabilityChanged()
        let caughtUp = try fixture.drain()
        let lines = caughtUp.events.flatMap { event in
            (event.data["logs"]?.arrayValue ?? []).compactMap { $0["message"]?.stringValue }
        }
        #expect(lines == (1...5).map { "step \($0)/5" })
        let ids = caughtUp.events.compactMap(\.id)
        #expect(ids == ids.sorted() && Set(ids).count == ids.count)
        #expect(ids.first.map { $0 > (first.events.first?.id ?? 0) } == true)

        // Live events flow again, and the end closes the stream.
        fixture.request.job.receive(.succeeded(result: ["images": []], inferenceSeconds: 1))
        fixture.channel.embeddedEventLoop.run()
        let last = try fixture.drain()
        #expect(last.events.last?.data["status"]?.stringValue == "COMPLETED")
        #expect(last.ended)
    }

    @Test func theEndWaitingInTheLogIsDeliveredWhenTheReaderDrains() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try fixture.openStream()
        _ = try fixture.drain()
        fixture.channel.isWritable = false
        fixture.request.job.receive(.started)
        fixture.request.job.receive(.succeeded(result: ["images": []], inferenceSeconds: 1))
        fixture.channel.embeddedEventLoop.run()
        #expect(try fixture.drain().events.isEmpty)
        fixture.channel.isWritable = true
        fixture.channel.pipeline.fireChannelWritabilityChanged()
        let drained = try fixture.drain()
        #expect(drained.events.last?.data["status"]?.stringValue == "COMPLETED")
        #expect(drained.ended)
    }

    @Test func shutdownEndsAnOpenStreamWithARetryHint() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try fixture.openStream()
        _ = try fixture.drain()
        fixture.channel.pipeline.fireUserInboundEventTriggered(RelayShutdownEvent())
        var text = ""
        var ended = false
        while let part = try fixture.channel.readOutbound(as: HTTPServerResponsePart.self) {
            if case .body(.byteBuffer(let buffer)) = part { text += String(buffer: buffer) }
            if case .end = part { ended = true }
        }
        #expect(text.contains("retry: 1000"))
        #expect(ended)
    }
}
