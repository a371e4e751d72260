/// An error as a fal client sees it: an HTTP status and a fal-shaped body (PROTOCOL.md §3.5).
///
/// Validation errors carry a FastAPI-style `detail` list (422); everything else `{detail, error_type}` plus
/// the `X-Fal-Error-Type` header. Built only through the static members so that every status and
/// `error_type` pairing is decided here, once.
public struct FalError: Error, Sendable, Hashable, CustomStringConvertible {
    /// One entry of a 422 `detail` list.
    public struct ValidationIssue: Error, Sendable, Hashable {
        public let location: [String]
        public let message: String
        public let type: String

        public init(location: [String], message: String, type: String) {
            self.location = location
            self.message = message
            self.type = type
        }

        public static func missing(_ field: String) -> ValidationIssue {
            ValidationIssue(location: ["body", field], message: "field required", type: "value_error.missing")
        }

        public static func invalid(_ field: String, _ message: String, type: String = "value_error") -> ValidationIssue
        {
            ValidationIssue(location: ["body", field], message: message, type: type)
        }
    }

    private enum Detail: Sendable, Hashable {
        case message(String)
        case validation([ValidationIssue])
        /// fal's Platform API (`api.fal.ai/v1`) answers `{"error": {"type", "message"}}`.
        case platform(type: String, message: String)
    }

    public let status: Int
    public let errorType: String?
    private let detail: Detail

    private init(status: Int, detail: Detail, errorType: String?) {
        self.status = status
        self.detail = detail
        self.errorType = errorType
    }

    /// The human-readable message (for validation errors, the issues joined).
    public var message: String {
        switch detail {
        case .message(let text), .platform(_, let text):
            return text
        case .validation(let issues):
            return issues.map { "\($0.location.joined(separator: ".")): \($0.message)" }.joined(separator: "; ")
        }
    }

    public var description: String { "\(status) \(errorType ?? "error"): \(message)" }

    /// The response body: `{"detail": [...]}` for validation errors, `{"detail": "...", "error_type": "..."}` otherwise.
    public var body: JSONValue {
        switch detail {
        case .validation(let issues):
            let list: [JSONValue] = issues.map { issue in
                .object([
                    "loc": .array(issue.location.map { .string($0) }),
                    "msg": .string(issue.message),
                    "type": .string(issue.type),
                ])
            }
            return .object(["detail": .array(list)])
        case .message(let text):
            var object: JSONObject = ["detail": .string(text)]
            if let errorType {
                object["error_type"] = .string(errorType)
            }
            return .object(object)
        case .platform(let type, let text):
            return ["error": ["type": .string(type), "message": .string(text)]]
        }
    }

    /// An error of fal's Platform API: `{"error": {"type", "message"}}` with its own type names.
    public static func platform(status: Int, type: String, message: String) -> FalError {
        FalError(status: status, detail: .platform(type: type, message: message), errorType: nil)
    }

    /// The same error in the shape of fal's Platform API (`{"error": {"type", "message"}}`), for its routes.
    public var platformShaped: FalError {
        let type =
            switch status {
            case 401, 403: "authorization_error"
            case 404: "not_found"
            case 429: "rate_limited"
            case 400, 413, 422: "validation_error"
            default: "server_error"
            }
        return FalError(status: status, detail: .platform(type: type, message: message), errorType: errorType)
    }

    public static func validation(_ issues: [ValidationIssue]) -> FalError {
        FalError(status: 422, detail: .validation(issues), errorType: nil)
    }

    public static func validation(_ issue: ValidationIssue) -> FalError {
        validation([issue])
    }

    public static func malformedJSON(_ reason: String) -> FalError {
        FalError(status: 400, detail: .message("Malformed JSON body: \(reason)"), errorType: "invalid_json")
    }

    public static func badRequest(_ message: String, type: String = "bad_request") -> FalError {
        FalError(status: 400, detail: .message(message), errorType: type)
    }

    public static func unauthorized(_ message: String = "Invalid or revoked API key") -> FalError {
        FalError(status: 401, detail: .message(message), errorType: "unauthorized")
    }

    public static func forbidden(_ message: String) -> FalError {
        FalError(status: 403, detail: .message(message), errorType: "forbidden")
    }

