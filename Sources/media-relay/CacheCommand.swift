import ArgumentParser
import AsyncHTTPClient
import FalQueue
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import RelayCore

/// Trust settings for the command line's HTTP clients: the system roots plus `--ca` and `SSL_CERT_FILE`.
enum ClientTLS {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func configuration(ca: String?, environment: [String: String]) throws(Failure) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        var roots: [NIOSSLCertificate] = []
        for (path, origin) in [(ca, "--ca"), (environment["SSL_CERT_FILE"], "SSL_CERT_FILE")] {
            guard let path, !path.isEmpty else { continue }
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(path)
            } catch {
                throw Failure(description: "cannot read the CA file \(path) (\(origin)): \(error)")
            }
            guard !certificates.isEmpty else {
                throw Failure(description: "the CA file \(path) (\(origin)) holds no PEM certificate")
            }
            roots += certificates
        }
        if !roots.isEmpty {
            tls.additionalTrustRoots = [.certificates(roots)]
        }
        return tls
    }
}

/// `media-relay cache stats|purge`: the admin API of a running relay, from a terminal.
struct Cache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cache statistics and purges on a running relay (its admin API; needs an admin key).",
        subcommands: [Stats.self, Purge.self]
    )

    struct Connection: ParsableArguments {
        @Option(
            help: ArgumentHelp("The relay (default $MEDIA_RELAY_HOST, else http://127.0.0.1:8080)", valueName: "url")
        )
        var host: String?
        @Option(help: ArgumentHelp("An admin-tier key (default $RELAY_ADMIN_KEY, else $FAL_KEY)", valueName: "key"))
        var adminKey: String?
        @Option(
            help: ArgumentHelp("Extra PEM CA certificate(s) to trust; SSL_CERT_FILE is honoured too", valueName: "pem")
        )
        var ca: String?

        /// Sends one admin call and returns the JSON answer; any failure is printed and exits non-zero.
        func call(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil) async throws -> JSONValue {
            let environment = ProcessInfo.processInfo.environment
            var base =
                host ?? environment["MEDIA_RELAY_HOST"].flatMap { $0.isEmpty ? nil : $0 } ?? "http://127.0.0.1:8080"
            while base.hasSuffix("/") { base.removeLast() }
            guard base.hasPrefix("http://") || base.hasPrefix("https://") else {
                throw ValidationError("invalid --host \"\(base)\": expected an http:// or https:// URL")
            }
            let key = [adminKey, environment["RELAY_ADMIN_KEY"], environment["FAL_KEY"]].compactMap { $0 }.first {
                !$0.isEmpty
            }
            guard let key else { throw ValidationError("no admin key: pass --admin-key or set RELAY_ADMIN_KEY") }
            let tls: TLSConfiguration
            do {
                tls = try ClientTLS.configuration(ca: ca, environment: environment)
            } catch {
                throw ValidationError(error.description)
            }
            let http = HTTPClient(
                eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                configuration: .init(tlsConfiguration: tls, timeout: .init(connect: .seconds(10), read: .seconds(120)))
            )
            do {
                let answer = try await exchange(http, base: base, path: path, key: key, method: method, body: body)
                try? await http.shutdown()
                return answer
            } catch {
                try? await http.shutdown()
                throw error
            }
        }

        private func exchange(
            _ http: HTTPClient,
            base: String,
            path: String,
            key: String,
            method: HTTPMethod,
            body: JSONValue?
        ) async throws -> JSONValue {
            var request = HTTPClientRequest(url: base + path)
            request.method = method
            request.headers.add(name: "Authorization", value: "Key \(key)")
            request.headers.add(name: "Accept", value: "application/json")
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body.serialized()))
            }
            let response: HTTPClientResponse
            let bytes: ByteBuffer
            do {
                response = try await http.execute(request, timeout: .seconds(120))
                bytes = try await response.body.collect(upTo: 16 << 20)
            } catch {
                Terminal.error("cannot reach \(base): \(error)")
                throw ExitCode(1)
            }
            let json = try? bytes.withUnsafeReadableBytes { raw in try JSONValue(parsing: raw) }
            guard (200..<300).contains(response.status.code), let json else {
                // fal's queue errors carry `detail`, its Platform API's `error.message`.
                let detail =
                    json.map { FalErrorText.describe(detail: $0["detail"] ?? $0["error"]?["message"] ?? $0) }
                    ?? String(buffer: bytes)
                Terminal.error("\(response.status.code) \(response.status.reasonPhrase): \(detail)")
                throw ExitCode(1)
            }
            return json
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the relay's cache and traffic statistics.")

        @OptionGroup var connection: Connection
        @Flag(help: "Print the raw JSON") var json = false

        func run() async throws {
            let stats = try await connection.call(.GET, "/admin/stats")
            if json {
                print(String(decoding: stats.serialized(), as: UTF8.self))
                return
            }
            for line in Self.summary(stats) {
                print(line)
            }
        }

        /// A readable summary: one `name  value` line per figure.
        static func summary(_ stats: JSONValue) -> [String] {
            func number(_ path: String...) -> String {
                var value: JSONValue? = stats
                for key in path { value = value?[key] }
                guard let double = value?.doubleValue else { return "-" }
                return double == double.rounded() ? String(Int(double)) : String(format: "%.1f", double)
            }
            let rows: [(String, String)] = [
                ("results cached", number("cache", "results")),
                ("store bytes", number("cache", "store_bytes")),
                ("store budget bytes", number("cache", "store_budget_bytes")),
                ("evictions", number("cache", "evictions")),
                ("submissions", number("submissions", "total")),
                ("  hits", number("submissions", "hit")),
                ("  coalesced", number("submissions", "coalesced")),
                ("  misses", number("submissions", "miss")),
                ("  bypass", number("submissions", "bypass")),
                ("upstream jobs started", number("upstream", "jobs_started")),
                ("jobs in flight", number("upstream", "jobs_in_flight")),
                ("upstream jobs avoided", number("dedup", "upstream_jobs_avoided")),
                ("GPU seconds saved", number("dedup", "gpu_seconds_saved")),
                ("HTTP requests", number("http_requests")),
                ("uptime seconds", number("uptime_seconds")),
            ]
            return rows.map { name, value in name.padding(toLength: 24, withPad: " ", startingAt: 0) + value }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Remove cached results by RequestKey or model, or a media file (and the results that point at it)."
        )

        @OptionGroup var connection: Connection
        @Option(help: ArgumentHelp("A RequestKey (32 hex digits, as in Cache-Status key=\"…\")", valueName: "hex"))
        var requestKey: String?
        @Option(help: ArgumentHelp("Every result of this model", valueName: "id")) var model: String?
        @Option(
            help: ArgumentHelp("A media file's digest (32 hex digits, as in /files/<digest>.<ext>)", valueName: "hex")
        )
        var digest: String?

        func validate() throws {
            guard [requestKey, model, digest].compactMap({ $0 }).count == 1 else {
                throw ValidationError("give exactly one of --request-key, --model, --digest")
            }
        }

        func run() async throws {
            let body: JSONValue
            if let requestKey {
                body = ["key": .string(requestKey)]
            } else if let model {
                body = ["model": .string(model)]
            } else {
                body = ["digest": .string(digest ?? "")]
            }
            let answer = try await connection.call(.POST, "/admin/purge", body: body)
            let purged = answer["purged"]?.objectValue ?? [:]
            print(purged.keys.sorted().map { "\($0)=\(purged[$0]?.intValue ?? 0)" }.joined(separator: " "))
        }
    }
}
