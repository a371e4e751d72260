import Foundation
import RelayStore
import Testing

/// ENOSPC on a real filesystem: a 64 KiB tmpfs, mounted by the test (root only; cancelled visibly elsewhere).
@Suite("BlobStore on a full disk", .serialized)
struct BlobStoreDiskFullTests {
    /// Mounts a tmpfs of `size` at a new directory, runs `body`, unmounts.
    static func withTinyFilesystem(size: String, _ body: (String) async throws -> Void) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let mountPoint = directory.path + "/mnt"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try? Fixtures.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", mountPoint])
        guard mount?.status == 0 else {
            try Test.cancel("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): ENOSPC not tested")
        }
        defer { _ = try? Fixtures.run("/bin/umount", [mountPoint]) }
        try await body(mountPoint)
    }

    @Test func fullDiskIsDiskFullAndLeavesNothingBehind() async throws {
        try await Self.withTinyFilesystem(size: "64k") { mountPoint in
            let store = try BlobStore(directory: mountPoint + "/data", hasher: Fixtures.hasher, threadPool: .singleton)
            let big = Fixtures.randomBytes(256 * 1024)
            let error = await #expect(throws: StoreError.self) { try await store.put(big, mediaType: .png) }
            #expect(error?.isDiskFull == true, "\(String(describing: error))")
            #expect(error == .diskFull)
            let digest = Fixtures.hasher.digest(big)
            #expect(!FileManager.default.fileExists(atPath: store.path(for: digest, compressed: false)))
            #expect(try await store.read(digest) == nil)
            #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty, "the temporary file was removed")
            #expect(Fixtures.files(under: store.blobsDirectory).isEmpty)

            // Compressible bytes that still don't fit once compressed.
            let noisyText = Fixtures.randomBytes(300 * 1024).map { 0x61 + $0 % 16 }
            let compressedError = await #expect(throws: StoreError.self) {
                try await store.put(noisyText, mediaType: .text)
            }
            #expect(compressedError?.isDiskFull == true)
            #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
            #expect(Fixtures.files(under: store.blobsDirectory).isEmpty)

            // The space is back: a blob that fits is stored.
            let small = Fixtures.randomBytes(8 * 1024)
            let record = try await store.put(small, mediaType: .png)
            #expect(try await store.read(record.digest) == small)
        }
    }
}
