import NIOCore
public import RelayCore

/// One entry of the durable request log (`RequestLog`): a request created, a job attached at an upstream that keeps
/// it by id, a job finished, a request cancelled.
///
/// A job's end is recorded once per job, not per request, so requests that coalesced onto it (even while its end was
/// being written) all find it by `jobID`.
public enum RequestLogRecord: Sendable, Hashable {
    /// What a client was told when it submitted: everything needed to answer status and result by id again.
    public struct Creation: Sendable, Hashable {
        public var id: String
        public var jobID: UInt64
        /// The endpoint as the client addressed it (`EndpointID.description`).
        public var endpoint: String
        public var key: RequestKey
        public var ownerKeyID: String?
        public var createdAt: Timestamp
        /// `x-relay-cache` (`CacheOutcome.rawValue`).
        public var cacheOutcome: String
        /// `Cache-Status`.
        public var cacheStatus: String
        /// The input as keyed, for the request history; nil when the client asked that it not be kept
        /// (`X-Fal-Store-IO: 0`), or in records written before the history was kept.
        public var input: JSONObject?
        /// The submission's valid `X-Fal-Tags`, as `key=value,…`.
        public var tags: String?

        public init(
            id: String,
            jobID: UInt64,
            endpoint: String,
            key: RequestKey,
            ownerKeyID: String?,
            createdAt: Timestamp,
            cacheOutcome: String,
            cacheStatus: String,
            input: JSONObject? = nil,
            tags: String? = nil
        ) {
            self.id = id
            self.jobID = jobID
            self.endpoint = endpoint
            self.key = key
            self.ownerKeyID = ownerKeyID
            self.createdAt = createdAt
            self.cacheOutcome = cacheOutcome
            self.cacheStatus = cacheStatus
            self.input = input
            self.tags = tags
        }
    }

    /// How a job ended, as the log keeps it (the result JSON inline, so a request is served by id even when its
    /// result was never cacheable or has left the result index).
    public enum Outcome: Sendable, Hashable {
        case success(result: JSONValue, inferenceSeconds: Double?)
        case failure(FalError)
        case cancelled
    }

    /// Where an upstream that keeps jobs by its own id (a fal-compatible origin) can be asked about one again:
    /// PROTOCOL.md §3.1's submit answer.
    public struct UpstreamHandle: Sendable, Hashable {
        /// The upstream's base URL the job was submitted to: only the same origin is asked to follow it again.
        public var origin: String
        public var requestID: String
        public var statusURL: String
        public var responseURL: String
        public var cancelURL: String

        public init(origin: String, requestID: String, statusURL: String, responseURL: String, cancelURL: String) {
            self.origin = origin
            self.requestID = requestID
            self.statusURL = statusURL
            self.responseURL = responseURL
            self.cancelURL = cancelURL
        }
    }

    /// A job the upstream accepted under its own id: enough to rebuild the job and follow it again after a restart
    /// instead of resubmitting it (or giving up on it).
    public struct Attachment: Sendable, Hashable {
        public var jobID: UInt64
        public var attachedAt: Timestamp
        /// `ModelSpec.id`, and the normalised input that went upstream (`ModelInput.fields`): the job's input is
        /// rebuilt from them through the catalog, so its result can still be cached under its key.
        public var modelID: String
        public var input: JSONObject
        public var handle: UpstreamHandle
        /// Its result may be stored for reuse; a 422 may be stored; identical new work may coalesce onto it.
        public var storeResult: Bool
        public var storeRejection: Bool
        public var coalesce: Bool

        public init(
            jobID: UInt64,
            attachedAt: Timestamp,
            modelID: String,
            input: JSONObject,
            handle: UpstreamHandle,
            storeResult: Bool,
            storeRejection: Bool,
            coalesce: Bool
        ) {
            self.jobID = jobID
            self.attachedAt = attachedAt
            self.modelID = modelID
            self.input = input
            self.handle = handle
            self.storeResult = storeResult
            self.storeRejection = storeRejection
            self.coalesce = coalesce
        }
    }

    case created(Creation)
    case attached(Attachment)
    case finished(jobID: UInt64, at: Timestamp, outcome: Outcome)
    case cancelled(requestID: String, at: Timestamp)
    /// The request's input and output were deleted at its owner's request (`DELETE /v1/models/requests/{id}/payloads`).
    case payloadsDeleted(requestID: String, at: Timestamp)

    /// The newest instant the record speaks of (a segment may be dropped once all of its records are past retention).
    public var time: Timestamp {
        switch self {
        case .created(let creation): creation.createdAt
        case .attached(let attachment): attachment.attachedAt
        case .finished(_, let at, _): at
        case .cancelled(_, let at), .payloadsDeleted(_, let at): at
        }
    }

    // MARK: - Framing

