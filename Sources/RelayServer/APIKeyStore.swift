import Crypto
import Foundation
public import RelayCluster
public import RelayCore
public import RelayHTTP
import Synchronization

/// API keys, stored as SHA-256 hashes in `<data-dir>/keys.json`; the plain key is shown once, at creation.
///
/// A key is `<id>:<secret>` (the shape of fal's keys, so `FAL_KEY` holds it unchanged). Lookup is by id, then a
/// constant-time comparison of the hash. The file is re-read when it changed (a stat at most every 100 ms, and at once
/// for an unknown id), so a key created by `media-relay keys` works at once and a revocation bites within 100 ms,
/// without a restart.
public final class APIKeyStore: Authenticator, Sendable {
    public static let tiers = ["signed-in", "pro", "enterprise", "admin"]

    /// One stored key (never the key itself).
    public struct Entry: Sendable, Hashable {
        public let id: String
        public let hash: [UInt8]
        public let tier: String
        public let created: String
        public var revoked: Bool
        /// Its spending caps (changed with `media-relay keys budget`, read again within `recheckInterval`).
        public var budget = SpendBudget()
    }

    private struct Cache {
        var entries: [String: Entry] = [:]
        /// Identity of the file version loaded (inode, size, mtime): a change means reload.
        var version: FileVersion?
        var checkedAt: ContinuousClock.Instant?
        /// Bumped whenever `entries` is loaded anew: see `keyTableVersion()`.
        var generation: UInt64 = 0
    }

    /// How stale the key table may be for a key it knows: bounds the time a revocation takes to bite.
    static let recheckInterval = Duration.milliseconds(100)

    private struct FileVersion: Equatable {
        let inode: UInt64
        let size: Int64
        let seconds: Int
        let nanoseconds: Int
    }

    private let path: String
    private let cache = Mutex(Cache())
    /// The clock the re-check interval is measured on (a test's own clock moves only when the test moves it).
    private let now: @Sendable () -> ContinuousClock.Instant
    /// Signs realtime tokens; nil (no tokens) when the store is used only to manage keys. Kept as bytes because
    /// `SymmetricKey` is not Sendable.
    private let signingKeyBytes: [UInt8]?

    var signingKey: SymmetricKey? { signingKeyBytes.map { SymmetricKey(data: $0) } }

