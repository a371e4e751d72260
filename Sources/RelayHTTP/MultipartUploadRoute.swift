import NIOHTTP1
public import RelayCore

/// One step of fal's two multipart upload flows (PROTOCOL.md §7.1 c, §7.2).
///
/// - v3 (Python above 100 MiB): `POST /files/upload/multipart` gives `access_url` (the upload's stable file URL,
///   `/files/uploads/<file>/<name>`) and `uploadId`; parts go to `PUT {access_url}/multipart/{uploadId}/{n}` and the
///   completion to `POST {access_url}/multipart/{uploadId}/complete`, each with the storage token or key.
/// - initiate (fal-js above 90 MB): `POST /storage/upload/initiate-multipart` gives `upload_url`
///   (`/storage/upload/multipart/<upload>/<token>`, signed) and `file_url`; parts go to `PUT {upload_url}/{n}` and the
///   completion to `POST {upload_url}/complete`, with no credentials but the signed URL. The same completion is also
///   `POST /storage/upload/complete-multipart` `{upload_url, parts}` with the key (the name fal's server proxy allows).
public enum MultipartUploadStep: Sendable, Hashable {
    case create
    /// `number` is 0 when the segment is not a number (answered 400, as an out-of-range number is).
    case part(file: Digest128, upload: Digest128, number: Int)
    case complete(file: Digest128, upload: Digest128)
    case initiate
    case signedPart(upload: Digest128, token: String, number: Int)
    case signedComplete(upload: Digest128, token: String)
    /// `POST /storage/upload/complete-multipart`: the upload named by the `upload_url` in the body.
    case completeByURL

    /// Whether the step streams a body to disk (`UploadExchange`) rather than answering a small JSON request.
    var isPart: Bool {
        switch self {
        case .part, .signedPart: true
        default: false
        }
    }
}

extension Router {
    /// `files/uploads/<file>/<name>/multipart/<upload>/<n | complete>` (7 segments).
    static func v3MultipartStep(_ segments: [Substring], method: HTTPMethod) -> Route {
        guard segments.count == 7, segments[4] == "multipart", let file = hexID(segments[2]),
            let upload = hexID(segments[5])
        else { return .notFound }
        if segments[6] == "complete" {
            return method == .POST ? .multipartUpload(.complete(file: file, upload: upload)) : .methodNotAllowed
        }
        return method == .PUT
            ? .multipartUpload(.part(file: file, upload: upload, number: partNumber(segments[6])))
            : .methodNotAllowed
    }

    /// `storage/upload/multipart/<upload>/<token>/<n | complete>` (6 segments).
    static func signedMultipartStep(_ segments: [Substring], method: HTTPMethod) -> Route {
        guard segments.count == 6, let upload = hexID(segments[3]), isSignedToken(segments[4]) else { return .notFound }
        let token = String(segments[4])
        if segments[5] == "complete" {
            return method == .POST ? .multipartUpload(.signedComplete(upload: upload, token: token)) : .methodNotAllowed
        }
        return method == .PUT
            ? .multipartUpload(.signedPart(upload: upload, token: token, number: partNumber(segments[5])))
            : .methodNotAllowed
    }

    /// The signed completion of the `initiate-multipart` upload whose `upload_url` this is (any origin and query).
    static func signedCompletion(uploadURL: String) -> MultipartUploadStep? {
        var rest = uploadURL[...]
        if let colon = rest.firstIndex(of: ":"), rest[colon...].hasPrefix("://") {
            rest = rest[rest.index(colon, offsetBy: 3)...]
            guard let slash = rest.firstIndex(of: "/") else { return nil }
            rest = rest[slash...]
        }
        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) { rest = rest[..<query] }
        guard rest.hasPrefix("/") else { return nil }
        var segments = rest.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        segments.append("complete")
        guard segments.count == 6, segments[0] == "storage", segments[1] == "upload", segments[2] == "multipart",
            case .multipartUpload(let step) = signedMultipartStep(segments, method: .POST)
        else { return nil }
        return step
    }

    private static func hexID(_ text: Substring) -> Digest128? {
        guard let id = Digest128(hex: text), id.hex == text else { return nil }
        return id
    }

    /// A decimal part number; 0 for anything else (not a number, or absurdly long).
    private static func partNumber(_ text: Substring) -> Int {
        guard (1...9).contains(text.utf8.count), text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return 0 }
        return Int(text) ?? 0
    }

    /// A signed upload token: hex digits and one `.`, of a sane length (as `uploadPut`'s).
    private static func isSignedToken(_ token: Substring) -> Bool {
        (16...1024).contains(token.utf8.count)
            && token.utf8.allSatisfy { Hex.value($0) != nil || $0 == UInt8(ascii: ".") }
    }
}