    /// Each segment starts with this: a file without it is not a request log.
    static let segmentMagic: [UInt8] = Array("MRRQLOG1".utf8)
    /// Frame header: payload length (u32 LE) + XXH3 checksum of the payload (u64 LE).
    static let frameHeaderSize = 12
    /// A length above this is not a record but garbage (a torn or overwritten header).
    static let maxPayload = 16 << 20

    /// Appends the framed record to `buffer`; false (and nothing appended) when a field is too long to encode.
    @discardableResult
    func frame(into buffer: inout ByteBuffer) -> Bool {
        var payload = ByteBufferAllocator().buffer(capacity: 256)
        guard encode(into: &payload), payload.readableBytes <= Self.maxPayload else {
            // A creation too big with its input for the history is kept without it: the request must survive.
            guard case .created(var creation) = self, creation.input != nil else { return false }
            creation.input = nil
            return RequestLogRecord.created(creation).frame(into: &buffer)
        }
        buffer.writeInteger(UInt32(payload.readableBytes), endianness: .little)
        buffer.writeInteger(ResultManifest.checksum(payload.readableBytesView), endianness: .little)
        buffer.writeBuffer(&payload)
        return true
    }

    /// What reading one frame from a segment gave.
    enum FrameOutcome {
        case record(RequestLogRecord)
        /// The frame is whole but its checksum or contents are wrong: skip it, later frames may be fine.
        case corrupt
        /// Not enough bytes for a whole frame (a crash during the append), or a header that cannot be right: nothing
        /// after this point in the segment can be trusted.
        case torn
        case end
    }

