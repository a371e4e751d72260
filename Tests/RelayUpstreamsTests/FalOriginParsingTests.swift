import NIOCore
import RelayCore
import RelayStore
import Testing

@testable import RelayUpstreams

@Suite struct FalOriginEventStreamParserTests {
    func feed(_ chunks: [String], maxEventBytes: Int = 1 << 20) throws -> [String] {
        var parser = FalOriginEventStreamParser(maxEventBytes: maxEventBytes)
        var out: [String] = []
        for chunk in chunks {
            out += try parser.feed(ByteBuffer(string: chunk)).map { String(buffer: $0) }
        }
        return out
    }

    @Test func splitsEventsAndSkipsCommentsAndOtherFields() throws {
        let stream = ": ping\n\nevent: status\nid: 4\ndata: {\"a\":1}\n\nretry: 10\ndata:{\"b\":2}\n\n"
        #expect(try feed([stream]) == ["{\"a\":1}", "{\"b\":2}"])
    }

    @Test func chunksMaySplitAnywhereIncludingBetweenCRAndLF() throws {
        let stream = "data: one\r\n\r\ndata: two\r\rdata: three\n\n"
        let expected = ["one", "two", "three"]
        for size in 1...7 {
            var chunks: [String] = []
            var rest = Substring(stream)
            while !rest.isEmpty {
                chunks.append(String(rest.prefix(size)))
                rest = rest.dropFirst(size)
            }
            #expect(try feed(chunks) == expected, "chunk size \(size)")
        }
        // A CR at the very end of a chunk, LF at the start of the next: one line end, not two.
        #expect(try feed(["data: x\r", "\ndata: y\r", "\n\r", "\n"]) == ["x\ny"])
    }

    @Test func joinsDataLinesAndDropsAnUnfinishedEvent() throws {
        #expect(try feed(["data: a\ndata: b\ndata\n\n", "data: never ended\n"]) == ["a\nb\n"])
        #expect(try feed(["\n\n\n"]).isEmpty)
    }

    @Test func refusesEventsPastTheLimit() {
        #expect(throws: FalOriginEventStreamParser.Overflow.self) {
            try feed(["data: " + String(repeating: "x", count: 100)], maxEventBytes: 64)
        }
        #expect(throws: FalOriginEventStreamParser.Overflow.self) {
            try feed(Array(repeating: "data: 0123456789\n", count: 10), maxEventBytes: 64)
        }
    }
}

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

@Suite struct FalOriginMediaReferencesTests {
    let result: JSONValue = [
        "images": [
            ["url": "https://cdn.test/a/cat.png", "content_type": "image/png", "file_size": 1],
            ["url": "https://cdn.test/a/cat.png", "content_type": "image/png"],
            ["url": "https://cdn.test/b/no-extension", "content_type": "video/mp4"],
        ],
        "thumbnail": ["url": "https://cdn.test/t.JPG?sig=1"],
        "homepage": ["url": "https://example.test/about"],
        "preview": ["url": "data:image/png;base64,AAAA", "content_type": "image/png"],
        "image_url": "https://cdn.test/input.png",
        "seed": 4,
    ]

    @Test func findsEachMediaURLOnceInDocumentOrder() {
        let found = FalOriginMediaReferences(in: result).references.map(\.url)
        #expect(
            found == ["https://cdn.test/a/cat.png", "https://cdn.test/b/no-extension", "https://cdn.test/t.JPG?sig=1"]
        )
    }

    @Test func rewritesURLsAndFileSizesOnly() throws {
        let record = BlobRecord(digest: Digest128(high: 0xAB, low: 0xCD), size: 42, storedSize: 42, mediaType: .png)
        let rewritten = FalOriginMediaReferences.rewrite(
            result,
            records: ["https://cdn.test/a/cat.png": record],
            publicBaseURL: "https://relay.test"
        )
        let images = try #require(rewritten["images"]?.arrayValue)
        #expect(images[0]["url"] == .string("https://relay.test/files/\(record.fileName)"))
        #expect(images[0]["file_size"] == 42)
        #expect(
            images[1]["url"] == .string("https://relay.test/files/\(record.fileName)") && images[1]["file_size"] == nil
        )
        #expect(images[2]["url"] == "https://cdn.test/b/no-extension")
        #expect(rewritten["image_url"] == "https://cdn.test/input.png" && rewritten["seed"] == 4)
        #expect(rewritten["preview"] == result["preview"] && rewritten["homepage"] == result["homepage"])
    }

    @Test func picksTheMostPreciseMediaType() {
        #expect(
            FalOriginMediaReferences.mediaType(
                declared: "video/mp4",
                served: "application/octet-stream",
                url: "https://x/y.bin"
            ) == .mp4
        )
        #expect(FalOriginMediaReferences.mediaType(declared: nil, served: "image/jpeg", url: "https://x/y") == .jpeg)
        #expect(
            FalOriginMediaReferences.mediaType(
                declared: "application/octet-stream",
                served: nil,
                url: "https://x/y.webp?z=1"
            ) == .webp
        )
        #expect(FalOriginMediaReferences.mediaType(declared: nil, served: nil, url: "https://x/y") == .octetStream)
        #expect(FalOriginMediaReferences.pathExtension(of: "https://host.test") == nil)
        #expect(FalOriginMediaReferences.pathExtension(of: "https://host.test/dir.d/file#x.png") == nil)
        #expect(FalOriginMediaReferences.pathExtension(of: "HTTP://h/a/b.WAV") == "WAV")
    }

    @Test func urlHelpers() {
        #expect(
            FalOriginJobRun.appending("/stream", query: "logs=1", to: "https://q.test/a/b/requests/1/status")
                == "https://q.test/a/b/requests/1/status/stream?logs=1"
        )
        #expect(
            FalOriginJobRun.appending("", query: "logs=1", to: "https://q.test/s?token=x")
                == "https://q.test/s?token=x&logs=1"
        )
        #expect(FalOriginClient.origin(of: "HTTPS://Q.test:9443/a?b") == "https://q.test:9443")
        #expect(FalOriginClient.origin(of: "no-scheme") == nil)
    }
}
