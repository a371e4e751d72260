import NIOCore
import NIOPosix
import Testing

@testable import RelayLoadKit

/// relay-load against a tiny server on a free loopback port: the whole loop, keep-alive and one connection per
/// request, and a server that breaks its responses.
@Suite struct LoadRunnerLiveTests {
    /// Answers every request (counted by its blank line) with `response`; closes after it when `closeAfter`.
    private final class CannedResponder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let response: String
        let closeAfter: Bool
        private var pending = ""

        init(response: String, closeAfter: Bool) {
            self.response = response
            self.closeAfter = closeAfter
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            pending += String(buffer: Self.unwrapInboundIn(data))
            while let end = pending.range(of: "\r\n\r\n") {
                pending = String(pending[end.upperBound...])
                let write = context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: response)))
                if closeAfter {
                    write.whenComplete { _ in context.close(promise: nil) }
                }
            }
        }
    }

    private func withServer(
        response: String,
        closeAfter: Bool = false,
        _ body: (Int) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        CannedResponder(response: response, closeAfter: closeAfter)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        do {
            try await body(channel.localAddress?.port ?? 0)
        } catch {
            try? await channel.close()
            try? await group.shutdownGracefully()
            throw error
        }
        try await channel.close()
        try await group.shutdownGracefully()
    }

    private func configuration(port: Int, newConnection: Bool = false) throws -> LoadConfiguration {
        let url = try #require(TargetURL("http://127.0.0.1:\(port)/x"))
        return LoadConfiguration(
            plan: RequestPlan(url: url, closeAfterResponse: newConnection),
            connections: 4,
            threads: 2,
            durationSeconds: 0.5,
            warmupSeconds: 0.1,
            timeoutSeconds: 2,
            newConnectionPerRequest: newConnection,
            watchedHeader: "x-relay-cache",
            progress: false
        )
    }

    @Test func keepAliveLoopCountsResponsesAndTheWatchedHeader() async throws {
        try await withServer(response: "HTTP/1.1 200 OK\r\nx-relay-cache: hit\r\nContent-Length: 2\r\n\r\nok") { port in
            let report = try await LoadRunner.run(scenario: "get", configuration: try configuration(port: port))
            #expect(report.responses > 0)
            #expect(report.errorTotal == 0)
            #expect(report.statuses["200"] == report.responses)
            #expect(report.watched["hit"] == report.responses)
            #expect(report.connectionsOpened == 0)  // all four were opened during the warm-up
            #expect(report.latencyMs.p50 > 0)
        }
    }

    @Test func oneConnectionPerRequest() async throws {
        try await withServer(response: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n") { port in
            let report = try await LoadRunner.run(
                scenario: "get",
                configuration: try configuration(port: port, newConnection: true)
            )
            #expect(report.responses > 0)
            #expect(report.connectionsOpened >= report.responses - 4)
            #expect(report.errors["http_404"] == report.responses)
        }
    }

    @Test func responsesCutShortAreCountedAsClosed() async throws {
        try await withServer(response: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", closeAfter: true) { port in
            let report = try await LoadRunner.run(scenario: "get", configuration: try configuration(port: port))
            #expect(report.responses == 0)
            #expect((report.errors["closed"] ?? 0) > 0)
        }
    }
}
