import Foundation
import NIOCore
import NIOEmbedded
import RelayCore
import RelayJobs
import Testing

@testable import RelayHTTP

/// An answer that becomes ready after its client left (it waited for the result tiers, or for its record to be
/// durable, while the connection closed): a run or `/stream` takes its request with it, as a client that leaves while
/// following does, instead of its job running for nobody.
@Suite struct AbandonedAnswerTests {
    @Test func aRunWhoseClientLeftBeforeItsAnswerDetachesItsRequest() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("left-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let relay = try TestRelayServices(directory: directory)
        let handler = RelayHTTPHandler(services: relay.services, scheme: "http")
        let loop = EmbeddedEventLoop()

        // Waiting for its record: the run's request is its job's only one, so the job stops.
        let run = try relay.submit("a run nobody waits for")
        handler.abandon(.afterRecorded(run, then: .follow(JobFollow(request: run, kind: .run))), on: loop)
        loop.run()  // once its record is durable (here at once), on the connection's loop
        #expect(run.job.isTerminal)
        #expect(relay.jobs.request(run.id, keyID: nil)?.cancelled == true)

        // Waiting for the tiers (a later answer), then for its record: the same, once the answer is ready.
        let stream = try relay.submit("a stream nobody reads")
        let ready = loop.makePromise(of: Void.self)
        let answer = ready.futureResult.assumeIsolated().map { () -> RouteAnswer in
            .afterRecorded(stream, then: .follow(JobFollow(request: stream, kind: .partialStream)))
        }
        handler.abandon(.later(answer.nonisolated()), on: loop)
        #expect(!stream.job.isTerminal)
        ready.succeed()
        loop.run()
        #expect(stream.job.isTerminal)

        // A status stream's request is a queue request: it stays (a watcher leaving never cancels it).
        let queued = try relay.submit("a queue request")
        let watch = StatusStream(
            request: queued,
            base: FalWire.QueueBase(origin: "http://127.0.0.1", app: "fal-ai/flux"),
            withLogs: true,
            after: 0
        )
        handler.abandon(.follow(JobFollow(request: queued, kind: .statusStream(watch))), on: loop)
        #expect(!queued.job.isTerminal)
    }
}
