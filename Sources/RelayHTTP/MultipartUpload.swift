import RelayCore
import RelayStore

/// The bounds of multipart uploads: bytes per part and in all, and how long an unfinished one is kept.
public struct MultipartUploadLimits: Sendable, Hashable {
    /// Largest part (413 beyond). fal's clients send 10 MiB parts.
    public var partBytes: Int
    /// Largest assembled file (413 for the part that would pass it).
    public var totalBytes: Int
    /// An upload with no part begun for this long is abandoned: its parts are removed.
    public var idleSeconds: Double
    /// No upload is kept longer than this from its creation, however active.
    public var lifetimeSeconds: Double

    public init(
        partBytes: Int = 100 * 1024 * 1024,
        totalBytes: Int = 1024 * 1024 * 1024,
        idleSeconds: Double = 3600,
        lifetimeSeconds: Double = 24 * 3600
    ) {
        self.partBytes = partBytes
        self.totalBytes = totalBytes
        self.idleSeconds = idleSeconds
        self.lifetimeSeconds = lifetimeSeconds
    }
}

/// One multipart upload, as a state machine: parts received (the last write of a part number wins), completion
/// checked against what the client lists, and abandonment by deadline. Pure: `MultipartUploadTable` holds it, the
/// handler and the upload responder perform the file work it asks for; tested with explicit times, no clock.
struct MultipartUpload {
    /// A part on disk.
    struct Part: Hashable {
        var path: String
        var etag: String
        var size: Int
    }

    /// The stored result, kept so that a retried completion gets the same answer.
    struct Completion: Hashable {
        var digest: Digest128
        var size: Int
    }

    enum Phase: Hashable {
        case open
        /// The parts are being assembled: no part may change meanwhile.
        case completing
        case completed(Completion)
    }

    /// What to do with a part file just written.
    enum PartOutcome: Equatable {
        /// Keep it; remove the part file it replaces, if any.
        case accepted(replaced: String?)
        /// Remove it and answer the error.
        case rejected(FalError)
    }

    /// What a completion request leads to.
    enum CompletionPlan: Equatable {
        /// Copy these files in this order into the store (parts the client did not list are left out, and removed with
        /// the others once it is stored).
        case assemble([String])
        /// Already done: answer as before.
        case done(Completion)
        case rejected(FalError)
    }

    static let partNumbers = 1...10_000

    /// The capability in part and completion URLs.
    let id: Digest128
    /// The id of the stable file URL (`/files/uploads/<fileID>/<name>`), recorded as an alias once complete.
    let fileID: Digest128
    let fileName: String
    let mediaType: MediaType
    /// The key that created it: parts and completion sent with credentials must come from the same key.
    let ownerKeyID: String?
    let limits: MultipartUploadLimits
    let created: Timestamp
    private(set) var lastActivity: Timestamp
    private(set) var parts: [Int: Part] = [:]
    private(set) var phase = Phase.open

    init(
        id: Digest128,
        fileID: Digest128,
        fileName: String,
        mediaType: MediaType,
        ownerKeyID: String?,
        limits: MultipartUploadLimits,
        now: Timestamp
    ) {
        self.id = id
        self.fileID = fileID
        self.fileName = fileName
        self.mediaType = mediaType
        self.ownerKeyID = ownerKeyID
        self.limits = limits
        self.created = now
        self.lastActivity = now
    }

    /// Bytes held by the parts received so far.
    var storedBytes: Int { parts.values.reduce(0) { $0 + $1.size } }

    /// When it is abandoned if nothing more happens.
    var deadline: Timestamp {
        Timestamp(
            secondsSinceEpoch: min(
                lastActivity.secondsSinceEpoch + limits.idleSeconds,
                created.secondsSinceEpoch + limits.lifetimeSeconds
            )
        )
    }

    /// Every part file it holds.
    var partPaths: [String] { parts.values.map(\.path) }

