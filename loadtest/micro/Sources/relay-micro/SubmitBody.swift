import RelayCore

/// A submit request's body and endpoint, taken through what the HTTP handler does before `JobTable.submit`:
/// parse, look the model up, normalise, key.
struct SubmitBody: Sendable {
    /// A typical fal-ai/flux/dev submit (306 bytes): prompt, preset size, the usual knobs, a seed, sync_mode.
    static let fluxDev = SubmitBody(
        modelID: "fal-ai/flux/dev",
        bytes: Array(
            #"""
            {"prompt":"A cinematic photo of a red fox standing in fresh snow at golden hour, shallow depth of field, \#
            35mm film grain, soft rim light, highly detailed","image_size":"landscape_4_3","num_inference_steps":28,\#
            "guidance_scale":3.5,"num_images":1,"enable_safety_checker":true,"seed":1234567,"sync_mode":true}
            """#.utf8
        )
    )

    let modelID: String
    let bytes: [UInt8]

    /// What one request costs before it reaches the job table; nil when the body or the model is unusable.
    func prepare(catalog: ModelCatalog, hasher: KeyedHasher) -> (input: ModelInput, key: RequestKey)? {
        let parsed = bytes.withUnsafeBytes { buffer in try? JSONValue(parsing: buffer) }
        guard let object = parsed?.objectValue, let model = catalog.model(modelID),
            let input = try? ModelInput(model: model, input: object)
        else { return nil }
        return (input, RequestKey(input: input, hasher: hasher))
    }
}
