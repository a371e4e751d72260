/// A 128-bit XXH3 digest: the identity of a RequestKey or of stored bytes, written as 32 lowercase hex digits.
public struct Digest128: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses exactly 32 hex digits (either case); anything else is nil, so a path segment can't smuggle bytes.
    public init?<S: StringProtocol>(hex: S) {
        let utf8 = hex.utf8
        guard utf8.count == 32 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        var index = 0
        for byte in utf8 {
            guard let nibble = Hex.value(byte) else { return nil }
            if index < 16 {
                high = high << 4 | UInt64(nibble)
            } else {
                low = low << 4 | UInt64(nibble)
            }
            index += 1
        }
        self.init(high: high, low: low)
    }

    /// 32 lowercase hex digits, high half first (the canonical XXH128 display order).
    public var hex: String {
        String(unsafeUninitializedCapacity: 32) { buffer in
            Self.writeHex(high, into: buffer, at: 0)
            Self.writeHex(low, into: buffer, at: 16)
            return 32
        }
    }

    public var description: String { hex }

    /// The 16 bytes, big-endian, high half first.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for index in 0..<8 {
            out[index] = UInt8(truncatingIfNeeded: high >> UInt64(56 - 8 * index))
            out[8 + index] = UInt8(truncatingIfNeeded: low >> UInt64(56 - 8 * index))
        }
        return out
    }

    public static func < (lhs: Digest128, rhs: Digest128) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    private static func writeHex(_ value: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        for index in 0..<16 {
            let nibble = Int((value >> UInt64(60 - 4 * index)) & 0xF)
            buffer[offset + index] = Hex.digit(UInt8(nibble))
        }
    }
}
