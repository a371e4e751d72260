public import NIOPosix
import RelayCore
public import RelayJobs
import RelayMedia
public import RelayStore

/// The embedded upstream: makes real media from the input with no GPU and no network (DESIGN.md "Upstreams").
///
/// A fixed number of slots gives real queue positions; each job logs its steps, publishes partial previews and
/// ends with a fal-shaped result whose media live in the BlobStore. Deterministic: the same input and seed give
/// the same bytes. Labelled synthetic in every result (`"synthetic": true`).
public final class SyntheticUpstream: Upstream {
    public struct Configuration: Sendable {
        /// Concurrent generations ("GPU slots").
        public var slots: Int
        /// 1 = realistic timings, 0 = instant.
        public var timeScale: Double
        /// Absolute origin of media URLs, e.g. `https://127.0.0.1:8443` (read per job: known only after binding).
        public var publicBaseURL: @Sendable () -> String

        public init(slots: Int = 2, timeScale: Double = 1, publicBaseURL: @escaping @Sendable () -> String) {
            self.slots = slots
            self.timeScale = timeScale
            self.publicBaseURL = publicBaseURL
        }
    }

    private let configuration: Configuration
    private let store: BlobStore
    private let threadPool: NIOThreadPool
    private let queue: SlotQueue

    public init(configuration: Configuration, store: BlobStore, threadPool: NIOThreadPool) {
        self.configuration = configuration
        self.store = store
        self.threadPool = threadPool
        self.queue = SlotQueue(slots: configuration.slots)
    }

    /// Jobs waiting for a slot.
    public var queueDepth: Int { queue.waitingCount }

    public func start(_ job: Job) -> any UpstreamTask {
        let task = Task { [self] in
            do {
                // fal's queue priority: normal before low, and a low job a normal request joined is raised.
                let ticket = queue.ticket()
                if job.priority == .low { job.whenRaised { [queue] in queue.raise(ticket) } }
                job.setPositionSource { [queue] in queue.place(of: ticket) }
                try await queue.acquire(ticket: ticket, priority: job.priority) { position in
                    job.receive(.queued(position: position))
                }
            } catch {
                return  // cancelled while queued
            }
            defer { queue.release() }
            do {
                try await generate(job)
            } catch is CancellationError {
                return
            } catch let error as FalError {
                job.receive(.failed(error))
            } catch let error as StoreError {
                job.receive(
                    .failed(error.isDiskFull ? .insufficientStorage() : .internalError("media store: \(error)"))
                )
            } catch {
                job.receive(.failed(.upstreamFailed("synthetic generator: \(error)")))
            }
        }
        return SyntheticTask(task: task)
    }

    // MARK: - Generation

