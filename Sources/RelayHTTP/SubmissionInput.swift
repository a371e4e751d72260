import NIOCore
import RelayCore

extension RelayServices {
    /// A submission's input as the relay keys it: parsed, looked up in the catalog and normalised, with URLs of this
    /// relay's own media keyed by their bytes. Every way in (HTTP, `/ws`, realtime) goes through here, so the same
    /// input is the same RequestKey whichever way it came.
    func modelInput(endpoint: EndpointID, body: ByteBuffer) -> Result<ModelInput, FalError> {
        guard body.readableBytes > 0 else { return modelInput(endpoint: endpoint, object: [:]) }
        let parsed: JSONValue
        do {
            parsed = try body.withUnsafeReadableBytes { bytes throws(JSONError) in try JSONValue(parsing: bytes) }
        } catch {
            return .failure(.malformedJSON(error.description))
        }
        guard let object = parsed.objectValue else {
            let issue = FalError.ValidationIssue(
                location: ["body"],
                message: "value is not a valid dict",
                type: "type_error.dict"
            )
            return .failure(.validation(issue))
        }
        return modelInput(endpoint: endpoint, object: object)
    }

    /// The same for an input already parsed (WebSocket and realtime messages).
    func modelInput(endpoint: EndpointID, object: JSONObject) -> Result<ModelInput, FalError> {
        guard let model = catalog.model(endpoint.description) else {
            return .failure(.unknownModel(endpoint.description))
        }
        do {
            return .success(try ModelInput(model: model, input: object, mediaURLs: uploads?.mediaURLs))
        } catch {
            return .failure(error)
        }
    }
}
