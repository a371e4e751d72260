import Foundation
import NIOCore
import RelayCore

@testable import RelayStore

extension CachedResult {
    /// The result JSON or, for a rejection, the error body.
    var json: JSONValue {
        switch outcome {
        case .success(let result, _): result
        case .rejected(let error): error.body
        }
    }
}

/// Keys, results and file helpers for the ResultIndex and BlobExpiry tests.
enum ResultFixtures {
    static func key(_ index: Int, salt: String = "") -> RequestKey {
        RequestKey(digest: Fixtures.hasher.digest(Array("request \(salt)\(index)".utf8)))
    }

    static func input(_ index: Int) -> [UInt8] {
        Array(#"{"prompt":"a lighthouse at dusk \#(index)","seed":\#(index)}"#.utf8)
    }

    /// A fal-style image result whose URLs point at `digests` on this relay.
    static func success(
        _ index: Int,
        digests: [Digest128] = [],
        storedAt: Double = Timestamp.now().secondsSinceEpoch,
        ttl: Double = 3600,
        seconds: Double? = 1.25
    ) -> CachedResult {
        let images: [JSONValue] = digests.map { digest in
            [
                "url": .string("https://relay.test/files/\(digest.hex).png"), "width": 1024, "height": 768,
                "content_type": "image/png",
            ]
        }
        return CachedResult(
            modelID: "fal-ai/flux/dev",
            canonicalInput: input(index),
            outcome: .success(
                result: [
                    "images": .array(images), "seed": .number(Double(index)),
                    "prompt": .string("a lighthouse at dusk \(index)"), "has_nsfw_concepts": [false],
                ],
                inferenceSeconds: seconds
            ),
            storedAt: Timestamp(secondsSinceEpoch: storedAt),
            expiresAt: Timestamp(secondsSinceEpoch: storedAt + ttl)
        )
    }

    static func rejection(
        _ index: Int,
        storedAt: Double = Timestamp.now().secondsSinceEpoch,
        ttl: Double = 60
    ) -> CachedResult {
        CachedResult(
            modelID: "fal-ai/flux/dev",
            canonicalInput: input(index),
            outcome: .rejected(
                .validation([
                    .invalid(
                        "num_images",
                        "ensure this value is less than or equal to 4",
                        type: "value_error.number.not_le"
                    ), .missing("prompt"),
                ])
            ),
            storedAt: Timestamp(secondsSinceEpoch: storedAt),
            expiresAt: Timestamp(secondsSinceEpoch: storedAt + ttl)
        )
    }

    static func durableIndex(in directory: TemporaryDirectory, decodedLimit: Int = 20_000) -> ResultIndex {
        ResultIndex(directory: directory.path + "/data", threadPool: .singleton, decodedLimit: decodedLimit)
    }

    static func resultsDirectory(_ directory: TemporaryDirectory) -> String { directory.path + "/data/results" }

    static func manifestPath(_ directory: TemporaryDirectory, _ key: RequestKey) -> String {
        "\(resultsDirectory(directory))/\(key.digest.hex.prefix(2))/\(key.digest.hex)"
    }

    static func lookup(_ index: ResultIndex, _ number: Int, salt: String = "", now: Timestamp = .now()) -> CachedResult?
    {
        index.lookup(key(number, salt: salt), modelID: "fal-ai/flux/dev", canonicalInput: input(number), now: now)
    }

    /// Sets a file's or directory's modification time.
    static func setModified(_ path: String, to seconds: Double) throws {
        try FileManager.default.setAttributes(
            [.modificationDate: Date(timeIntervalSince1970: seconds)],
            ofItemAtPath: path
        )
    }
}
