/// A MessagePack decode failure: the byte offset where it was detected and what is wrong.
///
/// `message` says what ("duplicate key \"a\""); `description` adds where ("duplicate key \"a\" at byte 17").
/// Match on `kind` rather than on the message text.
public struct MessagePackError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Zero-based byte offset into the input: the first byte of the offending value (its format byte),
    /// or of the trailing data.
    public let offset: Int
    /// What is wrong, without the offset.
    public let message: String
    /// The class of failure, stable for matching in code and tests.
    public let kind: Kind

    public var description: String { "\(message) at byte \(offset)" }

    init(_ kind: Kind, at offset: Int, _ message: String) {
        self.kind = kind
        self.offset = offset
        self.message = message
    }

    /// The class of a ``MessagePackError``.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private enum Code: Sendable, Hashable {
            case unexpectedEnd
            case trailingData
            case invalidFormat
            case unsupportedExtension
            case nonFiniteNumber
            case invalidUTF8
            case nonStringKey
            case duplicateKey
            case tooDeep
            case tooLarge
        }

        private let code: Code
        private init(_ code: Code) { self.code = code }

        /// The input stops inside a value, or a value declares more bytes or elements than remain.
        public static let unexpectedEnd = Kind(.unexpectedEnd)
        /// Bytes follow the value.
        public static let trailingData = Kind(.trailingData)
        /// The format byte 0xC1, which the specification never assigns.
        public static let invalidFormat = Kind(.invalidFormat)
        /// An ext or fixext value (application-defined types, the timestamp included).
        public static let unsupportedExtension = Kind(.unsupportedExtension)
        /// A float that is NaN or infinite, which a JSON value cannot hold.
        public static let nonFiniteNumber = Kind(.nonFiniteNumber)
        /// A string whose bytes are not well-formed UTF-8.
        public static let invalidUTF8 = Kind(.invalidUTF8)
        /// A map key that is not a string.
        public static let nonStringKey = Kind(.nonStringKey)
        /// A map key that occurs twice (forbidden for JSON by I-JSON, RFC 7493).
        public static let duplicateKey = Kind(.duplicateKey)
        /// Arrays and maps nested deeper than the allowed maximum.
        public static let tooDeep = Kind(.tooDeep)
        /// An array or map with more elements than the allowed maximum.
        public static let tooLarge = Kind(.tooLarge)

        public var description: String { "\(code)" }
    }
}
