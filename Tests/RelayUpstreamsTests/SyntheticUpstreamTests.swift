import Foundation
import NIOPosix
import RelayCore
import RelayJobs
import RelayStore
import Synchronization
import Testing

@testable import RelayUpstreams

@Suite struct SyntheticUpstreamTests {
    static let catalog: ModelCatalog = {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("Config/models.json").path
        return try! ModelCatalog(json: [UInt8](FileManager.default.contents(atPath: path)!))
    }()

    func withUpstream(
        slots: Int = 2,
        timeScale: Double = 0,
        _ body: (SyntheticUpstream, BlobStore) async throws -> Void
    ) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("synthetic-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let hasher = KeyedHasher(secret: Array(repeating: 3, count: KeyedHasher.secretSize))
        let store = try BlobStore(directory: directory, hasher: hasher, threadPool: pool)
        let upstream = SyntheticUpstream(
            configuration: .init(slots: slots, timeScale: timeScale, publicBaseURL: { "https://relay.test" }),
            store: store,
            threadPool: pool
        )
        try await body(upstream, store)
        try await pool.shutdownGracefully()
    }

    func job(_ model: String, _ input: JSONObject) throws -> Job {
        guard let spec = Self.catalog.model(model) else { throw CatalogError("\(model) is not in the catalog") }
        let modelInput = try ModelInput(model: spec, input: input)
        return Job(input: modelInput, key: RequestKey(digest: Digest128(high: 1, low: 2)))
    }

    func finish(_ job: Job) async throws -> JobOutcome {
        for _ in 0..<2000 {
            if case .completed(let outcome) = job.status.phase { return outcome }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record("job did not finish")
        return .cancelled
    }

    @Test func imageJobLogsStepsAndStoresARealPNG() async throws {
        try await withUpstream { upstream, store in
            let job = try job(
                "fal-ai/flux/dev",
                ["prompt": "a fox", "image_size": "square", "seed": 5, "num_inference_steps": 8]
            )
            _ = upstream.start(job)
            guard case .success(let result, let seconds) = try await finish(job) else {
                Issue.record("expected success")
                return
            }
            #expect(seconds != nil)
            #expect(job.status.logs.map(\.message) == (1...8).map { "step \($0)/8" })
            let image = try #require(result["images"]?.arrayValue?.first)
            #expect(image["width"] == 512 && image["height"] == 512 && image["content_type"] == "image/png")
            #expect(result["seed"] == 5 && result["prompt"] == "a fox" && result["has_nsfw_concepts"] == [false])
            let url = try #require(image["url"]?.stringValue)
            #expect(url.hasPrefix("https://relay.test/files/") && url.hasSuffix(".png"))
            let digest = try #require(Digest128(hex: url.dropFirst("https://relay.test/files/".count).prefix(32)))
            let bytes = try #require(try await store.read(digest))
            #expect(Array(bytes.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
            // Partial previews are data URIs, published before the end.
            let partials = job.subscribe(after: 0) { _ in }.replay.compactMap { event -> JSONValue? in
                if case .partial(let value) = event.kind { return value }
                return nil
            }
            #expect(!partials.isEmpty)
            #expect(
                partials.allSatisfy {
                    $0["images"]?.arrayValue?.first?["url"]?.stringValue?.hasPrefix("data:image/png;base64,") == true
                }
            )
        }
    }

    @Test func sameSeedSameBytesAndMissingSeedIsReported() async throws {
        try await withUpstream { upstream, _ in
            let a = try job("fal-ai/flux/schnell", ["prompt": "same", "image_size": "square", "seed": 9])
            let b = try job("fal-ai/flux/schnell", ["prompt": "same", "image_size": "square", "seed": 9])
            let c = try job("fal-ai/flux/schnell", ["prompt": "same", "image_size": "square"])
            for job in [a, b, c] { _ = upstream.start(job) }
            let results = try await [a, b, c].asyncMap { try await finish($0) }
            guard case .success(let ra, _) = results[0], case .success(let rb, _) = results[1],
                case .success(let rc, _) = results[2]
            else {
                Issue.record("expected successes")
                return
            }
            #expect(ra["images"] == rb["images"])
            #expect(rc["seed"]?.intValue != nil)
        }
    }

