extension JSONValue {
    /// Compact serialisation (no whitespace), members in stored order, numbers in ECMAScript form, JCS string escaping.
    public func serialized() -> [UInt8] {
        var output: [UInt8] = []
        write(into: &output)
        return output
    }

    /// Appends the compact serialisation to `output`.
    public func write(into output: inout [UInt8]) {
        JSONWriter.append(self, into: &output, canonical: false)
    }

    /// RFC 8785 (JCS) canonical bytes: like serialized() but object members sorted by their keys' UTF-16 code units, recursively.
    public func canonicalBytes() -> [UInt8] {
        var output: [UInt8] = []
        JSONWriter.append(self, into: &output, canonical: true)
        return output
    }

    /// The compact serialisation as a `String`.
    public var serializedString: String {
        String(decoding: serialized(), as: UTF8.self)
    }
}

/// Serialises ``JSONValue``s in the RFC 8785 (JCS) dialect: ECMAScript number formatting, minimal escaping.
enum JSONWriter {
    static func append(_ value: JSONValue, into output: inout [UInt8], canonical: Bool) {
        switch value {
        case .null:
            appendASCII("null", into: &output)
        case .bool(let flag):
            appendASCII(flag ? "true" : "false", into: &output)
        case .number(let number):
            appendNumber(number, into: &output)
        case .string(let string):
            appendString(string, into: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (position, element) in elements.enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                append(element, into: &output, canonical: canonical)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let object):
            let members =
                canonical && object.count > 1
                ? object.members.sorted { JSONKey.utf16Precedes($0.key, $1.key) }
                : object.members
            output.append(UInt8(ascii: "{"))
            for (position, member) in members.enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                appendString(member.key, into: &output)
                output.append(UInt8(ascii: ":"))
                append(member.value, into: &output, canonical: canonical)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    private static func appendASCII(_ text: StaticString, into output: inout [UInt8]) {
        text.withUTF8Buffer { output.append(contentsOf: $0) }
    }

    // MARK: - Strings

    /// Appends `string` quoted, escaping per RFC 8785 §3.2.2.2: `\"`, `\\`, `\b \f \n \r \t`,
    /// other controls as lowercase `\u00xx`; everything else (including `/`, U+2028 and all
    /// non-ASCII) as raw UTF-8.
    static func appendString(_ string: String, into output: inout [UInt8]) {
        var string = string
        output.append(UInt8(ascii: "\""))
        string.withUTF8 { utf8 in
            var runStart = 0
            for index in utf8.indices {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                output.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<index]))
                runStart = index + 1
                output.append(UInt8(ascii: "\\"))
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): output.append(byte)
                case 0x08: output.append(UInt8(ascii: "b"))
                case 0x09: output.append(UInt8(ascii: "t"))
                case 0x0A: output.append(UInt8(ascii: "n"))
                case 0x0C: output.append(UInt8(ascii: "f"))
                case 0x0D: output.append(UInt8(ascii: "r"))
                default:
                    output.append(UInt8(ascii: "u"))
                    output.append(UInt8(ascii: "0"))
                    output.append(UInt8(ascii: "0"))
                    output.append(Hex.digit(byte >> 4))
                    output.append(Hex.digit(byte & 0xF))
                }
            }
            output.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...]))
        }
        output.append(UInt8(ascii: "\""))
    }

    // MARK: - Numbers

    /// Appends `value` as ECMAScript's Number::toString does (RFC 8785 §3.2.2.3); non-finite as `null`.
    static func appendNumber(_ value: Double, into output: inout [UInt8]) {
        guard value.isFinite else {
            appendASCII("null", into: &output)
            return
        }
        if value == 0 {
            output.append(UInt8(ascii: "0"))
            return
        }
        // Up to 2^53 every integer is a double, so its own digits are the shortest round-trip digits.
        if value.magnitude <= 9_007_199_254_740_992, value == value.rounded(.towardZero) {
            appendInteger(Int64(value), into: &output)
            return
        }
        // Swift's description yields the shortest round-tripping digits (closest on ties), the same
        // digit choice as ECMAScript; only the layout differs, so extract digits and exponent from it.
        var description = value.description
        description.withUTF8 { text in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: text.count) { digits in
                let (count, pointPosition) = decimalDigits(of: text, into: digits)
                layOut(
                    negative: value < 0,
                    digits: UnsafeBufferPointer(rebasing: digits[0..<count]),
                    pointPosition: pointPosition,
                    into: &output
                )
            }
        }
    }

    /// Splits Swift's rendering of a finite non-zero double ("-1.25e-07", "123.5", "1e+16") into
    /// significant digits d1...dk without leading or trailing zeros and n such that the magnitude is
    /// 0.d1...dk × 10^n. Returns (k, n).
    private static func decimalDigits(
        of text: UnsafeBufferPointer<UInt8>,
        into digits: UnsafeMutableBufferPointer<UInt8>
    ) -> (count: Int, pointPosition: Int) {
        var count = 0
        var pointPosition = 0
        var afterPoint = false
        var index = 0
        while index < text.count {
            let byte = text[index]
            index += 1
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if count == 0 && byte == UInt8(ascii: "0") {
                    if afterPoint { pointPosition -= 1 }
                } else {
                    digits[count] = byte
                    count += 1
                    if !afterPoint { pointPosition += 1 }
                }
            case UInt8(ascii: "."):
                afterPoint = true
            case UInt8(ascii: "e"), UInt8(ascii: "E"):
                var exponent = 0
                var exponentNegative = false
                while index < text.count {
                    let exponentByte = text[index]
                    index += 1
                    if exponentByte == UInt8(ascii: "-") {
                        exponentNegative = true
                    } else if exponentByte >= UInt8(ascii: "0"), exponentByte <= UInt8(ascii: "9") {
                        exponent = exponent * 10 + Int(exponentByte - UInt8(ascii: "0"))
                    }
                }
                pointPosition += exponentNegative ? -exponent : exponent
            default:
                break  // the sign
            }
        }
        while count > 1, digits[count - 1] == UInt8(ascii: "0") { count -= 1 }
        return (count, pointPosition)
    }

    /// ECMAScript Number::toString steps 6-10 for digits d1...dk and point position n.
    private static func layOut(
        negative: Bool,
        digits: UnsafeBufferPointer<UInt8>,
        pointPosition n: Int,
        into output: inout [UInt8]
    ) {
        let k = digits.count
        if negative { output.append(UInt8(ascii: "-")) }
        if k <= n, n <= 21 {
            output.append(contentsOf: digits)
            output.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: n - k))
        } else if 0 < n, n <= 21 {
            output.append(contentsOf: UnsafeBufferPointer(rebasing: digits[0..<n]))
            output.append(UInt8(ascii: "."))
            output.append(contentsOf: UnsafeBufferPointer(rebasing: digits[n...]))
        } else if -6 < n, n <= 0 {
            output.append(UInt8(ascii: "0"))
            output.append(UInt8(ascii: "."))
            output.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: -n))
            output.append(contentsOf: digits)
        } else {
            output.append(digits[0])
            if k > 1 {
                output.append(UInt8(ascii: "."))
                output.append(contentsOf: UnsafeBufferPointer(rebasing: digits[1...]))
            }
            output.append(UInt8(ascii: "e"))
            output.append(n - 1 >= 0 ? UInt8(ascii: "+") : UInt8(ascii: "-"))
            appendInteger(Int64((n - 1).magnitude), into: &output)
        }
    }

    private static func appendInteger(_ value: Int64, into output: inout [UInt8]) {
        if value < 0 { output.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        // 20 digits hold any UInt64.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buffer in
            var start = buffer.count
            repeat {
                start -= 1
                buffer[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            output.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[start...]))
        }
    }
}
