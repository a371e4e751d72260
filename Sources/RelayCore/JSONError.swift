/// A JSON parse failure: the byte offset where it was detected and what is wrong, in words a user can act on.
///
/// `message` says what ("duplicate key \"a\""); `description` adds where ("duplicate key \"a\" at byte 17").
/// Match on `kind` rather than on the message text.
public struct JSONError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Zero-based byte offset into the input where the problem was detected.
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

    /// The class of a ``JSONError``.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private enum Code: Sendable, Hashable {
            case emptyInput
            case unexpectedEnd
            case unexpectedCharacter
            case trailingData
            case trailingComma
            case invalidNumber
            case numberOutOfRange
            case invalidUTF8
            case controlCharacter
            case invalidEscape
            case loneSurrogate
            case duplicateKey
            case tooDeep
        }

        private let code: Code
        private init(_ code: Code) { self.code = code }

        /// The input holds no value (empty or only whitespace).
        public static let emptyInput = Kind(.emptyInput)
        /// The input stops in the middle of a value.
        public static let unexpectedEnd = Kind(.unexpectedEnd)
        /// A byte that cannot start or continue the value here.
        public static let unexpectedCharacter = Kind(.unexpectedCharacter)
        /// Something other than whitespace follows the value.
        public static let trailingData = Kind(.trailingData)
        /// A comma directly before `]` or `}`.
        public static let trailingComma = Kind(.trailingComma)
        /// A number that breaks the JSON grammar (`01`, `+1`, `.5`, `1.`, `1e`).
        public static let invalidNumber = Kind(.invalidNumber)
        /// A number too large in magnitude for a Double.
        public static let numberOutOfRange = Kind(.numberOutOfRange)
        /// Bytes in a string that are not well-formed UTF-8.
        public static let invalidUTF8 = Kind(.invalidUTF8)
        /// A byte below 0x20 inside a string that is not escaped.
        public static let controlCharacter = Kind(.controlCharacter)
        /// A backslash escape JSON does not define, or a malformed `\u` escape.
        public static let invalidEscape = Kind(.invalidEscape)
        /// A `\u` escape for half of a surrogate pair without its other half.
        public static let loneSurrogate = Kind(.loneSurrogate)
        /// An object member name that occurs twice (forbidden by I-JSON, RFC 7493).
        public static let duplicateKey = Kind(.duplicateKey)
        /// Arrays and objects nested deeper than the allowed maximum.
        public static let tooDeep = Kind(.tooDeep)

        public var description: String { "\(code)" }
    }
}
