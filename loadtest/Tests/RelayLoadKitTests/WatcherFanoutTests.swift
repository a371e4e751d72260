import Foundation
import NIOCore
import Testing

@testable import RelayLoadKit

@Suite struct WatcherFanoutTests {
    @Test func parsesTheRelaysLogTimestamps() {
        let text = #"{"logs":[{"message":"step 1/5","timestamp":"2026-11-25T01:51:54.542712+00:00"}]}"#
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            let start = WatcherState.find(WatcherState.timestampKey, in: raw)
            #expect(start != nil)
            // date -u -d 2026-11-25T01:51:54Z +%s = 1795571514
            #expect(start.flatMap { WatcherState.parseTimestamp(raw, at: $0) } == 1_795_571_514_542_712)
            #expect(WatcherState.find(WatcherState.completedKey, in: raw) == nil)
        }
        Array(#"{"status":"COMPLETED","logs":[]}"#.utf8).withUnsafeBytes { raw in
            #expect(WatcherState.find(WatcherState.completedKey, in: raw) != nil)
        }
        Array("2026-13-01T00:00:00.000000+00:00".utf8).withUnsafeBytes { raw in
            #expect(WatcherState.parseTimestamp(raw, at: 0) == nil)
        }
    }

    @Test func findsTheRequestIDAndTheWebSocketPath() throws {
        let url = try #require(TargetURL("http://127.0.0.1:8080/fal-ai/flux/requests/abc-123/status/stream?logs=1"))
        let target = try #require(WatcherFanout.Target(statusStream: url, headers: ["Authorization: Key k"]))
        #expect(target.requestID == "abc-123")
        #expect(target.ws.url.target == "/ws")
        #expect(target.sse.headers.contains("Accept: text/event-stream"))
        #expect(WatcherFanout.Target(statusStream: url.with(target: "/fal-ai/flux/dev"), headers: []) == nil)
    }

    @Test func mergesSamplesAndKeepsTheLagAfterTheLastAttach() {
        var first = WatcherFanout.Sample()
        var result = WatcherResult(transport: .sse)
        result.firstEventMicroseconds = 1000
        result.firstEventUnixMicroseconds = 10_000_000  // attached in second 10
        result.terminalUnixMicroseconds = 20_000_000
        result.events = 3
        result.lagSamples = [10 << 32 | 5000, 11 << 32 | 2000, 12 << 32 | 1000]
        first.add(result)
        var second = WatcherFanout.Sample()
        result.transport = .ws
        result.terminalUnixMicroseconds = 20_001_000
        second.add(result)
        first.merge(second)
        let report = WatcherFanout.Report(url: "u", transport: .mixed, processes: 2, sample: first, wallSeconds: 1)
        #expect(report.allCompleted)
        #expect(report.completed == ["sse": 1, "ws": 1])
        #expect(report.lagMs["all"]?["count"] == 6)
        #expect(report.lagAfterAttachMs["count"] == 4)  // seconds 11 and 12 only
        #expect(report.lagAfterAttachMs["max"].map { abs($0 - 2.0) < 0.05 } == true)
        #expect(abs(report.endSpreadMs - 1.0) < 1e-9)
    }
}
