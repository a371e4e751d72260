import NIOCore
import RelayCore
import RelayStore
import Testing

@testable import RelayUpstreams

@Suite struct FalOriginLogCursorTests {
    func logs(_ names: String...) -> [FalOriginStatus.Log] {
        names.map { FalOriginStatus.Log(message: $0, timestamp: "t-\($0)") }
    }

    @Test func cumulativePollsYieldOnlyTheTail() {
        var cursor = FalOriginLogCursor()
        #expect(Array(cursor.newLines(cumulative: logs("a"))) == logs("a"))
        #expect(Array(cursor.newLines(cumulative: logs("a"))).isEmpty)
        #expect(Array(cursor.newLines(cumulative: logs("a", "b", "c"))) == logs("b", "c"))
        #expect(Array(cursor.newLines(cumulative: [])).isEmpty)
    }

    @Test func streamEventsMayBeIncrementalOrCumulative() {
        var cursor = FalOriginLogCursor()
        #expect(Array(cursor.newLines(streamed: logs("a"))) == logs("a"))
        #expect(Array(cursor.newLines(streamed: logs("b"))) == logs("b"))
        #expect(Array(cursor.newLines(streamed: [])).isEmpty)
        #expect(Array(cursor.newLines(streamed: logs("a", "b", "c"))) == logs("c"))
        #expect(Array(cursor.newLines(streamed: logs("c", "d"))) == logs("d"))
        // Falling back to polling after an incremental stream: the cumulative list continues where it left off.
        #expect(Array(cursor.newLines(cumulative: logs("a", "b", "c", "d", "e"))) == logs("e"))
        #expect(cursor.count == 5)
    }
}

@Suite struct FalOriginStatusTests {
    @Test func readsTheThreeStatesLogsErrorsAndMetrics() throws {
        let queued = try #require(FalOriginStatus(json: ["status": "IN_QUEUE", "queue_position": 3, "logs": .null]))
        #expect(queued.phase == .inQueue(position: 3) && queued.logs.isEmpty)
        let running = try #require(
            FalOriginStatus(json: [
                "status": "IN_PROGRESS",
                "logs": [
                    ["message": "step 1", "level": "warn", "timestamp": "2026-01-01T00:00:00Z"], ["level": "INFO"],
                ],
            ])
        )
        #expect(running.phase == .inProgress)
        #expect(
            running.logs == [FalOriginStatus.Log(message: "step 1", level: .warn, timestamp: "2026-01-01T00:00:00Z")]
        )
        let done = try #require(
            FalOriginStatus(json: [
                "status": "COMPLETED", "metrics": ["inference_time": 1.5], "error": "boom",
                "error_type": "runner_server_error",
            ])
        )
        #expect(
            done.isCompleted && done.inferenceSeconds == 1.5 && done.error == "boom"
                && done.errorType == "runner_server_error"
        )
        #expect(FalOriginStatus(json: ["status": "COMPLETED", "error": .null])?.error == nil)
        #expect(FalOriginStatus(json: ["status": "SOMETHING_NEW"])?.phase == .other("SOMETHING_NEW"))
        #expect(FalOriginStatus(json: ["request_id": "x"]) == nil)
        #expect(FalOriginStatus(json: [1, 2]) == nil)
    }
}
