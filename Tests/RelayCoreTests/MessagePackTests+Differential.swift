import Foundation
import Testing

@testable import RelayCore

extension MessagePackTests {
    // MARK: - Differential against Python's msgpack

    /// Python packs (use_bin_type=True) what we decode, and unpacks (raw=False) what we encode; for
    /// JSON-like values the bytes must match exactly, both sides choosing the smallest formats.
    @Test(
        .enabled(
            if: MessagePackPythonReference.isAvailable,
            "python3 with the msgpack package not found (`python3 -c 'import msgpack'` failed)"
        )
    )
    func matchesPythonMsgpack() throws {
        var generator = MessagePackValueGenerator(seed: 0x4D50_0004)
        var values: [JSONValue] = []
        for _ in 0..<400 {
            values.append(generator.value())
        }
        let ours = values.map { MessagePack.encode($0) }
        let reference = try MessagePackPythonReference.run(values: values, encodings: ours)
        try #require(reference.documents.count == values.count, "python returned \(reference.documents.count) results")

        var mismatches = 0
        for (index, value) in values.enumerated() {
            let (pythonBytes, verdict) = reference.documents[index]
            var problems: [String] = []
            if verdict != "ok" { problems.append("python unpackb(ours) \(verdict)") }
            do {
                let decoded = try MessagePack.decode(pythonBytes)
                if decoded != value { problems.append("decode(python) = \(String(decoded.description.prefix(300)))") }
            } catch {
                problems.append("decode(python) failed: \(error)")
            }
            if pythonBytes != ours[index] {
                problems.append(
                    "bytes differ: python \(Self.hex(pythonBytes).prefix(200)) ours \(Self.hex(ours[index]).prefix(200))"
                )
            }
            if problems.isEmpty { continue }
            Issue.record(
                "value \(index): \(problems.joined(separator: "; ")); value \(String(value.description.prefix(300)))"
            )
            mismatches += 1
            if mismatches == 5 { break }
        }

        // bin from Python's bytes, across the bin8/bin16/bin32 boundaries.
        #expect(reference.binaries.count == MessagePackPythonReference.binaryLengths.count)
        for (length, packed, base64) in reference.binaries {
            #expect(
                try MessagePack.decode(packed) == .string("data:application/octet-stream;base64," + base64),
                "bytes of length \(length)"
            )
        }
    }

    /// Guards the guard: the generated values cross every format boundary the comparison is meant to cover.
    @Test func generatorCoversEveryFormat() throws {
        var generator = MessagePackValueGenerator(seed: 0x4D50_0004)
        var formats: Set<UInt8> = []
        func collect(_ value: JSONValue) {
            let first = MessagePack.encode(value)[0]
            switch first {
            case 0x00...0x7F: formats.insert(0x00)
            case 0x80...0xBF: formats.insert(first & 0xF0)
            case 0xE0...0xFF: formats.insert(0xE0)
            default: formats.insert(first)
            }
            switch value {
            case .array(let elements):
                for element in elements { collect(element) }
            case .object(let object):
                for (key, member) in object {
                    collect(.string(key))
                    collect(member)
                }
            default:
                break
            }
        }
        for _ in 0..<400 {
            collect(generator.value())
        }
        for format: UInt8 in [
            0x00, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xC2, 0xC3, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2, 0xD3,
            0xD9, 0xDA, 0xDB, 0xDC, 0xDE, 0xE0,
        ] {
            #expect(formats.contains(format), "no value starts with 0x\(String(format, radix: 16))")
        }
    }
}
