import Testing

@testable import RelayCore

@Suite struct ModelInputTests {
    let flux = ModelSpec(
        id: "fal-ai/flux/dev",
        title: "FLUX",
        kind: .image,
        defaults: ["num_inference_steps": 28, "guidance_scale": 3.5, "image_size": "landscape_4_3", "num_images": 1],
        ignoredFields: ["sync_mode"]
    )

    @Test func defaultsPresetsAndIgnoredFieldsNormalise() throws {
        let short = try ModelInput(model: flux, input: ["prompt": "a fox", "sync_mode": true])
        let long = try ModelInput(
            model: flux,
            input: [
                "image_size": ["height": 768, "width": 1024], "num_images": 1, "prompt": "a fox", "guidance_scale": 3.5,
                "num_inference_steps": 28,
            ]
        )
        #expect(short.canonicalBytes == long.canonicalBytes)
        #expect(short.imageSize == (1024, 768) || (short.imageSize.width == 1024 && short.imageSize.height == 768))
        #expect(
            String(decoding: short.canonicalBytes, as: UTF8.self)
                == #"{"guidance_scale":3.5,"image_size":{"height":768,"width":1024},"num_images":1,"num_inference_steps":28,"prompt":"a fox"}"#
        )
    }

    @Test func everyProblemIsReportedAtOnce() {
        #expect(
            throws: FalError.validation([
                .missing("prompt"),
                .invalid(
                    "image_size",
                    "unknown preset \"huge\"; use one of landscape_16_9, landscape_4_3, portrait_16_9, portrait_4_3, square, square_hd or {width, height}",
                    type: "value_error.enum"
                ),
                .invalid("num_images", "ensure this value is within 1...4", type: "value_error.number.not_in_range"),
                .invalid("seed", "value is not a valid non-negative integer", type: "type_error.integer"),
            ])
        ) {
            try ModelInput(model: flux, input: ["image_size": "huge", "num_images": 9, "seed": -1])
        }
    }

    @Test(arguments: [
        JSONValue.object(["width": 10, "height": 10]),
        JSONValue.object(["width": 1024]),
        JSONValue.string("square_xl"),
        JSONValue.number(12),
    ])
    func badImageSizesAre422(size: JSONValue) {
        #expect(throws: FalError.self) { try ModelInput(model: flux, input: ["prompt": "p", "image_size": size]) }
    }

    @Test func seedIsKeptAndMissingSeedIsNull() throws {
        #expect(try ModelInput(model: flux, input: ["prompt": "p", "seed": 42]).explicitSeed == 42)
        let unseeded = try ModelInput(model: flux, input: ["prompt": "p", "seed": nil])
        #expect(unseeded.explicitSeed == nil && unseeded.fields["seed"] == nil)
    }

    @Test func emptyPromptAndWrongTypesAreRejected() {
        #expect(throws: FalError.self) { try ModelInput(model: flux, input: ["prompt": ""]) }
        #expect(throws: FalError.self) { try ModelInput(model: flux, input: ["prompt": 5]) }
        #expect(throws: FalError.self) {
            try ModelInput(model: flux, input: ["prompt": "p", "num_inference_steps": 2.5])
        }
    }

    @Test func requestKeyDependsOnModelInputAndScope() throws {
        let hasher = KeyedHasher(secret: Array(repeating: 1, count: KeyedHasher.secretSize))
        let a = try ModelInput(model: flux, input: ["prompt": "a", "seed": 1])
        let b = try ModelInput(model: flux, input: ["prompt": "b", "seed": 1])
        let other = ModelSpec(id: "fal-ai/flux/schnell", title: "", kind: .image, defaults: flux.defaults)
        let c = try ModelInput(model: other, input: ["prompt": "a", "seed": 1])
        let keyA = RequestKey(input: a, hasher: hasher)
        #expect(keyA == RequestKey(input: a, hasher: hasher))
        #expect(keyA != RequestKey(input: b, hasher: hasher))
        #expect(keyA != RequestKey(input: c, hasher: hasher))
        #expect(keyA != RequestKey(input: a, scope: "key-1", hasher: hasher))
        let otherSecret = KeyedHasher(secret: Array(repeating: 2, count: KeyedHasher.secretSize))
        #expect(keyA != RequestKey(input: a, hasher: otherSecret))
    }
}
