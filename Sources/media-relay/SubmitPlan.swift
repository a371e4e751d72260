import FalQueue
import Foundation
import NIOSSL
import RelayCore

/// Everything `submit` needs, validated before any network traffic.
struct SubmitPlan: Sendable {
    let endpoint: EndpointID
    /// `scheme://authority[/prefix]`, without a trailing slash.
    let host: String
    let key: String?
    let body: [UInt8]
    let outputDirectory: String
    let printJSON: Bool
    let timeoutSeconds: Int
    let tls: TLSConfiguration

    init(command: Submit, environment: [String: String]) throws(SubmitFailure) {
        guard let endpoint = EndpointID(command.model) else {
            throw .usage("invalid model \"\(command.model)\": expected owner/alias[/path], e.g. fal-ai/flux/dev")
        }
        self.endpoint = endpoint
        var host =
            command.host ?? environment["MEDIA_RELAY_HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? "http://127.0.0.1:8080"
        while host.hasSuffix("/") { host.removeLast() }
        guard FalURL.origin(of: host) != nil else {
            throw .usage("invalid --host \"\(host)\": expected an http:// or https:// URL")
        }
        self.host = host
        self.key = (command.key ?? environment["FAL_KEY"]).flatMap { $0.isEmpty ? nil : $0 }
        self.body = try Self.readInput(command.input)
        self.outputDirectory = command.out ?? "."
        self.printJSON = command.json
        guard command.timeout > 0 else { throw .usage("--timeout must be a positive number of seconds") }
        self.timeoutSeconds = command.timeout

        do {
            self.tls = try ClientTLS.configuration(ca: command.ca, environment: environment)
        } catch {
            throw .usage(error.description)
        }
    }

    /// The request body: `--input` as JSON text, `@file` or `-` (stdin); it must be one JSON object.
    private static func readInput(_ argument: String) throws(SubmitFailure) -> [UInt8] {
        let bytes: [UInt8]
        let source: String
        if argument == "-" {
            bytes = [UInt8](FileHandle.standardInput.readDataToEndOfFile())
            source = "stdin"
        } else if argument.hasPrefix("@") {
            let path = String(argument.dropFirst())
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .usage("cannot read the input file \(path)")
            }
            bytes = [UInt8](data)
            source = path
        } else {
            bytes = Array(argument.utf8)
            source = "--input"
        }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: bytes)
        } catch {
            throw .usage("invalid JSON in \(source): \(error)")
        }
        guard case .object = value else {
            throw .usage("the input (\(source)) must be a JSON object, like {\"prompt\":\"…\"}")
        }
        return value.serialized()
    }
}