    /// A part's body is about to be received: the most bytes it may have, or why it may not be sent. The total is
    /// checked once the part is stored (`partStored`): refusing then, after its body was read, gives every client the
    /// 413, where a refusal before the body reaches a client still sending it as a reset connection.
    mutating func beginPart(_ number: Int, now: Timestamp) -> Result<Int, FalError> {
        guard Self.partNumbers.contains(number) else {
            return .failure(
                .badRequest(
                    "Part numbers are integers from 1 to \(Self.partNumbers.upperBound)",
                    type: "invalid_part_number"
                )
            )
        }
        guard phase == .open else { return .failure(Self.notOpen) }
        lastActivity = max(lastActivity, now)
        return .success(limits.partBytes)
    }

    /// A part's body is on disk (`part.path`, fsynced). The total is checked here, once the part's size is known
    /// (parts sent at the same time included): 413 when the parts would pass `limits.totalBytes`.
    mutating func partStored(_ number: Int, part: Part, now: Timestamp) -> PartOutcome {
        guard Self.partNumbers.contains(number) else { return .rejected(.badRequest("Invalid part number")) }
        guard phase == .open else { return .rejected(Self.notOpen) }
        let previous = parts[number]
        guard storedBytes - (previous?.size ?? 0) + part.size <= limits.totalBytes else {
            return .rejected(tooLarge)
        }
        parts[number] = part
        lastActivity = max(lastActivity, now)
        return .accepted(replaced: previous.map(\.path).flatMap { $0 == part.path ? nil : $0 })
    }

    /// The client asks to complete with these parts (`etag` as the part's answer gave it). In any order: fal's Python
    /// client lists them as they finished. Every listed part must be here with that etag.
    mutating func complete(_ listed: [(number: Int, etag: String)], now: Timestamp) -> CompletionPlan {
        switch phase {
        case .completed(let completion): return .done(completion)
        case .completing:
            return .rejected(
                .unavailable("This upload is being completed; retry in a moment", type: "upload_completing")
            )
        case .open: break
        }
        guard !listed.isEmpty else {
            return .rejected(.badRequest("A completion lists at least one part", type: "invalid_parts"))
        }
        var seen: Set<Int> = []
        for (number, etag) in listed {
            guard seen.insert(number).inserted else {
                return .rejected(.badRequest("Part \(number) is listed twice", type: "invalid_parts"))
            }
            guard let part = parts[number] else {
                return .rejected(.badRequest("Part \(number) was not uploaded", type: "invalid_part"))
            }
            guard Self.sameTag(part.etag, etag) else {
                return .rejected(
                    .badRequest(
                        "Part \(number)'s etag does not match the part stored (it was sent again since?)",
                        type: "invalid_part"
                    )
                )
            }
        }
        let ordered = seen.sorted()
        phase = .completing
        lastActivity = max(lastActivity, now)
        return .assemble(ordered.compactMap { parts[$0]?.path })
    }

    /// The assembled file is stored: returns the part files to remove.
    mutating func assembled(_ completion: Completion, now: Timestamp) -> [String] {
        let paths = partPaths
        parts = [:]
        phase = .completed(completion)
        lastActivity = max(lastActivity, now)
        return paths
    }

    /// Assembly failed (a full disk): the parts stay, and the client may complete again.
    mutating func assemblyFailed() {
        if phase == .completing { phase = .open }
    }

    /// Past its deadline and not being assembled: drop it (and its part files).
    func isAbandoned(now: Timestamp) -> Bool {
        phase != .completing && now >= deadline
    }

    /// `"abc"`, `abc` and `W/"abc"` name the same tag: clients pass back what they were given, quoted or not.
    static func sameTag(_ stored: String, _ given: String) -> Bool {
        bare(stored) == bare(given)
    }

    private static func bare(_ tag: String) -> Substring {
        var text = tag[...]
        if text.hasPrefix("W/") { text = text.dropFirst(2) }
        if text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") { text = text.dropFirst().dropLast() }
        return text
    }

    private var tooLarge: FalError { .payloadTooLarge(limit: limits.totalBytes) }

    private static let notOpen = FalError.badRequest(
        "This upload is already completed; start a new one",
        type: "upload_already_completed"
    )
}
