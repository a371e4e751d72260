import Crypto
public import RelayCore

/// Signs webhooks as fal signs them (PROTOCOL.md §11.4), so that a receiver written for fal verifies the relay's:
/// `X-Fal-Webhook-Signature` is the hex Ed25519 signature of
/// `<request id> \n <user id> \n <unix seconds> \n <hex SHA-256 of the raw body>`, and the public key is served as
/// a JWKS (`/.well-known/jwks.json`, `{"keys": [{"kty": "OKP", "crv": "Ed25519", "x", "kid", ...}]}`) for the
/// receiver to fetch instead of fal's.
///
/// The key pair is derived from the deployment secret (HKDF-SHA256, its own label): it survives restarts, every
/// node of a fleet (which shares the secret) signs with the same key, and the secret itself never leaves the relay.
public struct WebhookSigner: Sendable {
    /// HKDF `info` of the signing key's seed; a new scheme gets a new label.
    public static let keyLabel = "media-relay webhook ed25519 v1"

    /// The private key's 32-byte seed (`Curve25519.Signing.PrivateKey` is not `Sendable`; one is made per signature).
    private let seed: [UInt8]
    /// The raw 32-byte public key.
    public let publicKey: [UInt8]
    /// The key's id in the JWKS: the first 16 hex digits of the public key's SHA-256.
    public let keyID: String

    public init(deploymentSecret: [UInt8]) {
        let seed = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: deploymentSecret),
            info: Array(Self.keyLabel.utf8),
            outputByteCount: 32
        ).withUnsafeBytes { Array($0) }
        // A 32-byte seed is always a valid Ed25519 private key.
        let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        self.seed = seed
        self.publicKey = Array(key.publicKey.rawRepresentation)
        self.keyID = String(Self.hex(SHA256.hash(data: publicKey)).prefix(16))
    }

    /// The `X-Fal-Webhook-Signature` value for one attempt.
    public func signature(requestID: String, userID: String, timestamp: Int64, body: [UInt8]) -> String {
        let message = Self.message(requestID: requestID, userID: userID, timestamp: timestamp, body: body)
        // Signing with a key made from a valid seed cannot fail.
        let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        return Self.hex(try! key.signature(for: message))
    }

    /// What is signed: `request_id \n user_id \n timestamp \n sha256_hex(body)`.
    public static func message(requestID: String, userID: String, timestamp: Int64, body: [UInt8]) -> [UInt8] {
        Array("\(requestID)\n\(userID)\n\(timestamp)\n\(hex(SHA256.hash(data: body)))".utf8)
    }

    /// The JWKS document receivers fetch: this relay's one key.
    public var jwks: JSONValue {
        [
            "keys": [
                [
                    "kty": "OKP", "crv": "Ed25519", "x": .string(Self.base64URL(publicKey)), "kid": .string(keyID),
                    "use": "sig", "alg": "EdDSA",
                ]
            ]
        ]
    }

    /// RFC 4648 §5 without padding, as JWK wants it.
    static func base64URL(_ bytes: [UInt8]) -> String {
        var text = Base64.encode(bytes)
        while text.hasSuffix("=") { text.removeLast() }
        return String(text.map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 })
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        var text: [UInt8] = []
        for byte in bytes {
            text.append(Hex.digit(byte >> 4))
            text.append(Hex.digit(byte & 0x0F))
        }
        return String(decoding: text, as: UTF8.self)
    }
}
