extension JSONParser {
    // MARK: - Numbers

    /// Exactly representable powers of ten, for the fast path.
    static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    mutating func parseNumber() throws(JSONError) -> Double {
        let start = position
        var index = position
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }

        // Digits accumulated while they fit; `exact` turns false once one does not.
        var significand: UInt64 = 0
        var exact = true
        var exponent = 0

        guard index < bytes.count, Self.isDigit(bytes[index]) else {
            throw JSONError(.invalidNumber, at: index, "invalid number: expected a digit after '-'")
        }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if index < bytes.count, Self.isDigit(bytes[index]) {
                throw JSONError(.invalidNumber, at: start, "invalid number: leading zeros are not allowed")
            }
        } else {
            while index < bytes.count, Self.isDigit(bytes[index]) {
                Self.accumulate(bytes[index], into: &significand, exact: &exact)
                index += 1
            }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, Self.isDigit(bytes[index]) else {
                throw JSONError(.invalidNumber, at: index, "invalid number: expected a digit after the decimal point")
            }
            while index < bytes.count, Self.isDigit(bytes[index]) {
                Self.accumulate(bytes[index], into: &significand, exact: &exact)
                exponent -= 1
                index += 1
            }
        }
        if index < bytes.count, bytes[index] | 0x20 == UInt8(ascii: "e") {
            index += 1
            var exponentNegative = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") || bytes[index] == UInt8(ascii: "+") {
                exponentNegative = bytes[index] == UInt8(ascii: "-")
                index += 1
            }
            guard index < bytes.count, Self.isDigit(bytes[index]) else {
                throw JSONError(.invalidNumber, at: index, "invalid number: expected a digit in the exponent")
            }
            var written = 0
            while index < bytes.count, Self.isDigit(bytes[index]) {
                // Saturate: past this the value is 0 or out of range whatever the digits.
                if written < 1_000_000 { written = written * 10 + Int(bytes[index] - UInt8(ascii: "0")) }
                index += 1
            }
            exponent += exponentNegative ? -written : written
        }
        position = index

        if significand == 0 && exact {
            return negative ? -0.0 : 0.0
        }
        // Clinger's fast path: significand and power of ten are both exact doubles, so one IEEE
        // multiplication or division gives the correctly rounded result.
        if exact, significand <= 1 << 53, exponent >= -22, exponent <= 22 {
            let magnitude = Double(significand)
            let value =
                exponent < 0
                ? magnitude / Self.powersOfTen[-exponent]
                : magnitude * Self.powersOfTen[exponent]
            return negative ? -value : value
        }
        // The standard library's conversion is correctly rounded for any length of input.
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let value = Double(text) else {
            throw JSONError(.invalidNumber, at: start, "invalid number")
        }
        guard value.isFinite else {
            throw JSONError(
                .numberOutOfRange,
                at: start,
                "number \(Self.abbreviated(text)) is out of range: magnitude above 1.7976931348623157e+308"
            )
        }
        return value
    }

    static func isDigit(_ byte: UInt8) -> Bool {
        byte &- UInt8(ascii: "0") < 10
    }

    static func accumulate(_ digit: UInt8, into significand: inout UInt64, exact: inout Bool) {
        guard exact else { return }
        guard significand < 1 << 59 else {
            exact = false
            return
        }
        significand = significand * 10 + UInt64(digit - UInt8(ascii: "0"))
    }
}
