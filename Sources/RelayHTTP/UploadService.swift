public import NIOPosix
public import RelayCore
public import RelayStore
import Synchronization

/// fal's storage API on the relay (PROTOCOL.md §7): where uploads go, what URLs they get, and how those URLs are
/// recognised again in request inputs.
///
/// Two flows, both ending in the content-addressed blob store (same bytes → same blob → same `/files` URL):
/// - v3: `POST /storage/auth/token` → a Bearer token; `POST /files/upload` with the bytes → `access_url`, which is
///   the content-addressed `/files/<digest>.<ext>` itself (the bytes are known when it is answered).
/// - initiate: `POST /storage/upload/initiate` → `upload_url` (a signed, expiring `PUT /storage/upload/<id>/<token>`)
///   and `file_url` (`/files/uploads/<id>/<name>`, fixed before the bytes exist). Once the PUT is done an
///   `UploadAliases` record maps the id to the digest, and the file URL serves that blob — served, not redirected:
///   fal's async Python client does not follow redirects (§9.5) and neither do many HTTP libraries by default; the
///   response is the blob's own (its `ETag` is the digest), so caches still see one object.
/// - multipart, for files too big for one request (both of fal's flows: `MultipartUploadStep`): parts streamed into
///   `tmp/`, assembled in order into one blob at completion, served by the upload's stable URL like an initiated
///   upload; abandoned ones removed after `multipartLimits.idleSeconds`.
public final class UploadService: Sendable {
    public let store: BlobStore
    public let aliases: UploadAliases
    /// Largest upload body (413 beyond); fal's single-request limit is 100 MiB.
    public let maxBytes: Int
    /// Lifetime of storage tokens and signed PUT URLs (the authenticator caps tokens at 10...3600 s).
    public let tokenSeconds: Int
    /// Bounds of multipart uploads (per part, in all, and how long an unfinished one is kept).
    public let multipartLimits: MultipartUploadLimits
    /// Multipart uploads in progress.
    let multipart = MultipartUploadTable()
    /// Where their part files are written, sealed and assembled.
    let parts: UploadParts
    private let publicOrigin: @Sendable () -> String
    private let addresses = Mutex<(hostNames: Set<String>, ports: Set<Int>)?>(nil)

    /// The token scope of v3 storage tokens (an app name no endpoint has).
    static let storageScope = "fal-cdn-v3"

    public init(
        store: BlobStore,
        aliases: UploadAliases,
        maxBytes: Int = 100 * 1024 * 1024,
        tokenSeconds: Int = 3600,
        multipartLimits: MultipartUploadLimits = MultipartUploadLimits(),
        threadPool: NIOThreadPool = .singleton,
        publicOrigin: @escaping @Sendable () -> String
    ) {
        self.store = store
        // A part is one request body: never larger than the single-upload limit (`--max-upload-bytes`).
        var limits = multipartLimits
        limits.partBytes = min(limits.partBytes, maxBytes)
        self.multipartLimits = limits
        self.parts = UploadParts(store: store, threadPool: threadPool)
        self.aliases = aliases
        self.maxBytes = maxBytes
        self.tokenSeconds = min(max(tokenSeconds, 10), 3600)
        self.publicOrigin = publicOrigin
    }

    /// Tells the service which names and ports reach this relay (known once the listeners are bound).
    public func setRelayAddresses(hostNames: Set<String>, ports: Set<Int>) {
        addresses.withLock { $0 = (hostNames, ports) }
    }

    /// The canonical-form rule for this relay's media URLs; nil until `setRelayAddresses`.
    public var mediaURLs: RelayMediaURLs? {
        guard let (names, ports) = addresses.withLock({ $0 }) else { return nil }
        let aliases = self.aliases
        return RelayMediaURLs(hostNames: names, ports: ports) { id in aliases.alias(id)?.digest }
    }

    /// The content-addressed URL of a stored blob.
    public func accessURL(digest: Digest128, mediaType: MediaType) -> String {
        "\(publicOrigin())/files/\(digest.hex).\(mediaType.fileExtension)"
    }

    /// An initiated upload's stable URL.
    public func fileURL(id: Digest128, fileName: String) -> String {
        "\(publicOrigin())/files/uploads/\(id.hex)/\(Self.safeFileName(fileName))"
    }

    func uploadURL(id: Digest128, token: String) -> String {
        "\(publicOrigin())/storage/upload/\(id.hex)/\(token)"
    }

    var baseURL: String { publicOrigin() }

    /// The signed base URL of a multipart upload made by `initiate-multipart` (its parts and completion go below it).
    func signedMultipartURL(id: Digest128, token: String) -> String {
        "\(publicOrigin())/storage/upload/multipart/\(id.hex)/\(token)"
    }

    /// The token scope of one `initiate-multipart` upload's signed URL.
    static func multipartScope(_ id: Digest128) -> String { "multipart-\(id.hex)" }

    /// The token scope of one initiated upload's PUT URL.
    static func uploadScope(_ id: Digest128) -> String { "upload-\(id.hex)" }

    /// A new upload id: 128 random bits (the file URL is a capability, like a media URL).
    static func makeUploadID() -> Digest128 {
        var generator = SystemRandomNumberGenerator()
        return Digest128(high: generator.next(), low: generator.next())
    }

    /// The body of `POST /storage/auth/token`: `expires_at` with an explicit UTC offset (a naive time breaks the Python
    /// client's comparison, and `Z` needs Python 3.11).
    static func storageTokenBody(token: String, expiresAt: Timestamp, baseURL: String) -> JSONValue {
        [
            "token": .string(token),
            "token_type": "Bearer",
            "base_url": .string(baseURL),
            "expires_at": .string(expiresAt.iso8601),
        ]
    }

    /// When a token issued now for `seconds` expires, rounded down so it never says later than the token's own expiry.
    static func expiry(now: Timestamp, seconds: Int) -> Timestamp {
        Timestamp(secondsSinceEpoch: now.secondsSinceEpoch.rounded(.down) + Double(min(max(seconds, 10), 3600)))
    }

    /// A file name safe in a URL path: letters, digits, `.`, `-`, `_` (others become `_`), no leading dot, ≤ 100.
    static func safeFileName(_ name: String) -> String {
        var safe = String(
            name.unicodeScalars.prefix(100).map { scalar -> Character in
                let allowed =
                    (scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)))
                    || scalar == "." || scalar == "-" || scalar == "_"
                return allowed ? Character(scalar) : "_"
            }
        )
        while safe.hasPrefix(".") { safe.removeFirst() }
        return safe.isEmpty ? "upload.bin" : safe
    }
}
