public import RelayCore
public import RelayJobs

/// The body fal's queue POSTs to a `fal_webhook` URL when a request ends (PROTOCOL.md §9.5):
/// `{"request_id", "gateway_request_id", "status": "OK"|"ERROR", "payload": <result or error body>, "error": null|"…"}`.
public enum WebhookPayload {
    /// The body for request `requestID` that ended with `outcome`.
    public static func body(requestID: String, outcome: JobOutcome) -> JSONValue {
        var object: JSONObject = [
            "request_id": .string(requestID),
            // The same id unless a gateway retried the request, which a relay never does on the caller's behalf.
            "gateway_request_id": .string(requestID),
        ]
        switch outcome {
        case .success(let result, _):
            object["status"] = "OK"
            object["payload"] = result
            object["error"] = .null
        case .failure(let error):
            object["status"] = "ERROR"
            object["payload"] = error.body
            object["error"] = .string(error.message)
        case .cancelled:
            let error = FalError.cancelled()
            object["status"] = "ERROR"
            object["payload"] = error.body
            object["error"] = .string(error.message)
        }
        return .object(object)
    }
}