    public static func notFound(_ message: String = "Not found") -> FalError {
        FalError(status: 404, detail: .message(message), errorType: "not_found")
    }

    public static func unknownModel(_ id: String) -> FalError {
        FalError(status: 404, detail: .message("Unknown model \"\(id)\""), errorType: "model_not_found")
    }

    public static func methodNotAllowed(_ method: String) -> FalError {
        FalError(status: 405, detail: .message("Method \(method) is not allowed here"), errorType: "method_not_allowed")
    }

    public static func payloadTooLarge(limit: Int) -> FalError {
        FalError(status: 413, detail: .message("Request body exceeds \(limit) bytes"), errorType: "payload_too_large")
    }

    public static func requestTimeout(_ message: String) -> FalError {
        FalError(status: 408, detail: .message(message), errorType: "request_timeout")
    }

    public static func uriTooLong(limit: Int) -> FalError {
        FalError(status: 414, detail: .message("The request URL exceeds \(limit) bytes"), errorType: "uri_too_long")
    }

    public static func headersTooLarge(limit: Int) -> FalError {
        FalError(
            status: 431,
            detail: .message("The request headers exceed \(limit) bytes"),
            errorType: "request_header_fields_too_large"
        )
    }

    public static func unsupportedMediaType(_ type: String) -> FalError {
        FalError(
            status: 415,
            detail: .message("Unsupported Content-Type \"\(type)\"; send application/json"),
            errorType: "unsupported_media_type"
        )
    }

    public static func requestNotCompleted(_ id: String) -> FalError {
        FalError(status: 400, detail: .message("Request \(id) is still in progress"), errorType: "request_in_progress")
    }

    public static func cancelled() -> FalError {
        FalError(status: 400, detail: .message("Request was cancelled"), errorType: "request_cancelled")
    }

    /// fal's answer to a request that did not start within its `X-Fal-Request-Timeout`: 504, sent with
    /// `X-Fal-Request-Timeout-Type: user` (clients do not retry it: the caller's own deadline would only pass again).
    public static func startTimeout(_ seconds: Double) -> FalError {
        FalError(
            status: 504,
            detail: .message("The request did not start within its X-Fal-Request-Timeout (\(seconds) s)"),
            errorType: "request_timeout"
        )
    }

    /// Headers fal sends with this error besides `X-Fal-Error-Type`.
    public var responseHeaders: [(String, String)] {
        status == 504 && errorType == "request_timeout" ? [("x-fal-request-timeout-type", "user")] : []
    }

    /// A key's spending cap would be passed by new upstream work: 403, which the fal clients do not retry.
    public static func budgetExceeded(_ detail: String) -> FalError {
        FalError(status: 403, detail: .message(detail), errorType: "budget_exceeded")
    }

    public static func rateLimited(_ detail: String) -> FalError {
        FalError(status: 429, detail: .message(detail), errorType: "rate_limited")
    }

    public static func upgradeRequired() -> FalError {
        FalError(
            status: 426,
            detail: .message("This endpoint is a WebSocket: send Upgrade: websocket"),
            errorType: "upgrade_required"
        )
    }

    public static func rangeNotSatisfiable(length: Int) -> FalError {
        FalError(
            status: 416,
            detail: .message("Range not satisfiable: the file is \(length) bytes long"),
            errorType: "range_not_satisfiable"
        )
    }

    public static func internalError(_ message: String = "Internal server error") -> FalError {
        FalError(status: 500, detail: .message(message), errorType: "internal_error")
    }

    public static func upstreamFailed(_ message: String) -> FalError {
        FalError(status: 500, detail: .message(message), errorType: "upstream_error")
    }

    /// The origin behind this relay failed or answered nonsense (HTTP 502); `message` names the origin.
    public static func badGateway(_ message: String, type: String = "upstream_error") -> FalError {
        FalError(status: 502, detail: .message(message), errorType: type)
    }

    public static func insufficientStorage(_ message: String = "The relay's media store is full") -> FalError {
        FalError(status: 507, detail: .message(message), errorType: "insufficient_storage")
    }

    public static func unavailable(_ message: String, type: String = "service_unavailable") -> FalError {
        FalError(status: 503, detail: .message(message), errorType: type)
    }
}