    @Test func queuePositionsWithOneSlot() async throws {
        try await withUpstream(slots: 1, timeScale: 0.05) { upstream, _ in
            let jobs = try (0..<3).map {
                try job("fal-ai/flux/schnell", ["prompt": .string("q\($0)"), "image_size": "square", "seed": 1])
            }
            let positions = Mutex<[Int: [Int]]>([:])
            for (index, job) in jobs.enumerated() {
                _ = job.subscribe(after: 0) { event in
                    if case .queuePosition(let position) = event.kind {
                        positions.withLock { $0[index, default: []].append(position) }
                    }
                }
                _ = upstream.start(job)
            }
            for job in jobs { _ = try await finish(job) }
            let firstPositions = positions.withLock { seen in (0..<3).map { seen[$0] ?? [] } }
            #expect(firstPositions.map { $0.first ?? -1 }.sorted() == [0, 0, 1])
        }
    }

    /// Polls `condition` until it holds (a few seconds at most): for states reached on other threads.
    func until(_ condition: () -> Bool) async throws {
        for _ in 0..<2000 where !condition() {
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    @Test func cancelStopsAQueuedOrRunningJob() async throws {
        try await withUpstream(slots: 1, timeScale: 1) { upstream, _ in
            // About 34 s of work each at time scale 1 (0.08 s a step × 4.2 MP × 100 steps): within this test only a
            // cancel frees the slot, or the line.
            func slow(_ prompt: String) throws -> Job {
                try job(
                    "fal-ai/flux/dev",
                    [
                        "prompt": .string(prompt), "image_size": ["width": 2048, "height": 2048], "seed": 1,
                        "num_inference_steps": 100,
                    ]
                )
            }
            let running = try slow("running")
            let runningTask = upstream.start(running)
            try await until { running.status.phase == .running }
            let queued = try slow("queued")
            let queuedTask = upstream.start(queued)
            try await until { upstream.queueDepth == 1 }
            #expect(upstream.queueDepth == 1)
            queuedTask.cancel()
            // A queued job leaves the line at once.
            #expect(upstream.queueDepth == 0)
            runningTask.cancel()
            let next = try job(
                "fal-ai/flux/schnell",
                ["prompt": "next", "image_size": "square", "seed": 1, "num_inference_steps": 1]
            )
            _ = upstream.start(next)
            // The running job stopped and gave its slot back (the slot is released only when its work ends): the
            // next one finishes within `finish`'s 10 s, not after the 34 s it would otherwise wait.
            #expect(try await finish(next) != .cancelled)
            #expect(running.status.logs.count < 100)
            // The upstream stopped without reporting an outcome: the job table decides what cancellation means.
            #expect(!running.isTerminal && !queued.isTerminal)
            #expect(queued.status.phase == .queued(position: 0))
        }
    }

    @Test func audioVideoAndTextShapes() async throws {
        try await withUpstream { upstream, store in
            let speech = try job("fal-ai/kokoro/american-english", ["prompt": "hello there"])
            let video = try job(
                "fal-ai/ltx-video",
                ["prompt": "waves", "image_size": ["width": 96, "height": 64], "num_frames": 3]
            )
            let text = try job("fal-ai/any-llm", ["prompt": "hi", "max_tokens": 5])
            for job in [speech, video, text] { _ = upstream.start(job) }
            guard case .success(let audio, _) = try await finish(speech),
                case .success(let clip, _) = try await finish(video),
                case .success(let answer, _) = try await finish(text)
            else {
                Issue.record("expected successes")
                return
            }
            #expect(audio["audio"]?["content_type"] == "audio/wav")
            #expect(clip["video"]?["content_type"] == "image/apng")
            #expect(answer["partial"] == false && (answer["output"]?.stringValue?.isEmpty == false))
            let file = try #require(audio["audio"]?["file_name"]?.stringValue)
            let digest = try #require(Digest128(hex: file.prefix(32)))
            let bytes = try #require(try await store.read(digest))
            #expect(Array(bytes.prefix(4)) == Array("RIFF".utf8))
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
