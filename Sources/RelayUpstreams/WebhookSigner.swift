import Crypto
import RelayCore

/// Signs webhook bodies so that a receiver can tell they come from this relay and were not replayed from long ago.
///
/// The key is derived from the deployment secret, never the secret itself: `HMAC-SHA256(secret, "webhook-signing-v1")`.
/// A receiver holding the derived key learns nothing that keys cache entries or media URLs. Signature:
/// `v1=<hex HMAC-SHA256(key, "<webhook id>.<unix seconds>.<body>")>` in `X-Relay-Webhook-Signature`.
public struct WebhookSigner: Sendable {
    /// Domain separation label of the derived key; a new scheme gets a new label.
    public static let keyLabel = "webhook-signing-v1"

    /// The derived key's bytes (`SymmetricKey` is not `Sendable`; one is made per signature).
    private let keyBytes: [UInt8]

    public init(deploymentSecret: [UInt8]) {
        let derived = HMAC<SHA256>.authenticationCode(
            for: Array(Self.keyLabel.utf8),
            using: SymmetricKey(data: deploymentSecret)
        )
        self.keyBytes = Array(derived)
    }

    /// The derived signing key in hex, for the operator to hand to receivers (`media-relay` never logs it).
    public var signingKeyHex: String {
        Self.hex(keyBytes)
    }

    /// The `X-Relay-Webhook-Signature` value for one delivery.
    public func signature(id: String, timestamp: Int64, body: [UInt8]) -> String {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: keyBytes))
        hmac.update(data: Array("\(id).\(timestamp).".utf8))
        hmac.update(data: body)
        return "v1=" + Self.hex(hmac.finalize())
    }

    private static func hex(_ bytes: some Sequence<UInt8>) -> String {
        var text: [UInt8] = []
        for byte in bytes {
            text.append(Hex.digit(byte >> 4))
            text.append(Hex.digit(byte & 0x0F))
        }
        return String(decoding: text, as: UTF8.self)
    }
}
