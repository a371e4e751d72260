internal import CXXHash

/// XXH3-128 keyed with the deployment's secret: request keys and blob digests are unguessable from content alone.
///
/// The only type that touches libxxhash (STYLE.md rule 9). Stateless between calls, so it is freely shared.
public struct KeyedHasher: Sendable {
    /// libxxhash wants a secret of at least XXH3_SECRET_SIZE_MIN (136) bytes; we keep 192.
    public static let secretSize = 192

    private let secret: [UInt8]

    /// - Precondition: `secret.count >= KeyedHasher.secretSize` (the data directory's secret file is checked before this).
    public init(secret: [UInt8]) {
        precondition(secret.count >= Self.secretSize, "XXH3 secret too short")
        self.secret = secret
    }

    public func digest(_ bytes: UnsafeRawBufferPointer) -> Digest128 {
        secret.withUnsafeBytes { key in
            let value = XXH3_128bits_withSecret(bytes.baseAddress, bytes.count, key.baseAddress, key.count)
            return Digest128(high: value.high64, low: value.low64)
        }
    }

    public func digest(_ bytes: [UInt8]) -> Digest128 {
        bytes.withUnsafeBytes { digest($0) }
    }

    /// Digest of several byte strings as one stream, each prefixed by its length so that field boundaries count
    /// ("ab","c" ≠ "a","bc").
    public func digest(fields: [[UInt8]]) -> Digest128 {
        secret.withUnsafeBytes { key -> Digest128 in
            guard let state = XXH3_createState() else {
                // Allocation failure of a few hundred bytes: nothing sensible to do but stop.
                fatalError("XXH3_createState failed: out of memory")
            }
            defer { XXH3_freeState(state) }
            XXH3_128bits_reset_withSecret(state, key.baseAddress, key.count)
            for field in fields {
                var length = UInt64(field.count).littleEndian
                withUnsafeBytes(of: &length) { _ = XXH3_128bits_update(state, $0.baseAddress, $0.count) }
                field.withUnsafeBytes { _ = XXH3_128bits_update(state, $0.baseAddress, $0.count) }
            }
            let value = XXH3_128bits_digest(state)
            return Digest128(high: value.high64, low: value.low64)
        }
    }
}

extension KeyedHasher {
    /// The same digest as `digest(_:)`, fed in pieces: for bytes that never sit in memory at once (uploads streamed to
    /// disk). Owns its XXH3 state; one owner at a time.
    public final class Stream {
        private let state: OpaquePointer

        public init(_ hasher: KeyedHasher) {
            guard let state = XXH3_createState() else {
                fatalError("XXH3_createState failed: out of memory")
            }
            self.state = state
            hasher.secret.withUnsafeBytes { key in
                _ = XXH3_128bits_reset_withSecret(state, key.baseAddress, key.count)
            }
        }

        deinit { XXH3_freeState(state) }

        public func update(_ bytes: UnsafeRawBufferPointer) {
            _ = XXH3_128bits_update(state, bytes.baseAddress, bytes.count)
        }

        /// The digest of everything fed so far (feeding may go on).
        public func digest() -> Digest128 {
            let value = XXH3_128bits_digest(state)
            return Digest128(high: value.high64, low: value.low64)
        }
    }
}
