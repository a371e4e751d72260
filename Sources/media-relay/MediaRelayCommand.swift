import ArgumentParser
import Foundation
import RelayServer

/// `media-relay`: the relay server and its management commands.
@main
struct MediaRelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "media-relay",
        abstract: "An edge relay for generative-media APIs that speaks the fal queue and run protocols.",
        subcommands: [Serve.self, Keys.self, Canonicalize.self],
        defaultSubcommand: Serve.self
    )
}

/// `media-relay serve`: runs the relay.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the relay. Flags override RELAY_… environment variables, which override the config file."
    )

    @Option(help: "JSON config file (default: Config/relay.json when it exists)") var config: String?
    @Option(help: "Data directory: blobs, results, keys, tls (default ./data)") var dataDir: String?
    @Option(help: "Plain HTTP listener HOST:PORT, or off (default 127.0.0.1:8080)") var http: String?
    @Option(help: "HTTPS listener HOST:PORT, or off (default 127.0.0.1:8443)") var https: String?
    @Option(help: "PEM certificate chain (default: a development CA's certificate)") var tlsCert: String?
    @Option(help: "PEM private key for --tls-cert") var tlsKey: String?
    @Option(help: "Event loop threads (default: the core count)") var eventLoopThreads: String?
    @Option(help: "Synthetic upstream timings: 1 realistic, 0 instant") var syntheticTimeScale: String?
    @Option(help: "Concurrent synthetic generations (GPU slots, default 2)") var syntheticSlots: String?
    @Option(help: "Model catalog JSON file") var catalog: String?
    @Option(help: "Folder of the browser UI (playground at /, /dashboard), or off") var uiDir: String?
    @Option(help: "Comma-separated Host names of the queue API (default 127.0.0.1,[::1])") var queueHosts: String?
    @Option(help: "Comma-separated Host names of the run API (default localhost)") var runHosts: String?
    @Option(help: "Origin used in media URLs (default: the HTTPS listener)") var publicURL: String?
    @Option(help: "Largest JSON body in bytes (default 10 MiB)") var maxJSONBodyBytes: String?
    @Option(help: "Log level: trace … critical (default info)") var logLevel: String?
    @Option(help: "Result cache freshness in seconds (default 86400)") var resultTTLSeconds: String?
    @Option(help: "Cache scope: global or per-key") var cacheScope: String?
    @Option(help: "Rate limits: on or off") var rateLimits: String?
    @Option(help: "Media store byte budget; least recently used media are evicted beyond it") var cacheMaxBytes: String?
    @Option(help: "fal-compatible queue API to relay every model to (fal, or another MediaRelay)") var origin: String?
    @Option(help: "API key for --origin (default: FAL_KEY)") var originKey: String?
    @Option(help: "Extra PEM CA to trust for --origin") var originCa: String?

    func run() async throws {
        let flags: [String: String?] = [
            "config": config, "data_dir": dataDir, "http": http, "https": https, "tls_cert": tlsCert, "tls_key": tlsKey,
            "event_loop_threads": eventLoopThreads, "synthetic_time_scale": syntheticTimeScale,
            "synthetic_slots": syntheticSlots, "catalog": catalog, "ui_dir": uiDir, "queue_hosts": queueHosts, "run_hosts": runHosts,
            "public_url": publicURL, "max_json_body_bytes": maxJSONBodyBytes, "log_level": logLevel,
            "result_ttl_seconds": resultTTLSeconds, "cache_scope": cacheScope, "rate_limits": rateLimits,
            "cache_max_bytes": cacheMaxBytes, "origin": origin, "origin_key": originKey, "origin_ca": originCa,
        ]
        let defaultFile = FileManager.default.fileExists(atPath: "Config/relay.json") ? "Config/relay.json" : nil
        let configuration: RelayConfiguration
        do {
            configuration = try RelayConfiguration.load(configFile: defaultFile, flags: flags.compactMapValues { $0 })
        } catch {
            throw ValidationError(error.description)
        }
        try await RelayApplication(configuration: configuration).run()
    }
}

/// `media-relay keys`: API keys, stored hashed in the data directory.
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and revoke API keys (stored as SHA-256 hashes; changes apply without restart).",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Location: ParsableArguments {
        @Option(help: "Data directory (default ./data, or RELAY_DATA_DIR)") var dataDir: String?

        var store: APIKeyStore {
            APIKeyStore(dataDirectory: dataDir ?? ProcessInfo.processInfo.environment["RELAY_DATA_DIR"] ?? "./data")
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a key; prints it as the last line (shown only once).")
        @Option(help: "signed-in, pro, enterprise or admin") var tier: String = "signed-in"
        @OptionGroup var location: Location

        func run() async throws {
            do {
                let (key, entry) = try location.store.create(tier: tier)
                print("created key \(entry.id) (tier \(entry.tier)); store it now, it is not shown again:")
                print(key)
            } catch {
                throw ValidationError(error.description)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List key ids, tiers and states (never the keys).")
        @OptionGroup var location: Location

        func run() async throws {
            for entry in try location.store.list() {
                print("\(entry.id)\t\(entry.tier)\t\(entry.created)\t\(entry.revoked ? "revoked" : "active")")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by id; effective at once.")
        @Argument(help: "The key id (the part before the colon)") var id: String
        @OptionGroup var location: Location

        func run() async throws {
            guard try location.store.revoke(id: id) else {
                throw ValidationError("no key with id \(id)")
            }
            print("revoked \(id)")
        }
    }
}

/// `media-relay canonicalize`: explains a cache miss by showing what the relay keys on.
struct Canonicalize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read one JSON document on stdin and print its canonical form (RFC 8785).",
        discussion: """
            With --model, the model's catalog rules apply first (defaults filled in, presets expanded, \
            ignored fields dropped). With --key, the RequestKey (hex) is printed instead, as this relay's data \
            directory keys it (global scope).
            """
    )

    @Option(help: "Apply this model's normalisation from the catalog") var model: String?
    @Flag(help: "Print the RequestKey in hex instead of the canonical bytes (needs --model)") var key = false
    @Option(help: "Model catalog (default Config/models.json)") var catalog: String = "Config/models.json"
    @Option(help: "Data directory holding the deployment secret (default ./data, or RELAY_DATA_DIR)") var dataDir: String?

    func run() async throws {
        let input = FileHandle.standardInput.readDataToEndOfFile()
        do {
            let output = try CanonicalForm.render(
                input: [UInt8](input),
                model: model,
                printKey: key,
                catalogPath: catalog,
                dataDirectory: dataDir ?? ProcessInfo.processInfo.environment["RELAY_DATA_DIR"] ?? "./data"
            )
            FileHandle.standardOutput.write(Data(output + [UInt8(ascii: "\n")]))
        } catch {
            FileHandle.standardError.write(Data("media-relay canonicalize: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}
