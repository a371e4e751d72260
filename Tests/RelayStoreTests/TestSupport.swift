import Foundation
import NIOPosix
import RelayCore
import RelayStore

/// A fresh directory under the system temporary directory; `remove()` deletes it with everything in it.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("relaystore-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

enum Fixtures {
    static let secret: [UInt8] = (0..<KeyedHasher.secretSize).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
    static let hasher = KeyedHasher(secret: secret)

    static func store(in directory: TemporaryDirectory) throws -> BlobStore {
        try BlobStore(directory: directory.path + "/data", hasher: hasher, threadPool: .singleton)
    }

    /// Deterministic incompressible bytes (SplitMix64).
    static func randomBytes(_ count: Int, seed: UInt64 = 0x5EED) -> [UInt8] {
        var state = seed
        var bytes = [UInt8]()
        bytes.reserveCapacity(count + 8)
        while bytes.count < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            withUnsafeBytes(of: z.littleEndian) { bytes.append(contentsOf: $0) }
        }
        return Array(bytes.prefix(count))
    }

    /// Log-like text: what LLM output and JSON results look like to LZ4.
    static func text(_ count: Int) -> [UInt8] {
        var text = ""
        var line = 0
        while text.utf8.count < count {
            text += "step \(line % 50)/50: denoising latent, guidance 7.5, prompt \"a lighthouse at dusk\"\n"
            line += 1
        }
        return Array(text.utf8.prefix(count))
    }

    /// A 16-bit mono PCM WAV of a 440 Hz tone, as the synthetic audio model makes.
    static func wav(seconds: Double) -> [UInt8] {
        let rate = 44_100
        let samples = Int(Double(rate) * seconds)
        var bytes: [UInt8] = []
        func append32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        func append16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        bytes += Array("RIFF".utf8)
        append32(UInt32(36 + samples * 2))
        bytes += Array("WAVE".utf8)
        bytes += Array("fmt ".utf8)
        append32(16)
        append16(1)
        append16(1)
        append32(UInt32(rate))
        append32(UInt32(rate * 2))
        append16(2)
        append16(16)
        bytes += Array("data".utf8)
        append32(UInt32(samples * 2))
        for index in 0..<samples {
            let value = sin(2 * Double.pi * 440 * Double(index) / Double(rate)) * 12_000
            append16(UInt16(bitPattern: Int16(value.rounded())))
        }
        return bytes
    }

    /// Regular files under `path`, recursively, relative to it.
    static func files(under path: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: path) else { return [] }
        var files: [String] = []
        while let name = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path + "/" + name, isDirectory: &isDirectory),
                !isDirectory.boolValue
            {
                files.append(name)
            }
        }
        return files.sorted()
    }

    /// The path of `digest`'s raw (uncompressed) file, when there is one.
    static func rawFile(_ digest: Digest128, in store: BlobStore) -> String? {
        let path = store.path(for: digest, compressed: false)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            return nil
        }
        return path
    }

    static func contents(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map { [UInt8]($0) }
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func inode(_ path: String) throws -> UInt64 {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0
    }

    /// Runs a program; returns its exit status and standard output.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}
