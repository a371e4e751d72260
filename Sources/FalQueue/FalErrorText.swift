import NIOHTTP1
public import RelayCore

/// fal's error answers (PROTOCOL.md §3.5) as one line of text, for every client's messages.
public enum FalErrorText {
    /// `HTTP 422 Unprocessable Entity: prompt: field required [validation_error]`.
    public static func describe(_ reply: FalQueueClient.Reply) -> String {
        var text = "HTTP \(reply.status)"
        let reason = HTTPResponseStatus(statusCode: reply.status).reasonPhrase
        if !reason.isEmpty { text += " " + reason }
        if let json = reply.json, case .object(let object) = json, let detail = object["detail"] {
            text += ": " + describe(detail: detail)
            if let type = object["error_type"]?.stringValue ?? reply.headers.first(name: "x-fal-error-type") {
                text += " [\(type)]"
            }
        } else if reply.body.readableBytes > 0 {
            var raw = String(decoding: reply.body.readableBytesView.prefix(301), as: UTF8.self)
            while let last = raw.last, last.isWhitespace { raw.removeLast() }
            text += ": " + (raw.count > 300 ? String(raw.prefix(300)) + "…" : raw)
        }
        return text
    }

    /// A `detail` value: a string, or FastAPI's list of `{loc, msg}` as `field: message; …`.
    public static func describe(detail: JSONValue) -> String {
        switch detail {
        case .string(let message):
            return message
        case .array(let entries):
            return entries.map { entry in
                guard let message = entry["msg"]?.stringValue else { return entry.serializedString }
                var location = (entry["loc"]?.arrayValue ?? []).map { $0.stringValue ?? $0.serializedString }
                if location.first == "body" { location.removeFirst() }
                return location.isEmpty ? message : location.joined(separator: ".") + ": " + message
            }.joined(separator: "; ")
        default:
            return detail.serializedString
        }
    }
}
