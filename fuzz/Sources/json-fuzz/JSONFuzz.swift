import RelayCore

/// libFuzzer's entry point: parse the bytes and, when the parser accepts them, check the round-trip invariants
/// that RequestKey depends on (two spellings of one document must canonicalise to the same bytes).
///
/// Rejected input is fine (that is the parser doing its job); only a broken invariant, or a crash, is a finding.
/// Built with `-parse-as-library`, so libFuzzer's own `main` drives this.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard let value = try? JSONValue(parsing: input) else { return 0 }
    JSONInvariants(input: input, value: value).check()
    return 0
}

/// The properties every accepted document must have; each violation stops the process with the input in hex.
struct JSONInvariants {
    let input: UnsafeRawBufferPointer
    let value: JSONValue

    func check() {
        // 1. The canonical form is itself accepted, means the same value, and is a fixed point.
        let canonical = value.canonicalBytes()
        let reparsedCanonical = parse(canonical, what: "canonicalBytes()")
        require(reparsedCanonical == value, "canonicalBytes() parses back to a different value", canonical)
        require(
            reparsedCanonical.hashValue == value.hashValue,
            "equal values (input, canonical re-parse) hash differently",
            canonical
        )
        let canonicalAgain = reparsedCanonical.canonicalBytes()
        require(canonicalAgain == canonical, "canonicalBytes() is not idempotent", canonicalAgain)
        // An oracle independent of JSONKey.utf16Precedes: the parser keeps member order, so the re-parsed canonical
        // form must list every object's keys in strictly increasing UTF-16 code unit order (RFC 8785 §3.2.3).
        require(
            Self.keysAreInUTF16Order(reparsedCanonical),
            "canonicalBytes() members are not in UTF-16 order",
            canonical
        )

        // 2. The compact form (stored member order) is accepted and means the same value.
        let compact = value.serialized()
        let reparsedCompact = parse(compact, what: "serialized()")
        require(reparsedCompact == value, "serialized() parses back to a different value", compact)

        // 3. Both spellings key the same: the canonical form of the re-parsed compact form is the first one.
        let canonicalOfCompact = reparsedCompact.canonicalBytes()
        require(
            canonicalOfCompact == canonical,
            "canonical form of the re-parsed serialized() differs from the input's",
            canonicalOfCompact
        )
    }

    private static func keysAreInUTF16Order(_ value: JSONValue) -> Bool {
        switch value {
        case .array(let elements):
            return elements.allSatisfy(keysAreInUTF16Order)
        case .object(let object):
            var previous: String?
            for (key, member) in object {
                if let previous, !previous.utf16.lexicographicallyPrecedes(key.utf16) { return false }
                guard keysAreInUTF16Order(member) else { return false }
                previous = key
            }
            return true
        case .null, .bool, .number, .string:
            return true
        }
    }

    private func parse(_ bytes: [UInt8], what: String) -> JSONValue {
        do {
            return try JSONValue(parsing: bytes)
        } catch {
            fail("\(what) output is rejected by the parser: \(error)", bytes)
        }
    }

    private func require(_ condition: Bool, _ message: @autoclosure () -> String, _ output: [UInt8]) {
        if !condition { fail(message(), output) }
    }

    private func fail(_ message: String, _ output: [UInt8]) -> Never {
        fatalError(
            """
            JSON invariant broken: \(message)
            input  (\(input.count) bytes): \(Self.hex(input))
            output (\(output.count) bytes): \(Self.hex(output))
            """
        )
    }

    private static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
