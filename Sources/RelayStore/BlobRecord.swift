public import RelayCore

/// One stored blob's identity and size.
public struct BlobRecord: Sendable, Hashable {
    /// Keyed XXH3-128 of the uncompressed content.
    public let digest: Digest128
    /// Content bytes, uncompressed: what a client downloads and what `Content-Length` says.
    public let size: Int
    /// Bytes on disk: the LZ4 frame for a compressed blob, otherwise equal to `size`. What the byte budget counts.
    public let storedSize: Int
    public let mediaType: MediaType

    public init(digest: Digest128, size: Int, storedSize: Int, mediaType: MediaType) {
        self.digest = digest
        self.size = size
        self.storedSize = storedSize
        self.mediaType = mediaType
    }

    /// The name under which the relay serves the blob: `/files/<fileName>`.
    public var fileName: String { "\(digest.hex).\(mediaType.fileExtension)" }

    /// Stored as an LZ4 frame (the store compresses only when that makes the file smaller), so it cannot be sent
    /// with sendfile.
    public var isCompressed: Bool { storedSize < size }
}
