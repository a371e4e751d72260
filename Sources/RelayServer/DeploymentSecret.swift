import Foundation
import RelayCore

/// The per-deployment secret that keys RequestKeys and blob digests (`<data-dir>/secret`, 0600, made once).
enum DeploymentSecret {
    static func load(dataDirectory: String) throws(ConfigurationError) -> [UInt8] {
        let path = (dataDirectory as NSString).appendingPathComponent("secret")
        if let data = FileManager.default.contents(atPath: path) {
            guard data.count >= KeyedHasher.secretSize else {
                throw ConfigurationError(
                    "\(path) is shorter than \(KeyedHasher.secretSize) bytes; restore it from backup or delete it (all cache keys change)"
                )
            }
            return [UInt8](data)
        }
        var generator = SystemRandomNumberGenerator()
        let secret = (0..<KeyedHasher.secretSize).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let temporary = path + ".tmp-\(getpid())"
        guard
            FileManager.default.createFile(
                atPath: temporary,
                contents: Data(secret),
                attributes: [.posixPermissions: 0o600]
            ),
            rename(temporary, path) == 0
        else {
            throw ConfigurationError("cannot write \(path)")
        }
        return secret
    }
}