    /// `secret`: the deployment secret, from which the token-signing key is derived.
    public init(
        dataDirectory: String,
        secret: [UInt8]? = nil,
        now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
    ) {
        self.path = (dataDirectory as NSString).appendingPathComponent("keys.json")
        self.now = now
        self.signingKeyBytes = secret.map { secret in
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: secret),
                info: Array("media-relay token signing v1".utf8),
                outputByteCount: 32
            ).withUnsafeBytes { Array($0) }
        }
    }

    // MARK: - Authenticator

    public func authenticate(authorization: String?) -> Principal? {
        guard let authorization else { return .anonymous }
        // A header that verified before skips the SHA-256: the same key, with the same hash, still not revoked.
        if let known = verified.withLock({ $0[authorization] }), let entry = entries()[known.id], !entry.revoked,
            entry.hash == known.hash
        {
            return .key(id: entry.id, tier: entry.tier)
        }
        // On the UTF-8 bytes: this runs for every request (no splitting into arrays, no Character iteration).
        guard let (scheme, credential) = Self.splitAuthorization(authorization) else { return nil }
        guard Self.equalsIgnoringCase(scheme, "key") || Self.equalsIgnoringCase(scheme, "bearer") else { return nil }
        guard let colon = credential.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let id = String(Substring(credential[..<colon]))
        guard let entry = entries()[id] ?? entries(fresh: true)[id], !entry.revoked else { return nil }
        let hash =
            credential.withContiguousStorageIfAvailable { Array(SHA256.hash(data: $0)) }
            ?? Array(SHA256.hash(data: Array(credential)))
        guard Self.constantTimeEqual(hash, entry.hash) else { return nil }
        verified.withLock { verified in
            if verified.count >= Self.verifiedLimit { verified.removeAll(keepingCapacity: true) }
            verified[authorization] = Verified(id: id, hash: entry.hash)
        }
        return .key(id: id, tier: entry.tier)
    }

    /// The key table's generation: it changes whenever the table is loaded anew (a key created, revoked or changed in
    /// `keys.json`), checked against the file as often as `authenticate` checks it.
    public func keyTableVersion() -> UInt64? {
        table().generation
    }

    /// Authorization headers that verified, by their exact text: a client sends the same header on every request,
    /// and its hash check is most of the cost of a cache hit. Only valid headers are kept (a wrong key is never
    /// remembered), and each use re-checks that the key still exists, is unrevoked and has the same hash.
    private struct Verified {
        let id: String
        let hash: [UInt8]
    }

    static let verifiedLimit = 4096
    private let verified = Mutex<[String: Verified]>([:])

    /// `Scheme credential`, with spaces and tabs around the credential dropped; nil without a credential.
    static func splitAuthorization(_ header: String) -> (Substring.UTF8View, Substring.UTF8View)? {
        let bytes = Substring(header).utf8
        guard let space = bytes.firstIndex(where: { $0 == 0x20 || $0 == 0x09 }) else { return nil }
        var credential = bytes[bytes.index(after: space)...]
        while let first = credential.first, first == 0x20 || first == 0x09 { credential = credential.dropFirst() }
        while let last = credential.last, last == 0x20 || last == 0x09 { credential = credential.dropLast() }
        guard !credential.isEmpty else { return nil }
        return (bytes[..<space], credential)
    }

    static func equalsIgnoringCase(_ bytes: Substring.UTF8View, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            zip(bytes, expected).allSatisfy { byte, want in
                (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == want
            }
        }
    }

    // MARK: - Management (the `keys` command)

    /// Makes a key, stores its hash, and returns the key (the only time it exists in plain text).
    public func create(
        tier: String,
        budget: SpendBudget = SpendBudget()
    ) throws(KeyStoreError) -> (
        key: String, entry: Entry
    ) {
        var (key, entry) = try Self.makeKey(tier: tier)
        entry.budget = budget
        var all = try load()
        all.append(entry)
        try save(all)
        return (key, entry)
    }

    /// A new key and its entry (the key exists in plain text only in what this returns).
    public static func makeKey(tier: String) throws(KeyStoreError) -> (key: String, entry: Entry) {
        guard tiers.contains(tier) else {
            throw KeyStoreError("unknown tier \"\(tier)\"; use one of \(tiers.joined(separator: ", "))")
        }
        let id = randomHex(8)
        let key = "\(id):\(randomHex(32))"
        let entry = Entry(
            id: id,
            hash: Array(SHA256.hash(data: Array(key.utf8))),
            tier: tier,
            created: ISO8601DateFormatter().string(from: Date()),
            revoked: false
        )
        return (key, entry)
    }

    /// Replaces the whole key table (a fleet node copying the fleet's table; `ClusterKeys`).
    public func replaceAll(with rows: [ClusterKeys.Row]) throws(KeyStoreError) {
        try save(
            rows.compactMap { row in
                Self.bytes(hex: row.sha256Hex).map {
                    Entry(
                        id: row.id,
                        hash: $0,
                        tier: row.tier,
                        created: row.created,
                        revoked: row.revoked,
                        budget: SpendBudget(daily: row.budgetDaily, monthly: row.budgetMonthly)
                    )
                }
            }
        )
    }

    public func list() throws(KeyStoreError) -> [Entry] {
        try load()
    }

    /// Sets a key's spending caps (a running relay reads them within `recheckInterval`); false when no such key.
    public func setBudget(id: String, _ budget: SpendBudget) throws(KeyStoreError) -> Bool {
        var all = try load()
        guard let index = all.firstIndex(where: { $0.id == id }) else { return false }
        all[index].budget = budget
        try save(all)
        return true
    }

    /// A key's spending caps, from the table as of at most `recheckInterval` ago.
    public func budget(for keyID: String) -> SpendBudget {
        entries()[keyID]?.budget ?? SpendBudget()
    }

    /// Revokes by id; returns false when no such key exists.
    public func revoke(id: String) throws(KeyStoreError) -> Bool {
        var all = try load()
        guard let index = all.firstIndex(where: { $0.id == id }) else { return false }
        all[index].revoked = true
        try save(all)
        return true
    }

    // MARK: - Storage

    /// The key table. The file is stat'ed at most every `recheckInterval` (a stat per request on an event loop was
    /// measurable), or at once with `fresh`, which lookups use for an id they do not know yet (a key just created).
    func entries(fresh: Bool = false) -> [String: Entry] {
        table(fresh: fresh).entries
    }

    /// The key table and its generation, under the same staleness bound as `entries(fresh:)`.
    private func table(fresh: Bool = false) -> (entries: [String: Entry], generation: UInt64) {
        let now = self.now()
        if !fresh,
            let cached = cache.withLock({ cache -> ([String: Entry], UInt64)? in
                guard let checked = cache.checkedAt, now - checked < Self.recheckInterval else { return nil }
                return (cache.entries, cache.generation)
            })
        {
            return cached
        }
        var info = stat()
        let version: FileVersion? =
            stat(path, &info) == 0
            ? FileVersion(
                inode: UInt64(info.st_ino),
                size: Int64(info.st_size),
                seconds: info.st_mtim.tv_sec,
                nanoseconds: info.st_mtim.tv_nsec
            ) : nil
        return cache.withLock { cache -> ([String: Entry], UInt64) in
            cache.checkedAt = now
            if cache.version != version || version == nil {
                cache.version = version
                let loaded = (try? load()) ?? []
                cache.entries = Dictionary(loaded.map { ($0.id, $0) }, uniquingKeysWith: { _, last in last })
                cache.generation &+= 1
            }
            return (cache.entries, cache.generation)
        }
    }

    private func load() throws(KeyStoreError) -> [Entry] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        guard let data = FileManager.default.contents(atPath: path),
            let document = try? JSONValue(parsing: [UInt8](data)), let keys = document["keys"]?.arrayValue
        else {
            throw KeyStoreError("\(path) is unreadable or not a key file")
        }
        return keys.compactMap { item in
            guard let id = item["id"]?.stringValue, let hash = item["sha256"]?.stringValue.flatMap(Self.bytes(hex:)),
                let tier = item["tier"]?.stringValue
            else { return nil }
            return Entry(
                id: id,
                hash: hash,
                tier: tier,
                created: item["created"]?.stringValue ?? "",
                revoked: item["revoked"]?.boolValue ?? false,
                budget: SpendBudget(
                    daily: item["budget_daily"]?.doubleValue.flatMap { $0 >= 0 ? $0 : nil },
                    monthly: item["budget_monthly"]?.doubleValue.flatMap { $0 >= 0 ? $0 : nil }
                )
            )
        }
    }

    private func save(_ entries: [Entry]) throws(KeyStoreError) {
        let keys: [JSONValue] = entries.map { entry in
            var object: JSONObject = [
                "id": .string(entry.id),
                "sha256": .string(Self.hex(entry.hash)),
                "tier": .string(entry.tier),
                "created": .string(entry.created),
                "revoked": .bool(entry.revoked),
            ]
            if let daily = entry.budget.daily { object["budget_daily"] = .number(daily) }
            if let monthly = entry.budget.monthly { object["budget_monthly"] = .number(monthly) }
            return .object(object)
        }
        let folder = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let temporary = path + ".tmp-\(getpid())"
        let bytes = JSONValue.object(["keys": .array(keys)]).serialized() + [UInt8(ascii: "\n")]
        guard
            FileManager.default.createFile(
                atPath: temporary,
                contents: Data(bytes),
                attributes: [.posixPermissions: 0o600]
            )
        else {
            throw KeyStoreError("cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw KeyStoreError("cannot replace \(path): errno \(errno)")
        }
        cache.withLock {
            $0.version = nil
            $0.checkedAt = nil
        }
    }

    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices {
            difference |= lhs[index] ^ rhs[index]
        }
        return difference == 0
    }

    private static func randomHex(_ count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return hex((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    static func hex(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.flatMap { [Hex.digit($0 >> 4), Hex.digit($0 & 0x0F)] }, as: UTF8.self)
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = Hex.value(digits[index]), let low = Hex.value(digits[index + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }
}

/// A key file that cannot be read or written, or a bad request to the key store.
public struct KeyStoreError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Short-lived tokens (fal's `POST /tokens/`): `hex(payload).hex(HMAC-SHA256(payload))` under a key derived from
/// the deployment secret, so any relay process of the deployment can check them and nobody else can make one.
/// The payload is `v1|<key id>|<tier>|<expiry unix seconds>|<app,app,…>`.
extension APIKeyStore {
    public func issueToken(for principal: Principal, apps: [String], seconds: Int) -> String? {
        guard case .key(let id, let tier) = principal, let signingKey else { return nil }
        let lifetime = min(max(seconds, 10), 3600)
        let expiry = Int(Date().timeIntervalSince1970) + lifetime
        let cleanApps = apps.filter { !$0.contains(",") && !$0.contains("|") }
        let payload = Array("v1|\(id)|\(tier)|\(expiry)|\(cleanApps.joined(separator: ","))".utf8)
        let mac = Array(HMAC<SHA256>.authenticationCode(for: payload, using: signingKey))
        return Self.hex(payload) + "." + Self.hex(mac)
    }

    public func authenticate(token: String, app: String?) -> Principal? {
        guard let signingKey else { return nil }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let payload = Self.bytes(hex: String(parts[0])),
            let mac = Self.bytes(hex: String(parts[1])),
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: payload, using: signingKey)
        else { return nil }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0] == "v1", let expiry = Int(fields[3]),
            expiry >= Int(Date().timeIntervalSince1970)
        else {
            return nil
        }
        let id = String(fields[1])
        // A revoked key's tokens die with it.
        guard let entry = entries()[id] ?? entries(fresh: true)[id], !entry.revoked else { return nil }
        let apps = fields[4].split(separator: ",").map(String.init)
        if let app, !apps.isEmpty, !apps.contains(app) { return nil }
        return .key(id: id, tier: entry.tier)
    }
}