    /// Reads the next frame from `buffer`.
    static func readFrame(_ buffer: inout ByteBuffer) -> FrameOutcome {
        guard buffer.readableBytes > 0 else { return .end }
        guard buffer.readableBytes >= frameHeaderSize,
            let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self),
            let checksum = buffer.getInteger(at: buffer.readerIndex + 4, endianness: .little, as: UInt64.self)
        else { return .torn }
        guard length > 0, Int(length) <= maxPayload else { return .torn }
        guard buffer.readableBytes >= frameHeaderSize + Int(length) else { return .torn }
        buffer.moveReaderIndex(forwardBy: frameHeaderSize)
        guard var payload = buffer.readSlice(length: Int(length)) else { return .torn }
        guard ResultManifest.checksum(payload.readableBytesView) == checksum,
            let record = decode(&payload), payload.readableBytes == 0
        else { return .corrupt }
        return .record(record)
    }

    // MARK: - Payload

    private enum Kind: UInt8 {
        case created = 1
        case finished = 2
        case cancelled = 3
        case attached = 4
        case payloadsDeleted = 5
    }

    private enum OutcomeKind: UInt8 {
        case success = 1
        case failure = 2
        case cancelled = 3
    }

    private func encode(into buffer: inout ByteBuffer) -> Bool {
        switch self {
        case .created(let creation):
            buffer.writeInteger(Kind.created.rawValue)
            guard Self.writeString(creation.id, into: &buffer) else { return false }
            buffer.writeInteger(creation.jobID, endianness: .little)
            guard Self.writeString(creation.endpoint, into: &buffer) else { return false }
            buffer.writeInteger(creation.key.digest.high, endianness: .big)
            buffer.writeInteger(creation.key.digest.low, endianness: .big)
            guard Self.writeOptionalString(creation.ownerKeyID, into: &buffer) else { return false }
            buffer.writeInteger(creation.createdAt.secondsSinceEpoch.bitPattern, endianness: .little)
            guard Self.writeString(creation.cacheOutcome, into: &buffer),
                Self.writeString(creation.cacheStatus, into: &buffer)
            else { return false }
            // A trailer older records lack: the kept input (empty when none) and the tags.
            return Self.writeBytes(creation.input.map { JSONValue.object($0).serialized() } ?? [], into: &buffer)
                && Self.writeOptionalString(creation.tags, into: &buffer)
        case .attached(let attachment):
            buffer.writeInteger(Kind.attached.rawValue)
            buffer.writeInteger(attachment.jobID, endianness: .little)
            buffer.writeInteger(attachment.attachedAt.secondsSinceEpoch.bitPattern, endianness: .little)
            let handle = attachment.handle
            let flags =
                (attachment.storeResult ? 1 : 0) | (attachment.storeRejection ? 2 : 0) | (attachment.coalesce ? 4 : 0)
            buffer.writeInteger(UInt8(flags))
            return Self.writeString(attachment.modelID, into: &buffer)
                && Self.writeBytes(JSONValue.object(attachment.input).serialized(), into: &buffer)
                && Self.writeString(handle.origin, into: &buffer)
                && Self.writeString(handle.requestID, into: &buffer)
                && Self.writeString(handle.statusURL, into: &buffer)
                && Self.writeString(handle.responseURL, into: &buffer)
                && Self.writeString(handle.cancelURL, into: &buffer)
        case .finished(let jobID, let at, let outcome):
            buffer.writeInteger(Kind.finished.rawValue)
            buffer.writeInteger(jobID, endianness: .little)
            buffer.writeInteger(at.secondsSinceEpoch.bitPattern, endianness: .little)
            switch outcome {
            case .success(let result, let seconds):
                buffer.writeInteger(OutcomeKind.success.rawValue)
                buffer.writeInteger(UInt8(seconds == nil ? 0 : 1))
                if let seconds { buffer.writeInteger(seconds.bitPattern, endianness: .little) }
                return Self.writeBytes(result.serialized(), into: &buffer)
            case .failure(let error):
                buffer.writeInteger(OutcomeKind.failure.rawValue)
                buffer.writeInteger(UInt16(clamping: error.status), endianness: .little)
                return Self.writeOptionalString(error.errorType, into: &buffer)
                    && Self.writeString(error.message, into: &buffer)
                    && Self.writeBytes(error.body.serialized(), into: &buffer)
            case .cancelled:
                buffer.writeInteger(OutcomeKind.cancelled.rawValue)
                return true
            }
        case .cancelled(let id, let at), .payloadsDeleted(let id, let at):
            let kind: Kind = if case .cancelled = self { .cancelled } else { .payloadsDeleted }
            buffer.writeInteger(kind.rawValue)
            guard Self.writeString(id, into: &buffer) else { return false }
            buffer.writeInteger(at.secondsSinceEpoch.bitPattern, endianness: .little)
            return true
        }
    }

    private static func decode(_ buffer: inout ByteBuffer) -> RequestLogRecord? {
        guard let raw = buffer.readInteger(as: UInt8.self), let kind = Kind(rawValue: raw) else { return nil }
        switch kind {
        case .created:
            guard let id = readString(&buffer),
                let jobID = buffer.readInteger(endianness: .little, as: UInt64.self),
                let endpoint = readString(&buffer),
                let high = buffer.readInteger(endianness: .big, as: UInt64.self),
                let low = buffer.readInteger(endianness: .big, as: UInt64.self),
                let owner = readOptionalString(&buffer),
                let created = readDouble(&buffer),
                let cacheOutcome = readString(&buffer),
                let cacheStatus = readString(&buffer)
            else { return nil }
            var input: JSONObject?
            var tags: String?
            if buffer.readableBytes > 0 {
                guard let json = readBytes(&buffer), let tagText = readOptionalString(&buffer) else { return nil }
                if !json.isEmpty {
                    guard let object = (try? JSONValue(parsing: json, maxDepth: 512))?.objectValue else { return nil }
                    input = object
                }
                tags = tagText
            }
            return .created(
                Creation(
                    id: id,
                    jobID: jobID,
                    endpoint: endpoint,
                    key: RequestKey(digest: Digest128(high: high, low: low)),
                    ownerKeyID: owner,
                    createdAt: Timestamp(secondsSinceEpoch: created),
                    cacheOutcome: cacheOutcome,
                    cacheStatus: cacheStatus,
                    input: input,
                    tags: tags
                )
            )
        case .attached:
            guard let jobID = buffer.readInteger(endianness: .little, as: UInt64.self),
                let at = readDouble(&buffer),
                let flags = buffer.readInteger(as: UInt8.self),
                let modelID = readString(&buffer),
                let json = readBytes(&buffer),
                let input = (try? JSONValue(parsing: json, maxDepth: 512))?.objectValue,
                let origin = readString(&buffer),
                let requestID = readString(&buffer),
                let statusURL = readString(&buffer),
                let responseURL = readString(&buffer),
                let cancelURL = readString(&buffer)
            else { return nil }
            return .attached(
                Attachment(
                    jobID: jobID,
                    attachedAt: Timestamp(secondsSinceEpoch: at),
                    modelID: modelID,
                    input: input,
                    handle: UpstreamHandle(
                        origin: origin,
                        requestID: requestID,
                        statusURL: statusURL,
                        responseURL: responseURL,
                        cancelURL: cancelURL
                    ),
                    storeResult: flags & 1 != 0,
                    storeRejection: flags & 2 != 0,
                    coalesce: flags & 4 != 0
                )
            )
        case .finished:
            guard let jobID = buffer.readInteger(endianness: .little, as: UInt64.self),
                let at = readDouble(&buffer),
                let rawOutcome = buffer.readInteger(as: UInt8.self),
                let outcomeKind = OutcomeKind(rawValue: rawOutcome)
            else { return nil }
            let outcome: Outcome
            switch outcomeKind {
            case .success:
                guard let flags = buffer.readInteger(as: UInt8.self) else { return nil }
                var seconds: Double?
                if flags & 1 != 0 {
                    guard let value = readDouble(&buffer) else { return nil }
                    seconds = value
                }
                guard let json = readBytes(&buffer), let result = try? JSONValue(parsing: json, maxDepth: 512) else {
                    return nil
                }
                outcome = .success(result: result, inferenceSeconds: seconds)
            case .failure:
                guard let status = buffer.readInteger(endianness: .little, as: UInt16.self),
                    let type = readOptionalString(&buffer),
                    let message = readString(&buffer),
                    let json = readBytes(&buffer),
                    let body = try? JSONValue(parsing: json, maxDepth: 512)
                else { return nil }
                outcome = .failure(Self.error(status: Int(status), type: type, message: message, body: body))
            case .cancelled:
                outcome = .cancelled
            }
            return .finished(jobID: jobID, at: Timestamp(secondsSinceEpoch: at), outcome: outcome)
        case .cancelled, .payloadsDeleted:
            guard let id = readString(&buffer), let at = readDouble(&buffer) else { return nil }
            let time = Timestamp(secondsSinceEpoch: at)
            return kind == .cancelled ? .cancelled(requestID: id, at: time) : .payloadsDeleted(requestID: id, at: time)
        }
    }

    /// `FalError` is built only through its static members: the stored status and type pick the member that made it.
    /// A pairing no member makes (an origin's unusual error) comes back as an upstream error with the same message.
    public static func error(status: Int, type: String?, message: String, body: JSONValue) -> FalError {
        switch (status, type) {
        case (422, _):
            var issues: [FalError.ValidationIssue] = []
            for item in body["detail"]?.arrayValue ?? [] {
                guard let text = item["msg"]?.stringValue, let issueType = item["type"]?.stringValue,
                    let location = item["loc"]?.arrayValue
                else { continue }
                issues.append(
                    .init(
                        location: location.map { $0.stringValue ?? $0.serializedString },
                        message: text,
                        type: issueType
                    )
                )
            }
            return issues.isEmpty ? .badRequest(message, type: "validation_error") : .validation(issues)
        case (400, "invalid_json"):
            return .badRequest(message, type: "invalid_json")
        case (400, let type):
            return .badRequest(message, type: type ?? "bad_request")
        case (401, _): return .unauthorized(message)
        case (403, _): return .forbidden(message)
        case (404, _): return .notFound(message)
        case (429, _): return .rateLimited(message)
        case (500, "internal_error"): return .internalError(message)
        case (502, let type): return .badGateway(message, type: type ?? "upstream_error")
        case (503, let type): return .unavailable(message, type: type ?? "service_unavailable")
        case (507, _): return .insufficientStorage(message)
        default: return .upstreamFailed(message)
        }
    }

    // MARK: - Primitives

    private static let absent = UInt32.max

    private static func writeBytes(_ bytes: [UInt8], into buffer: inout ByteBuffer) -> Bool {
        guard bytes.count < Int(absent) else { return false }
        buffer.writeInteger(UInt32(bytes.count), endianness: .little)
        buffer.writeBytes(bytes)
        return true
    }

    private static func writeString(_ text: String, into buffer: inout ByteBuffer) -> Bool {
        let count = text.utf8.count
        guard count < Int(absent) else { return false }
        buffer.writeInteger(UInt32(count), endianness: .little)
        buffer.writeString(text)
        return true
    }

    private static func writeOptionalString(_ text: String?, into buffer: inout ByteBuffer) -> Bool {
        guard let text else {
            buffer.writeInteger(absent, endianness: .little)
            return true
        }
        return writeString(text, into: &buffer)
    }

    private static func readBytes(_ buffer: inout ByteBuffer) -> [UInt8]? {
        guard let length = buffer.readInteger(endianness: .little, as: UInt32.self), length != absent else {
            return nil
        }
        return buffer.readBytes(length: Int(length))
    }

    private static func readString(_ buffer: inout ByteBuffer) -> String? {
        guard let length = buffer.readInteger(endianness: .little, as: UInt32.self), length != absent else {
            return nil
        }
        return buffer.readString(length: Int(length))
    }

    /// `.some(nil)` for a stored absence, nil for a malformed field.
    private static func readOptionalString(_ buffer: inout ByteBuffer) -> String?? {
        guard let length = buffer.readInteger(endianness: .little, as: UInt32.self) else { return nil }
        if length == absent { return .some(nil) }
        guard let text = buffer.readString(length: Int(length)) else { return nil }
        return .some(text)
    }

    private static func readDouble(_ buffer: inout ByteBuffer) -> Double? {
        buffer.readInteger(endianness: .little, as: UInt64.self).map(Double.init(bitPattern:))
    }
}
