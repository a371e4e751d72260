/// What the URL extension and Content-Type of a stored blob are, and whether it is stored LZ4-framed.
///
/// The digest names the bytes and the media type names how they are served: the same bytes stored as `.wav` and as
/// `.bin` are one file on disk. Types from the known table carry one canonical extension (`jpg`, never `jpeg`) so
/// that one blob has one URL per type.
public struct MediaType: Sendable, Hashable, CustomStringConvertible {
    /// The `Content-Type` header value, e.g. `image/png` or `text/plain; charset=utf-8`.
    public let contentType: String
    /// The URL extension without the dot, e.g. `png`.
    public let fileExtension: String

    public init(contentType: String, fileExtension: String) {
        self.contentType = contentType
        self.fileExtension = fileExtension
    }

    /// The content type without parameters, lowercased: `text/plain; charset=utf-8` → `text/plain`.
    public var essence: String { Self.essence(of: contentType) }

    /// Whether LZ4 is worth trying: uncompressed formats (PCM audio, JSON, text, bitmaps). Formats that carry their
    /// own compression (PNG, JPEG, WebP, GIF, MP4, WebM, MP3, …) are stored raw so they can be served with sendfile.
    public var isCompressible: Bool {
        let essence = self.essence
        if essence.hasPrefix("text/") { return true }
        if essence.hasSuffix("+json") || essence.hasSuffix("+xml") { return true }
        return Self.compressibleEssences.contains(essence)
    }

    public var description: String { "\(contentType) (.\(fileExtension))" }

    // MARK: - Known types

    public static let png = MediaType(contentType: "image/png", fileExtension: "png")
    public static let apng = MediaType(contentType: "image/apng", fileExtension: "apng")
    public static let jpeg = MediaType(contentType: "image/jpeg", fileExtension: "jpg")
    public static let webp = MediaType(contentType: "image/webp", fileExtension: "webp")
    public static let gif = MediaType(contentType: "image/gif", fileExtension: "gif")
    public static let bmp = MediaType(contentType: "image/bmp", fileExtension: "bmp")
    public static let ppm = MediaType(contentType: "image/x-portable-pixmap", fileExtension: "ppm")
    public static let svg = MediaType(contentType: "image/svg+xml", fileExtension: "svg")
    public static let mp4 = MediaType(contentType: "video/mp4", fileExtension: "mp4")
    public static let webm = MediaType(contentType: "video/webm", fileExtension: "webm")
    public static let wav = MediaType(contentType: "audio/wav", fileExtension: "wav")
    public static let mp3 = MediaType(contentType: "audio/mpeg", fileExtension: "mp3")
    public static let flac = MediaType(contentType: "audio/flac", fileExtension: "flac")
    public static let ogg = MediaType(contentType: "audio/ogg", fileExtension: "ogg")
    public static let json = MediaType(contentType: "application/json", fileExtension: "json")
    public static let text = MediaType(contentType: "text/plain; charset=utf-8", fileExtension: "txt")
    public static let octetStream = MediaType(contentType: "application/octet-stream", fileExtension: "bin")

    /// Every type of the known table, in a stable order.
    public static let known: [MediaType] = [
        .png, .apng, .jpeg, .webp, .gif, .bmp, .ppm, .svg, .mp4, .webm, .wav, .mp3, .flac, .ogg, .json, .text,
        .octetStream,
    ]

    /// The known type for a URL extension (case-insensitive, a leading dot allowed); `jpeg` gives `.jpeg` (`jpg`).
    /// `nil` for an extension outside the table, which the file server answers with 404.
    public static func forExtension(_ ext: some StringProtocol) -> MediaType? {
        var key = ext.lowercased()
        if key.hasPrefix(".") { key.removeFirst() }
        return byExtension[key]
    }

    /// The best known type for a `Content-Type` value (parameters and case ignored): aliases such as `audio/x-wav`
    /// or `image/jpg` map to their canonical type, other `text/*` to `.text`, anything else to `.octetStream`.
    public static func forContentType(_ type: some StringProtocol) -> MediaType {
        let essence = Self.essence(of: type)
        if let known = byEssence[essence] { return known }
        if essence.hasSuffix("+json") { return .json }
        if essence.hasPrefix("text/") { return .text }
        return .octetStream
    }

    // MARK: - Tables

    private static let compressibleEssences: Set<String> = [
        "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/l16", "audio/pcm",
        "application/json", "application/x-ndjson", "application/xml", "application/javascript",
        "image/bmp", "image/x-ms-bmp", "image/x-portable-pixmap", "image/x-portable-anymap", "image/svg+xml",
    ]

    private static let byExtension: [String: MediaType] = {
        var table: [String: MediaType] = [:]
        for type in known { table[type.fileExtension] = type }
        table["jpeg"] = .jpeg
        table["text"] = .text
        return table
    }()

    private static let byEssence: [String: MediaType] = {
        var table: [String: MediaType] = [:]
        for type in known { table[type.essence] = type }
        let aliases: [String: MediaType] = [
            "image/jpg": .jpeg, "image/pjpeg": .jpeg,
            "image/x-ms-bmp": .bmp,
            "image/x-portable-anymap": .ppm,
            "audio/x-wav": .wav, "audio/wave": .wav, "audio/vnd.wave": .wav, "audio/x-pn-wav": .wav,
            "audio/mp3": .mp3, "audio/x-mpeg": .mp3, "audio/mpeg3": .mp3,
            "audio/x-flac": .flac,
            "video/x-mp4": .mp4,
            "text/json": .json,
        ]
        table.merge(aliases) { existing, _ in existing }
        return table
    }()

    private static func essence(of type: some StringProtocol) -> String {
        let base = type.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return String(base.filter { $0 != " " && $0 != "\t" }).lowercased()
    }
}
