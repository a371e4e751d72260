import Foundation
import RelayCore

/// What `media-relay canonicalize` prints: the bytes (or the key) the relay derives from a request's input.
public enum CanonicalForm {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// - Returns: the canonical JSON bytes, or the RequestKey's hex when `printKey`.
    public static func render(
        input: [UInt8],
        model modelID: String?,
        printKey: Bool,
        catalogPath: String,
        dataDirectory: String,
        relayURLs: [String] = []
    ) throws -> [UInt8] {
        let document: JSONValue
        do {
            document = try JSONValue(parsing: input)
        } catch {
            throw Failure(description: "invalid JSON: \(error.description)")
        }
        guard let modelID else {
            guard !printKey else { throw Failure(description: "--key needs --model (the key covers the model id)") }
            return document.canonicalBytes()
        }
        guard let data = FileManager.default.contents(atPath: catalogPath) else {
            throw Failure(description: "cannot read the model catalog \(catalogPath) (use --catalog)")
        }
        let catalog = try ModelCatalog(json: [UInt8](data))
        guard let model = catalog.model(modelID) else {
            throw Failure(description: "unknown model \(modelID) in \(catalogPath)")
        }
        guard let object = document.objectValue else { throw Failure(description: "the input must be a JSON object") }
        let normalised: ModelInput
        do {
            normalised = try ModelInput(model: model, input: object, mediaURLs: mediaURLs(relayURLs))
        } catch {
            throw Failure(description: "the input is not valid for \(modelID): \(error.message)")
        }
        guard printKey else { return normalised.canonicalBytes }
        let secretPath = (dataDirectory as NSString).appendingPathComponent("secret")
        guard let secret = FileManager.default.contents(atPath: secretPath), secret.count >= KeyedHasher.secretSize
        else {
            throw Failure(description: "no deployment secret at \(secretPath): keys depend on it (use --data-dir)")
        }
        let key = RequestKey(input: normalised, hasher: KeyedHasher(secret: [UInt8](secret)))
        return Array(key.digest.hex.utf8)
    }

    /// This relay's own media URLs, keyed by their bytes as the relay keys them: the names and ports of the default
    /// listeners (127.0.0.1, localhost and ::1 on 8080 and 8443), and those of each of `relayURLs` (its public URL,
    /// or any other way clients reach it). Upload URLs are keyed by their text here (their bytes are on the relay).
    static func mediaURLs(_ relayURLs: [String]) -> RelayMediaURLs {
        var names: Set<String> = ["localhost", "127.0.0.1", "::1"]
        var ports: Set<Int> = [8080, 8443]
        for text in relayURLs {
            guard let url = URLComponents(string: text), let host = url.host else { continue }
            names.insert(host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]")))
            ports.insert(url.port ?? (url.scheme?.lowercased() == "http" ? 80 : 443))
        }
        return RelayMediaURLs(hostNames: names, ports: ports)
    }
}
