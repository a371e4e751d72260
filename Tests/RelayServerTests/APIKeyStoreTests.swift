import Foundation
import RelayHTTP
import Synchronization
import Testing

@testable import RelayServer

/// Keys: a verified header is remembered, but never past a revocation, and never for a different secret.
@Suite struct APIKeyStoreTests {
    /// A clock that moves only when the test moves it.
    final class TestClock: Sendable {
        private let instant = Mutex(ContinuousClock.now)
        var now: ContinuousClock.Instant { instant.withLock { $0 } }
        func advance(by duration: Duration) { instant.withLock { $0 = $0.advanced(by: duration) } }
    }

    func withStore(_ body: (APIKeyStore) throws -> Void) throws {
        try withStores { store, _, _ in try body(store) }
    }

    /// A serving store on a test clock, and a second store on the same directory that plays `media-relay keys` (the
    /// command changes `keys.json` from another process).
    func withStores(_ body: (_ server: APIKeyStore, _ command: APIKeyStore, _ clock: TestClock) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        try body(APIKeyStore(dataDirectory: directory) { clock.now }, APIKeyStore(dataDirectory: directory), clock)
    }

    @Test func aRememberedKeyIsRefusedOnceRevoked() throws {
        try withStores { server, command, clock in
            let (key, entry) = try command.create(tier: "pro")
            for _ in 0..<3 {
                #expect(server.authenticate(authorization: "Key \(key)") == .key(id: entry.id, tier: "pro"))
            }
            #expect(try command.revoke(id: entry.id))
            #expect(
                server.authenticate(authorization: "Key \(key)") != nil,
                "the file is not re-checked within the interval"
            )
            clock.advance(by: APIKeyStore.recheckInterval)
            #expect(server.authenticate(authorization: "Key \(key)") == nil, "a revocation bites within the interval")
        }
    }

    @Test func aRevocationThroughTheServingStoreBitesAtOnce() throws {
        try withStore { store in
            let (key, entry) = try store.create(tier: "pro")
            #expect(store.authenticate(authorization: "Key \(key)") == .key(id: entry.id, tier: "pro"))
            #expect(try store.revoke(id: entry.id))
            #expect(store.authenticate(authorization: "Key \(key)") == nil)
        }
    }

    @Test func theKeyTableVersionHoldsUntilTheFileChanges() throws {
        try withStores { server, command, clock in
            let (key, entry) = try command.create(tier: "pro")
            #expect(server.authenticate(authorization: "Key \(key)") != nil)
            let version = try #require(server.keyTableVersion())
            clock.advance(by: APIKeyStore.recheckInterval * 2)
            #expect(server.keyTableVersion() == version, "an unchanged file keeps its version past a re-check")
            #expect(try command.revoke(id: entry.id))
            #expect(server.keyTableVersion() == version, "the file is not re-checked within the interval")
            clock.advance(by: APIKeyStore.recheckInterval)
            #expect(server.keyTableVersion() != version, "a revocation moves the version within the re-check interval")
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
