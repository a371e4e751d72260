import Foundation
import RelayCore

/// One media file the result points at: an object with an http(s) `url`.
struct MediaReference: Sendable, Hashable {
    let url: String
    let contentType: String?

    /// Every media reference in document order, each URL once.
    static func all(in value: JSONValue) -> [MediaReference] {
        var found: [MediaReference] = []
        var seen: Set<String> = []
        func visit(_ value: JSONValue) {
            switch value {
            case .object(let object):
                if let url = object["url"]?.stringValue, WebAddress.origin(of: url) != nil, seen.insert(url).inserted {
                    found.append(MediaReference(url: url, contentType: object["content_type"]?.stringValue))
                }
                for (_, member) in object { visit(member) }
            case .array(let elements):
                elements.forEach(visit)
            default:
                break
            }
        }
        visit(value)
        return found
    }

    /// From the URL's path when it has a plausible extension, else from the content type, else `bin`.
    static func fileExtension(url: String, contentType: String?) -> String {
        let path = URL(string: url)?.path ?? ""
        let last = path.split(separator: "/").last.map(String.init) ?? ""
        if let dot = last.lastIndex(of: "."), dot != last.startIndex {
            let candidate = last[last.index(after: dot)...].lowercased()
            if (1...5).contains(candidate.count), candidate.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) {
                return candidate
            }
        }
        let type =
            (contentType ?? "").split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        let known: [String: String] = [
            "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif", "image/avif": "avif",
            "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov", "audio/wav": "wav",
            "audio/x-wav": "wav",
            "audio/wave": "wav", "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/flac": "flac", "text/plain": "txt",
            "application/json": "json", "model/gltf-binary": "glb",
        ]
        if let known = known[type] { return known }
        if let subtype = type.split(separator: "/").last, (1...5).contains(subtype.count),
            subtype.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) })
        {
            return String(subtype)
        }
        return "bin"
    }
}
