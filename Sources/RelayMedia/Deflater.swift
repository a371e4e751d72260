internal import CZlib

/// One zlib deflate stream; the only type in RelayMedia that touches zlib (STYLE rule 9).
///
/// The `z_stream` lives on the heap because zlib keeps a back-pointer to it and checks it on
/// every call, so it must never move. Not thread-safe: make one per encode.
final class Deflater {
    private let stream: UnsafeMutablePointer<z_stream>

    /// - Parameter level: zlib level, clamped to -1 (default) ... 9.
    init(level: Int32) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let status = deflateInit_(
            stream,
            min(max(level, -1), 9),
            ZLIB_VERSION,
            Int32(MemoryLayout<z_stream>.size)
        )
        // Only an allocation failure or a zlib/header mismatch can get here: not recoverable.
        precondition(status == Z_OK, "deflateInit_ failed with \(status)")
    }

    deinit {
        deflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Compresses `input` into one complete zlib stream (header, deflate data, Adler-32), then
    /// resets so the next call starts a fresh stream with the same settings.
    func compress(_ input: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(input.count <= Int(UInt32.max), "input too large for one deflate call")
        // deflateBound guarantees deflate(Z_FINISH) completes in a single call.
        let bound = Int(deflateBound(stream, uLong(input.count)))
        let output = [UInt8](unsafeUninitializedCapacity: bound) { buffer, initialized in
            stream.pointee.next_in = UnsafeMutablePointer(
                mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self)
            )
            stream.pointee.avail_in = uInt(input.count)
            stream.pointee.next_out = buffer.baseAddress
            stream.pointee.avail_out = uInt(bound)
            let status = deflate(stream, Z_FINISH)
            precondition(status == Z_STREAM_END, "deflate did not finish: \(status)")
            initialized = bound - Int(stream.pointee.avail_out)
        }
        stream.pointee.next_in = nil
        stream.pointee.next_out = nil
        let status = deflateReset(stream)
        precondition(status == Z_OK, "deflateReset failed with \(status)")
        return output
    }

    /// Compresses a byte array; see `compress(_:)`.
    func compress(_ input: [UInt8]) -> [UInt8] {
        input.withUnsafeBytes { compress($0) }
    }

    /// The CRC-32 (ISO-HDLC, as PNG uses) of `bytes`, continuing from `crc` (0 to start).
    static func crc32(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        var value = uLong(crc)
        var offset = 0
        // crc32's length is a 32-bit uInt: feed very large inputs in slices.
        while offset < bytes.count {
            let length = min(bytes.count - offset, 1 << 30)
            value = CZlib.crc32(
                value,
                (base + offset).assumingMemoryBound(to: Bytef.self),
                uInt(length)
            )
            offset += length
        }
        return UInt32(truncatingIfNeeded: value)
    }

    /// The CRC-32 of a byte array, continuing from `crc`.
    static func crc32(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { crc32($0, continuing: crc) }
    }
}
