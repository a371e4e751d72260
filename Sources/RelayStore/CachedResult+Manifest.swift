import NIOCore
public import RelayCore

extension CachedResult {
    /// This result as a result manifest's bytes (the format of `results/` on disk): what a fleet shares through its
    /// database, so that a node reads another's result with the same checks (key, checksum) as its own files. nil for
    /// an outcome the format cannot hold.
    public func manifestBytes(key: RequestKey) -> [UInt8]? {
        let digests: [Digest128]
        if case .success(let json, _) = outcome {
            digests = ResultIndex.referencedDigests(in: json)
        } else {
            digests = []
        }
        guard var buffer = ResultManifest(key: key, result: self, digests: digests).encoded() else { return nil }
        return buffer.readBytes(length: buffer.readableBytes)
    }

    /// A result read back from `manifestBytes(key:)`; nil when the bytes are damaged or belong to another key.
    public init?(manifestBytes: [UInt8], key: RequestKey) {
        guard let manifest = try? ResultManifest.decode(ByteBuffer(bytes: manifestBytes), expectedKey: key) else {
            return nil
        }
        self = manifest.result
    }

    /// The blobs this result's media URLs name (`/files/<digest>.<ext>`).
    public var referencedDigests: [Digest128] {
        guard case .success(let json, _) = outcome else { return [] }
        return ResultIndex.referencedDigests(in: json)
    }
}
