public import RelayCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a blob-store or LZ4 operation failed: a struct over a private code (STYLE.md rule 7), so cases can be added.
///
/// Equality compares the kind and its identity (digest, errno), not the human-readable detail, so tests and
/// callers can write `#expect(throws: StoreError.collision(digest))` or `error == .diskFull`.
public struct StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case diskFull
        case io(errno: Int32)
        case corrupt(Digest128?)
        case collision(Digest128)
        case shutdown
        case cancelled
    }

    private let code: Code
    /// Path, operation or decoder message; for the description only.
    private let detail: String

    private init(_ code: Code, detail: String = "") {
        self.code = code
        self.detail = detail
    }

    /// The filesystem is out of space or quota (ENOSPC, EDQUOT). Nothing half-written was left in place.
    public static let diskFull = StoreError(.diskFull)

    /// A system call failed with `errno` on `path`.
    public static func io(path: String, errno: Int32) -> StoreError {
        StoreError(.io(errno: errno), detail: path)
    }

    /// The stored bytes do not decode, or do not hash to their digest (a flipped bit, a truncated frame).
    /// `nil` when the codec is used without a store, where no digest is known.
    public static func corrupt(_ digest: Digest128?) -> StoreError {
        StoreError(.corrupt(digest))
    }

    /// The digest's file already holds other bytes than the ones being stored: a genuine XXH3 collision or on-disk
    /// corruption. The existing file is never overwritten; the caller decides (skip caching, or `remove` and retry
    /// when `read` reports the blob corrupt).
    public static func collision(_ digest: Digest128) -> StoreError {
        StoreError(.collision(digest))
    }

    /// The store's thread pool is not running (shut down, or never started).
    public static let shutdown = StoreError(.shutdown)

    /// The calling task was cancelled before the blocking work started; nothing was written.
    public static let cancelled = StoreError(.cancelled)

    public var isDiskFull: Bool { code == .diskFull }

    public var isCorrupt: Bool {
        if case .corrupt = code { return true }
        return false
    }

    public var isCollision: Bool {
        if case .collision = code { return true }
        return false
    }

    /// The blob the error is about, where one is known.
    public var digest: Digest128? {
        switch code {
        case .corrupt(let digest): digest
        case .collision(let digest): digest
        case .diskFull, .io, .shutdown, .cancelled: nil
        }
    }

    /// The failing system call's errno, for `.io` errors.
    public var errno: Int32? {
        if case .io(let errno) = code { return errno }
        return nil
    }

    public var description: String {
        switch code {
        case .diskFull:
            detail.isEmpty ? "StoreError.diskFull" : "StoreError.diskFull: \(detail)"
        case .io(let errno):
            "StoreError.io: \(detail): \(Self.message(forErrno: errno)) (errno \(errno))"
        case .corrupt(let digest):
            "StoreError.corrupt(\(digest.map(\.hex) ?? "frame"))" + (detail.isEmpty ? "" : ": \(detail)")
        case .collision(let digest):
            "StoreError.collision(\(digest.hex)): the stored file holds other bytes (hash collision or disk corruption)"
        case .shutdown:
            "StoreError.shutdown: the blob store's thread pool is not running"
        case .cancelled:
            "StoreError.cancelled"
        }
    }

    public static func == (lhs: StoreError, rhs: StoreError) -> Bool { lhs.code == rhs.code }

    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    // MARK: - Internal constructors that keep the detail

    /// A failed system call, with ENOSPC and EDQUOT folded into `.diskFull`.
    static func posix(_ operation: String, path: String, errno: Int32) -> StoreError {
        if errno == ENOSPC || errno == EDQUOT {
            return StoreError(.diskFull, detail: "\(operation)(\(path))")
        }
        return StoreError(.io(errno: errno), detail: "\(operation)(\(path))")
    }

    static func corrupt(_ digest: Digest128?, reason: String) -> StoreError {
        StoreError(.corrupt(digest), detail: reason)
    }

    /// The same error about a known blob (the codec does not know which blob it decodes).
    func about(_ digest: Digest128) -> StoreError {
        if case .corrupt = code { return StoreError(.corrupt(digest), detail: detail) }
        return self
    }

    private static func message(forErrno errno: Int32) -> String {
        guard let text = strerror(errno) else { return "unknown error" }
        return String(cString: text)
    }
}
