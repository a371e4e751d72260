/// Why `submit` stopped, with the exit status to report.
struct SubmitFailure: Error, Sendable, CustomStringConvertible {
    private enum Code: Int32 {
        case failed = 1
        case usage = 2
    }

    private let code: Code
    let message: String

    var exitCode: Int32 { code.rawValue }
    var description: String { message }

    /// Bad arguments or input: nothing was sent.
    static func usage(_ message: String) -> SubmitFailure { SubmitFailure(code: .usage, message: message) }
    /// The request, its result or a download failed.
    static func failed(_ message: String) -> SubmitFailure { SubmitFailure(code: .failed, message: message) }
}
