/// A `String` compared and hashed by its exact UTF-8 bytes rather than by canonical equivalence.
struct JSONKey: Hashable {
    let string: String

    init(_ string: String) { self.string = string }

    static func == (lhs: JSONKey, rhs: JSONKey) -> Bool { equal(lhs.string, rhs.string) }

    func hash(into hasher: inout Hasher) {
        var string = string
        string.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Byte-for-byte UTF-8 equality.
    static func equal(_ lhs: String, _ rhs: String) -> Bool {
        guard lhs.utf8.count == rhs.utf8.count else { return false }
        var lhs = lhs
        var rhs = rhs
        return lhs.withUTF8 { a in rhs.withUTF8 { b in a.elementsEqual(b) } }
    }

    /// Whether `lhs` sorts before `rhs` when both are compared as sequences of UTF-16 code units
    /// (RFC 8785 §3.2.3, and what JavaScript's default sort does).
    ///
    /// UTF-8 byte order equals code point order, and code point order equals UTF-16 order except
    /// when a supplementary character (4-byte UTF-8, a surrogate pair in UTF-16) meets one in
    /// U+E000...U+FFFF (3-byte UTF-8 led by 0xEE or 0xEF): the surrogate (0xD800...) sorts first.
    static func utf16Precedes(_ lhs: String, _ rhs: String) -> Bool {
        var lhs = lhs
        var rhs = rhs
        return lhs.withUTF8 { a in
            rhs.withUTF8 { b in
                let common = min(a.count, b.count)
                var i = 0
                while i < common, a[i] == b[i] { i += 1 }
                if i == common { return a.count < b.count }
                // Both strings share the bytes before i, so the characters that differ start at the same place.
                var start = i
                while start > 0, a[start] & 0xC0 == 0x80 { start -= 1 }
                let leadA = a[start]
                let leadB = b[start]
                if leadA >= 0xF0, leadB == 0xEE || leadB == 0xEF { return true }
                if leadB >= 0xF0, leadA == 0xEE || leadA == 0xEF { return false }
                return a[i] < b[i]
            }
        }
    }
}
