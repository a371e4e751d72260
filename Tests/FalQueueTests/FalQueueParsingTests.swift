import NIOCore
import RelayCore
import Testing

@testable import FalQueue

@Suite struct FalEventStreamParserTests {
    func feed(_ chunks: [String], maxEventBytes: Int = 1 << 20) throws -> [String] {
        var parser = FalEventStreamParser(maxEventBytes: maxEventBytes)
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
        #expect(throws: FalEventStreamParser.Overflow.self) {
            try feed(["data: " + String(repeating: "x", count: 100)], maxEventBytes: 64)
        }
        #expect(throws: FalEventStreamParser.Overflow.self) {
            try feed(Array(repeating: "data: 0123456789\n", count: 10), maxEventBytes: 64)
        }
    }
}

@Suite struct FalMediaReferencesTests {
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
        let found = FalMediaReferences(in: result).references.map(\.url)
        #expect(
            found == ["https://cdn.test/a/cat.png", "https://cdn.test/b/no-extension", "https://cdn.test/t.JPG?sig=1"]
        )
    }

    @Test func rewritesURLsAndFileSizesOnly() throws {
        let stored = "https://relay.test/files/abcd.png"
        let rewritten = FalMediaReferences.rewrite(
            result,
            replacements: ["https://cdn.test/a/cat.png": .init(url: stored, size: 42)]
        )
        let images = try #require(rewritten["images"]?.arrayValue)
        #expect(images[0]["url"] == .string(stored))
        #expect(images[0]["file_size"] == 42)
        #expect(
            images[1]["url"] == .string(stored) && images[1]["file_size"] == nil
        )
        #expect(images[2]["url"] == "https://cdn.test/b/no-extension")
        #expect(rewritten["image_url"] == "https://cdn.test/input.png" && rewritten["seed"] == 4)
        #expect(rewritten["preview"] == result["preview"] && rewritten["homepage"] == result["homepage"])
    }

    @Test func picksTheMostPreciseMediaType() {
        #expect(
            FalMediaReferences.mediaType(
                declared: "video/mp4",
                served: "application/octet-stream",
                url: "https://x/y.bin"
            ) == .mp4
        )
        #expect(FalMediaReferences.mediaType(declared: nil, served: "image/jpeg", url: "https://x/y") == .jpeg)
        #expect(
            FalMediaReferences.mediaType(
                declared: "application/octet-stream",
                served: nil,
                url: "https://x/y.webp?z=1"
            ) == .webp
        )
        #expect(FalMediaReferences.mediaType(declared: nil, served: nil, url: "https://x/y") == .octetStream)
        #expect(FalURL.pathExtension(of: "https://host.test") == nil)
        #expect(FalURL.pathExtension(of: "https://host.test/dir.d/file#x.png") == nil)
        #expect(FalURL.pathExtension(of: "HTTP://h/a/b.WAV") == "WAV")
    }

    @Test func urlHelpers() {
        #expect(
            FalURL.appending("/stream", query: "logs=1", to: "https://q.test/a/b/requests/1/status")
                == "https://q.test/a/b/requests/1/status/stream?logs=1"
        )
        #expect(
            FalURL.appending("", query: "logs=1", to: "https://q.test/s?token=x")
                == "https://q.test/s?token=x&logs=1"
        )
        #expect(FalURL.origin(of: "HTTPS://Q.test:9443/a?b") == "https://q.test:9443")
        #expect(FalURL.origin(of: "no-scheme") == nil)
        #expect(FalURL.origin(of: "ftp://host.test/x") == nil && FalURL.origin(of: "https:///path") == nil)
        #expect(FalURL.isHTTP("HTTPS://x") && !FalURL.isHTTP("data:image/png;base64,AA"))
    }

    @Test func savedFileExtensions() {
        #expect(FalMediaReferences.fileExtension(url: "https://x/a/cat.PNG?s=1", declared: nil, served: nil) == "png")
        #expect(FalMediaReferences.fileExtension(url: "https://x/a/clip", declared: "video/mp4", served: nil) == "mp4")
        #expect(
            FalMediaReferences.fileExtension(url: "https://x/a/voice", declared: nil, served: "audio/x-wav") == "wav"
        )
        #expect(
            FalMediaReferences.fileExtension(url: "https://x/a/blob.toolongext", declared: nil, served: nil) == "bin"
        )
    }
}

@Suite struct FalQueueProtocolTests {
    @Test func aSubmitAnswerNamesItsURLsOrGetsFalsCanonicalOnes() throws {
        let full: JSONValue = [
            "request_id": "r1", "status_url": "https://q.test/s", "response_url": "https://q.test/r",
            "cancel_url": "https://q.test/c",
        ]
        let named = try #require(
            FalQueueHandle(answer: full, baseURL: "https://base.test", endpoint: "fal-ai/flux/dev")
        )
        #expect(named.urls == ["https://q.test/s", "https://q.test/r", "https://q.test/c"])
        // Only the id: the URLs are under the app (owner/alias), not the endpoint's path.
        let bare = try #require(
            FalQueueHandle(answer: ["request_id": "r2"], baseURL: "https://base.test", endpoint: "fal-ai/flux/dev")
        )
        #expect(bare.responseURL == "https://base.test/fal-ai/flux/requests/r2")
        #expect(bare.statusURL == bare.responseURL + "/status" && bare.cancelURL == bare.responseURL + "/cancel")
        // A URL that is not http(s) is not followed.
        let odd = FalQueueHandle(
            answer: ["request_id": "r3", "status_url": "file:///etc/passwd"],
            baseURL: "https://base.test",
            endpoint: "a/b"
        )
        #expect(odd?.statusURL == "https://base.test/a/b/requests/r3/status")
        #expect(FalQueueHandle(answer: ["request_id": ""], baseURL: "https://b.test", endpoint: "a/b") == nil)
        #expect(FalQueueHandle(answer: ["status": "IN_QUEUE"], baseURL: "https://b.test", endpoint: "a/b") == nil)
    }

    func reply(_ status: Int, _ body: String, headers: [(String, String)] = []) -> FalQueueClient.Reply {
        FalQueueClient.Reply(status: status, headers: .init(headers), body: ByteBuffer(string: body))
    }

    @Test func errorAnswersReadAsOneLine() {
        let validation = reply(
            422,
            #"{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"missing"}]}"#,
            headers: [("x-fal-error-type", "validation_error")]
        )
        #expect(
            FalErrorText.describe(validation)
                == "HTTP 422 Unprocessable Entity: prompt: field required [validation_error]"
        )
        #expect(
            FalErrorText.describe(reply(401, #"{"detail":"No API key","error_type":"unauthorized"}"#))
                == "HTTP 401 Unauthorized: No API key [unauthorized]"
        )
        #expect(FalErrorText.describe(reply(502, "bad gateway\n")) == "HTTP 502 Bad Gateway: bad gateway")
        #expect(FalErrorText.describe(reply(500, "")) == "HTTP 500 Internal Server Error")
    }
}
