public import RelayCore

/// One file found by `BlobStore.scan()`: what expiry and garbage collection need without reading content.
public struct BlobEntry: Sendable, Hashable {
    public let digest: Digest128
    /// Bytes on disk.
    public let storedSize: Int
    /// The file is an LZ4 frame (`<digest>.lz4`).
    public let isCompressed: Bool
    /// Last modification, seconds since 1970: when the blob was stored.
    public let modified: Int

    public init(digest: Digest128, storedSize: Int, isCompressed: Bool, modified: Int) {
        self.digest = digest
        self.storedSize = storedSize
        self.isCompressed = isCompressed
        self.modified = modified
    }
}
