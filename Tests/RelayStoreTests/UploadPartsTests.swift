import Foundation
import NIOCore
import NIOPosix
import RelayCore
import Testing

@testable import RelayStore

@Suite("Multipart upload parts: sealed in tmp/, assembled in order into one blob", .serialized)
struct UploadPartsTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()

    func part(_ bytes: [UInt8], parts: UploadParts) async throws -> UploadParts.Sealed {
        let upload = parts.store.makeUpload()
        try await parts.store.append(ByteBuffer(bytes: bytes), to: upload, eventLoop: loop).get()
        return try await parts.seal(upload, eventLoop: loop).get()
    }

    @Test func sealedPartsAreAssembledInTheOrderGivenIntoTheBlobOfTheirConcatenation() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let parts = UploadParts(store: store, threadPool: .singleton)
        // Over the 1 MiB copy buffer, so that a part is copied in several reads.
        let a = Fixtures.randomBytes(2_500_000, seed: 1)
        let b = Fixtures.randomBytes(1_000_001, seed: 2)
        let c = Fixtures.randomBytes(7, seed: 3)
        let sealedA = try await part(a, parts: parts)
        let sealedB = try await part(b, parts: parts)
        let sealedC = try await part(c, parts: parts)
        #expect(sealedA.digest == Fixtures.hasher.digest(a))  // the part's etag is the digest of its bytes
        #expect(sealedB.size == b.count)
        #expect(sealedA.path.hasPrefix(store.temporaryDirectory + "/"))

        let record = try await parts.assemble(
            [sealedC.path, sealedA.path, sealedB.path],
            mediaType: .png,
            eventLoop: loop
        ).get()
        let whole = c + a + b
        #expect(record.digest == Fixtures.hasher.digest(whole))
        #expect(record.size == whole.count)
        #expect(try await store.read(record.digest) == whole)
        // The parts are still there (the caller removes them once the result is recorded); then they go.
        #expect(Fixtures.files(under: store.temporaryDirectory).count == 3)
        try await parts.remove([sealedA.path, sealedB.path, sealedC.path, "/nonexistent/part"], eventLoop: loop).get()
        #expect(Fixtures.files(under: store.temporaryDirectory).isEmpty)
    }

    @Test func aMissingPartFailsTheAssemblyAndLeavesNothingBehind() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try Fixtures.store(in: directory)
        let parts = UploadParts(store: store, threadPool: .singleton)
        let sealed = try await part(Fixtures.randomBytes(10_000), parts: parts)
        await #expect(throws: StoreError.self) {
            try await parts.assemble([sealed.path, sealed.path + ".gone"], mediaType: .png, eventLoop: loop).get()
        }
        #expect(
            Fixtures.files(under: store.temporaryDirectory) == [URL(fileURLWithPath: sealed.path).lastPathComponent]
        )
    }
}
