import Foundation
import RelayHTTP
import Testing

@testable import RelayServer

/// Keys: a verified header is remembered, but never past a revocation, and never for a different secret.
@Suite struct APIKeyStoreTests {
    func withStore(_ body: (APIKeyStore) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try body(APIKeyStore(dataDirectory: directory))
    }

    @Test func aRememberedKeyIsRefusedOnceRevoked() throws {
        try withStore { store in
            let (key, entry) = try store.create(tier: "pro")
            for _ in 0..<3 {
                #expect(store.authenticate(authorization: "Key \(key)") == .key(id: entry.id, tier: "pro"))
            }
            #expect(try store.revoke(id: entry.id))
            // The key file is re-read at most every 100 ms.
            let deadline = ContinuousClock.now + .seconds(2)
            while store.authenticate(authorization: "Key \(key)") != nil, ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: 0.02)
            }
            #expect(store.authenticate(authorization: "Key \(key)") == nil)
        }
    }

    @Test func theKeyTableVersionHoldsUntilTheFileChanges() throws {
        try withStore { store in
            let (key, entry) = try store.create(tier: "pro")
            #expect(store.authenticate(authorization: "Key \(key)") != nil)
            let version = try #require(store.keyTableVersion())
            Thread.sleep(forTimeInterval: 0.15)
            #expect(store.keyTableVersion() == version, "an unchanged file keeps its version past a re-check")
            #expect(try store.revoke(id: entry.id))
            let deadline = ContinuousClock.now + .seconds(2)
            while store.keyTableVersion() == version, ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: 0.02)
            }
            #expect(store.keyTableVersion() != version, "a revocation moves the version within the re-check interval")
        }
    }

    @Test func aRememberedKeyDoesNotVouchForAnotherSecretOrItsOwnWrongForm() throws {
        try withStore { store in
            let (key, entry) = try store.create(tier: "admin")
            #expect(store.authenticate(authorization: "Key \(key)") == .key(id: entry.id, tier: "admin"))
            let forged = "\(entry.id):" + String(repeating: "0", count: 64)
            #expect(store.authenticate(authorization: "Key \(forged)") == nil)
            #expect(store.authenticate(authorization: "Key \(forged)") == nil)
            #expect(store.authenticate(authorization: "Bearer \(key)") == .key(id: entry.id, tier: "admin"))
            #expect(store.authenticate(authorization: "Key \(key)x") == nil)
        }
    }
}
