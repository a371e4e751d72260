/// Standard base64 (RFC 4648, with padding), for data URIs; no Foundation on the way.
public enum Base64 {
    private static let alphabet: [UInt8] = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8
    )

    public static func encode(_ bytes: [UInt8]) -> String {
        let outputLength = (bytes.count + 2) / 3 * 4
        return String(unsafeUninitializedCapacity: outputLength) { out in
            var o = 0
            var i = 0
            while i + 3 <= bytes.count {
                let value = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
                out[o] = alphabet[Int(value >> 18 & 63)]
                out[o + 1] = alphabet[Int(value >> 12 & 63)]
                out[o + 2] = alphabet[Int(value >> 6 & 63)]
                out[o + 3] = alphabet[Int(value & 63)]
                i += 3
                o += 4
            }
            let rest = bytes.count - i
            if rest > 0 {
                let value = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
                out[o] = alphabet[Int(value >> 18 & 63)]
                out[o + 1] = alphabet[Int(value >> 12 & 63)]
                out[o + 2] = rest == 2 ? alphabet[Int(value >> 6 & 63)] : UInt8(ascii: "=")
                out[o + 3] = UInt8(ascii: "=")
                o += 4
            }
            return o
        }
    }
}
