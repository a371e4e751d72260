/// A random 128-bit request id in UUID text form (version 4), what status, result and cancel address.
public enum RequestID {
    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 {
                text.append(UInt8(ascii: "-"))
            }
            text.append(Hex.digit(byte >> 4))
            text.append(Hex.digit(byte & 0x0F))
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Plausible ids only (hex and dashes, at most 64 characters): anything else is not looked up or echoed.
    public static func isPlausible<S: StringProtocol>(_ text: S) -> Bool {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= 64 else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
                UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: "-"):
                true
            default:
                false
            }
        }
    }
}
