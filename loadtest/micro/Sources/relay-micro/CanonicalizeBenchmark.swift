import RelayCore

/// Benchmark A: the CPU cost per request of turning a submit body into its RequestKey, whole and by step.
struct CanonicalizeBenchmark {
    /// A benchmark that cannot start, with the reason.
    struct SetupError: Error, CustomStringConvertible {
        let description: String
    }

    let catalog: ModelCatalog
    let body: SubmitBody
    let hasher: KeyedHasher

    /// The whole path first, then each step on its own (every step gets the previous step's output, prepared once).
    func operations() throws(SetupError) -> [OperationBenchmark] {
        guard let model = catalog.model(body.modelID) else {
            throw SetupError(description: "model \(body.modelID) is not in the catalog")
        }
        let object: JSONObject
        let input: ModelInput
        do {
            guard let parsed = try JSONValue(parsing: body.bytes).objectValue else {
                throw SetupError(description: "the submit body is not a JSON object")
            }
            object = parsed
            input = try ModelInput(model: model, input: object)
        } catch let error as SetupError {
            throw error
        } catch {
            throw SetupError(description: "the submit body is rejected: \(error)")
        }
        let catalog = catalog
        let body = body
        let hasher = hasher
        let fields = JSONValue.object(input.fields)
        let bytes = body.bytes
        let modelID = body.modelID
        return [
            OperationBenchmark(name: "full: parse + model lookup + normalise + key") { count in
                for _ in 0..<count { blackHole(body.prepare(catalog: catalog, hasher: hasher)) }
            },
            OperationBenchmark(name: "parse (JSONValue(parsing:), \(bytes.count) bytes)") { count in
                bytes.withUnsafeBytes { buffer in
                    for _ in 0..<count { blackHole(try? JSONValue(parsing: buffer)) }
                }
            },
            OperationBenchmark(name: "model lookup (catalog.model(id))") { count in
                for _ in 0..<count { blackHole(catalog.model(modelID)) }
            },
            OperationBenchmark(name: "normalise (ModelInput(model:input:), incl. its canonicalBytes)") { count in
                for _ in 0..<count { blackHole(try? ModelInput(model: model, input: object)) }
            },
            OperationBenchmark(name: "canonicalBytes() of the normalised fields") { count in
                for _ in 0..<count { blackHole(fields.canonicalBytes()) }
            },
            OperationBenchmark(name: "key (RequestKey(input:hasher:))") { count in
                for _ in 0..<count { blackHole(RequestKey(input: input, hasher: hasher)) }
            },
        ]
    }
}
