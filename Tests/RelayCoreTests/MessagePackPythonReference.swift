import Foundation
import Testing

@testable import RelayCore

/// Runs Python's msgpack package on our values.
enum MessagePackPythonReference {
    static let isAvailable: Bool = {
        guard let status = try? run(["python3", "-c", "import msgpack"], quiet: true) else { return false }
        return status == 0
    }()

    static let binaryLengths = [0, 1, 2, 3, 4, 31, 32, 255, 256, 65535, 65536, 70000]

    /// For each input line `<json>\t<hex of our msgpack>`: `<hex of packb(json)>\t<ok | what differs>`.
    /// JSON integers are first replaced by the integer the Double they spell holds (the JSON writer
    /// spells 2^63 as 9223372036854776000, as ECMAScript does), or by a float outside int64/uint64.
    /// Then `bin <length> <hex of packb(bytes)> <base64>` for each length in binaryLengths.
    static let script = #"""
        import base64, json, sys
        import msgpack

        def normalise(value):
            if isinstance(value, bool):
                return value
            if isinstance(value, int):
                exact = int(float(value))
                return exact if -2**63 <= exact < 2**64 else float(value)
            if isinstance(value, list):
                return [normalise(v) for v in value]
            if isinstance(value, dict):
                return {k: normalise(v) for k, v in value.items()}
            return value

        def same(a, b):
            if isinstance(a, dict):
                return isinstance(b, dict) and list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
            if isinstance(a, list):
                return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
            return type(a) is type(b) and a == b

        source, target, lengths = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3].split(",")]
        with open(source, encoding="utf-8") as lines, open(target, "w", encoding="utf-8") as out:
            for line in lines:
                text, ours = line.rstrip("\n").split("\t")
                value = normalise(json.loads(text))
                packed = msgpack.packb(value, use_bin_type=True).hex()
                try:
                    unpacked = msgpack.unpackb(bytes.fromhex(ours), raw=False)
                    verdict = "ok" if same(value, unpacked) else "differs: " + repr(unpacked)[:200]
                except Exception as error:
                    verdict = "failed: " + repr(error)
                out.write(packed + "\t" + verdict + "\n")
            for length in lengths:
                data = bytes((i * 131 + 7) % 256 for i in range(length))
                packed = msgpack.packb(data, use_bin_type=True).hex()
                out.write("bin\t%d\t%s\t%s\n" % (length, packed, base64.b64encode(data).decode()))
        """#

    struct Output {
        var documents: [(packed: [UInt8], verdict: String)] = []
        var binaries: [(length: Int, packed: [UInt8], base64: String)] = []
    }

    static func run(values: [JSONValue], encodings: [[UInt8]]) throws -> Output {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("msgpack-differential-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("input.tsv")
        let output = directory.appendingPathComponent("output.tsv")
        var text = ""
        for (value, encoded) in zip(values, encodings) {
            // The compact JSON writer escapes control characters, so a line holds one document.
            text += value.serializedString + "\t" + hex(encoded) + "\n"
        }
        try Data(text.utf8).write(to: input)

        let lengths = binaryLengths.map(String.init).joined(separator: ",")
        let status = try run(["python3", "-c", script, input.path, output.path, lengths])
        try #require(status == 0, "python3 exited with status \(status)")

        var result = Output()
        for line in try String(contentsOf: output, encoding: .utf8).split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            if fields.first == "bin", fields.count == 4 {
                result.binaries.append((Int(fields[1]) ?? -1, try unhex(fields[2]), fields[3]))
            } else if fields.count == 2 {
                result.documents.append((try unhex(fields[0]), fields[1]))
            } else {
                Issue.record("unexpected line from python: \(line.prefix(200))")
            }
        }
        return result
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 15)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    private static func unhex(_ text: String) throws -> [UInt8] {
        let utf8 = Array(text.utf8)
        try #require(utf8.count % 2 == 0, "odd hex length")
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            let high = try #require(nibble(utf8[index]))
            let low = try #require(nibble(utf8[index + 1]))
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func run(_ arguments: [String], quiet: Bool = false) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        if quiet { process.standardError = FileHandle.nullDevice }
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