    private func generate(_ job: Job) async throws {
        let input = job.input
        let seed = input.explicitSeed ?? Int.random(in: 0...Int(Int32.max))
        let started = ContinuousClock.now
        job.receive(.started)
        let result: JSONValue
        switch input.model.kind {
        case .image, .imageEdit:
            result = try await generateImages(job, seed: seed)
        case .video:
            result = try await generateVideo(job, seed: seed)
        case .audio:
            result = try await generateAudio(job, seed: seed)
        case .text:
            result = try await generateText(job, seed: seed)
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        job.receive(.succeeded(result: result, inferenceSeconds: seconds))
    }

    private func generateImages(_ job: Job, seed: Int) async throws -> JSONValue {
        let input = job.input
        let (width, height) = input.imageSize
        let steps = input.integer("num_inference_steps", default: 28)
        let count = input.integer("num_images", default: 1)
        let prompt = input.string("prompt") ?? ""
        // Edits depend on their source image too: fold its URL into the picture's identity.
        let identity = input.string("image_url").map { prompt + "\u{1F}" + $0 } ?? prompt
        let megapixels = Double(width * height) / 1_000_000
        let stepSeconds = input.model.secondsPerStep * max(0.25, megapixels) * configuration.timeScale
        let previewEvery = max(1, steps / 4)
        for step in 1...steps {
            try await pause(seconds: stepSeconds)
            job.receive(.log("step \(step)/\(steps)", level: .info))
            if step % previewEvery == 0 && step < steps {
                let preview = try await preview(
                    identity: identity,
                    seed: seed,
                    width: width,
                    height: height,
                    progress: Double(step) / Double(steps)
                )
                job.receive(
                    .partial(.object(["images": .array([preview]), "partial": true, "step": .number(Double(step))]))
                )
            }
        }
        var images: [JSONValue] = []
        for index in 0..<count {
            let imageSeed = UInt64(seed) &+ UInt64(index)
            let png = try await threadPool.runIfActive {
                PNGEncoder.encode(
                    SyntheticPicture.render(prompt: identity, seed: imageSeed, width: width, height: height)
                )
            }
            let record = try await store.put(png, mediaType: .png)
            images.append(
                .object([
                    "url": .string(mediaURL(record)),
                    "width": .number(Double(width)),
                    "height": .number(Double(height)),
                    "content_type": .string(record.mediaType.contentType),
                    "file_size": .number(Double(record.size)),
                ])
            )
        }
        return .object([
            "images": .array(images),
            "seed": .number(Double(seed)),
            "has_nsfw_concepts": .array(Array(repeating: .bool(false), count: count)),
            "prompt": .string(prompt),
            "timings": .object(["inference": .number(Double(steps) * stepSeconds)]),
            "synthetic": .bool(true),
        ])
    }

    private func generateVideo(_ job: Job, seed: Int) async throws -> JSONValue {
        let input = job.input
        let size = input.fields["image_size"] == nil ? (width: 640, height: 360) : input.imageSize
        let frameCount = input.integer("num_frames", default: 16)
        let prompt = input.string("prompt") ?? ""
        let identity = input.string("image_url").map { prompt + "\u{1F}" + $0 } ?? prompt
        let steps = input.integer("num_inference_steps", default: 20)
        let stepSeconds = input.model.secondsPerStep * Double(frameCount) / 16 * configuration.timeScale
        for step in 1...steps {
            try await pause(seconds: stepSeconds)
            job.receive(.log("step \(step)/\(steps)", level: .info))
        }
        let apng = try await threadPool.runIfActive {
            let frames = SyntheticVideo.frames(
                prompt: identity,
                seed: UInt64(seed),
                width: size.width,
                height: size.height,
                count: frameCount
            )
            return AnimatedPNGEncoder.encode(frames: frames, delayMilliseconds: 125)
        }
        let record = try await store.put(apng, mediaType: .apng)
        return .object([
            "video": fileObject(record),
            "seed": .number(Double(seed)),
            "prompt": .string(prompt),
            "synthetic": .bool(true),
        ])
    }

    private func generateAudio(_ job: Job, seed: Int) async throws -> JSONValue {
        let input = job.input
        let text = input.string("text") ?? input.string("prompt") ?? ""
        let seconds = input.fields["duration"]?.doubleValue ?? min(30, max(1, Double(text.count) * 0.06))
        let chunks = max(1, Int(seconds.rounded(.up)))
        for chunk in 1...chunks {
            try await pause(seconds: input.model.secondsPerStep * configuration.timeScale)
            job.receive(.log("synthesised \(chunk)/\(chunks) s", level: .info))
        }
        let wav = try await threadPool.runIfActive {
            WAVEncoder.encode(
                samples: SyntheticAudio.render(text: text, seed: UInt64(seed), seconds: seconds),
                sampleRate: 24_000
            )
        }
        let record = try await store.put(wav, mediaType: .wav)
        return .object([
            "audio": fileObject(record),
            "duration": .number(seconds),
            "seed": .number(Double(seed)),
            "synthetic": .bool(true),
        ])
    }

    private func generateText(_ job: Job, seed: Int) async throws -> JSONValue {
        let input = job.input
        let prompt = input.string("prompt") ?? ""
        let tokens = SyntheticText.tokens(
            prompt: prompt,
            seed: UInt64(seed),
            maxTokens: input.integer("max_tokens", default: 120)
        )
        var output = ""
        for token in tokens {
            try await pause(seconds: input.model.secondsPerStep * configuration.timeScale)
            output += token
            job.receive(.partial(.object(["output": .string(output), "partial": true])))
        }
        return .object([
            "output": .string(output),
            "partial": false,
            "reasoning": .null,
            "error": .null,
            "synthetic": .bool(true),
        ])
    }

    // MARK: - Helpers

    private func preview(
        identity: String,
        seed: Int,
        width: Int,
        height: Int,
        progress: Double
    ) async throws -> JSONValue {
        let scale = min(1, 256 / Double(max(width, height)))
        let previewWidth = max(1, Int(Double(width) * scale))
        let previewHeight = max(1, Int(Double(height) * scale))
        let png = try await threadPool.runIfActive {
            PNGEncoder.encode(
                SyntheticPicture.render(
                    prompt: identity,
                    seed: UInt64(seed),
                    width: previewWidth,
                    height: previewHeight,
                    progress: progress
                )
            )
        }
        return .object([
            "url": .string("data:image/png;base64," + Base64.encode(png)),
            "width": .number(Double(previewWidth)),
            "height": .number(Double(previewHeight)),
            "content_type": "image/png",
        ])
    }

    private func fileObject(_ record: BlobRecord) -> JSONValue {
        .object([
            "url": .string(mediaURL(record)),
            "content_type": .string(record.mediaType.contentType),
            "file_name": .string(record.fileName),
            "file_size": .number(Double(record.size)),
        ])
    }

    private func mediaURL(_ record: BlobRecord) -> String {
        configuration.publicBaseURL() + "/files/" + record.fileName
    }

    private func pause(seconds: Double) async throws {
        if seconds > 0 {
            try await Task.sleep(for: .milliseconds(Int((seconds * 1000).rounded())))
        } else {
            try Task.checkCancellation()
        }
    }
}

private struct SyntheticTask: UpstreamTask {
    let task: Task<Void, Never>

    func cancel() {
        task.cancel()
    }
}
