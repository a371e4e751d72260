import Dispatch
import Foundation
import NIOSSL
import Testing

@testable import RelayServer

// MARK: - Helpers

// Members rather than top-level functions, so helpers elsewhere in this test target cannot clash with them.
extension DevelopmentCertificateAuthorityTests {
    struct FileContents: Equatable {
        var caCertificate: Data
        var caPrivateKey: Data
        var serverCertificateChain: Data
        var serverPrivateKey: Data
    }

    func contents(_ paths: DevelopmentCertificateAuthority.Paths) throws -> FileContents {
        func read(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }
        return FileContents(
            caCertificate: try read(paths.caCertificate),
            caPrivateKey: try read(paths.caPrivateKey),
            serverCertificateChain: try read(paths.serverCertificateChain),
            serverPrivateKey: try read(paths.serverPrivateKey)
        )
    }

    func withTemporaryDirectory(_ body: (String) throws -> Void) throws {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("dev-ca-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        try body(path)
    }

    func permissions(of path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let mode = try #require(attributes[.posixPermissions] as? NSNumber)
        return mode.intValue & 0o777
    }

    func expectLoadsInNIOSSL(
        _ paths: DevelopmentCertificateAuthority.Paths,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let certificates = try NIOSSLCertificate.fromPEMFile(paths.serverCertificateChain)
        #expect(certificates.count == 2, sourceLocation: sourceLocation)
        let key = try NIOSSLPrivateKey(file: paths.serverPrivateKey, format: .pem)
        let caCertificates = try NIOSSLCertificate.fromPEMFile(paths.caCertificate)
        #expect(caCertificates.count == 1, sourceLocation: sourceLocation)
        #expect(certificates.last == caCertificates.first, sourceLocation: sourceLocation)
        // BoringSSL refuses a private key that does not match the leaf.
        let configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: certificates.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        _ = try NIOSSLContext(configuration: configuration)
    }

    /// `openssl verify -x509_strict` of the leaf in `server.pem` against `ca.pem`, optionally at another time.
    func verifies(
        _ paths: DevelopmentCertificateAuthority.Paths,
        at time: Date? = nil,
        purpose: String? = nil
    ) throws -> Bool {
        var arguments = ["openssl", "verify", "-x509_strict"]
        if let time { arguments += ["-attime", String(Int(time.timeIntervalSince1970))] }
        if let purpose { arguments += ["-purpose", purpose] }
        arguments += ["-CAfile", paths.caCertificate, paths.serverCertificateChain]
        let result = try run(arguments)
        return result.status == 0 && result.output.contains(": OK")
    }

    func expectVerifies(
        _ paths: DevelopmentCertificateAuthority.Paths,
        purpose: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let ok = try verifies(paths, purpose: purpose)
        if !ok {
            let result = try run([
                "openssl", "verify", "-x509_strict", "-CAfile", paths.caCertificate, paths.serverCertificateChain,
            ])
            Issue.record("openssl verify failed: \(result.output)\(result.errorOutput)", sourceLocation: sourceLocation)
        }
    }

    /// `openssl x509 -checkend`: true when the certificate is still valid `seconds` from now.
    func checkEnd(_ path: String, seconds: Int) throws -> Bool {
        try run(["openssl", "x509", "-noout", "-checkend", String(seconds), "-in", path]).status == 0
    }

    func serial(of path: String) throws -> String {
        let result = try run(["openssl", "x509", "-noout", "-serial", "-in", path])
        try #require(result.status == 0)
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(
            of: "serial=",
            with: ""
        )
    }

    func notAfter(_ path: String) throws -> Date {
        let result = try run(["openssl", "x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", path])
        try #require(result.status == 0, "\(result.errorOutput)")
        // "notAfter=2026-12-25 10:00:00Z"
        let text = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "notAfter=", with: "")
            .replacingOccurrences(of: " ", with: "T")
        return try #require(ISO8601DateFormatter().date(from: text), "cannot parse \(result.output)")
    }

    /// The hex key identifier printed on the line after `heading` by `openssl x509 -text`.
    func keyIdentifier(after heading: String, in text: String) throws -> String {
        let lines = text.components(separatedBy: "\n")
        let index = try #require(lines.firstIndex { $0.contains(heading) })
        try #require(index + 1 < lines.count)
        let value = lines[index + 1].trimmingCharacters(in: .whitespaces)
        #expect(value.count >= 20, "key identifier line: \(value)")
        return value
    }

    func pythonInterpreter() throws -> String? {
        var candidates = ["python3.13", "python3"]
        if let configured = ProcessInfo.processInfo.environment["PYTHON"] { candidates.insert(configured, at: 0) }
        for candidate in candidates where try run([candidate, "-c", "import ssl"], timeout: 20).status == 0 {
            return candidate
        }
        return nil
    }

    struct CommandResult {
        var status: Int32
        var output: String
        var errorOutput: String
    }

    /// Runs a command found on `PATH`, with output captured through files (no pipe can fill up) and a time limit.
    func run(_ arguments: [String], timeout: TimeInterval = 30) throws -> CommandResult {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("dev-ca-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outputURL = scratch.appendingPathComponent("stdout")
        let errorURL = scratch.appendingPathComponent("stderr")
        for url in [outputURL, errorURL] {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path])
            }
        }
        let outputHandle = try FileHandle(forWritingTo: outputURL)
        let errorHandle = try FileHandle(forWritingTo: errorURL)
        defer {
            try? outputHandle.close()
            try? errorHandle.close()
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = outputHandle
        process.standardError = errorHandle
        let finished = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in finished.signal() }
        try process.run()
        if finished.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            finished.wait()
            Issue.record("\(arguments.joined(separator: " ")) timed out after \(timeout) s")
        }
        return CommandResult(
            status: process.terminationStatus,
            output: (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "",
            errorOutput: (try? String(contentsOf: errorURL, encoding: .utf8)) ?? ""
        )
    }
}
