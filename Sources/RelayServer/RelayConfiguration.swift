public import Foundation
public import Logging
import RelayCore

/// Everything `media-relay serve` can be told, with the built-in defaults.
///
/// Precedence (DESIGN.md "Configuration"): command-line flags > environment (`RELAY_…`) > config file > defaults.
/// Each setting has one name, spelled `data_dir` in the config file, `RELAY_DATA_DIR` in the environment and
/// `--data-dir` on the command line, so the three sources cannot drift apart.
public struct RelayConfiguration: Sendable {
    /// A listen address; nil means the listener is off.
    public struct Address: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `HOST:PORT`, `[v6]:PORT`; `off` disables (nil).
        static func parse(_ text: String) throws(ConfigurationError) -> Address? {
            if text.lowercased() == "off" { return nil }
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                (0...65535).contains(port)
            else {
                throw ConfigurationError("\"\(text)\" is not HOST:PORT (or off)")
            }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") {
                host = String(host.dropFirst().dropLast())
            }
            guard !host.isEmpty else { throw ConfigurationError("\"\(text)\" has no host") }
            return Address(host: host, port: port)
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public var dataDirectory = "./data"
    public var http: Address? = Address(host: "127.0.0.1", port: 8080)
    public var https: Address? = Address(host: "127.0.0.1", port: 8443)
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// TLS 1.2 cipher suites (OpenSSL names, `:`-separated); TLS 1.3's are fixed by BoringSSL and all modern.
    public var tls12Ciphers = RelayApplication.tls12CipherSuites
    public var eventLoopThreads = ProcessInfo.processInfo.activeProcessorCount
    public var syntheticTimeScale = 1.0
    public var syntheticSlots = 2
    /// The model catalog; relative paths are resolved against the config file's folder.
    public var catalogPath: String?
    /// The browser UI's folder (`/`, `/dashboard`); relative paths as for the catalog. nil: no UI.
    public var uiDirectory: String?
    public var queueHosts = ["127.0.0.1", "[::1]"]
    public var runHosts = ["localhost"]
    /// Absolute origin of media URLs; default: the HTTPS listener (else the HTTP one) as seen from this machine.
    public var publicURL: String?
    public var maxJSONBodyBytes = 10 * 1024 * 1024
    /// Largest upload (`PUT` of an initiated upload, v3 `POST /files/upload`); fal's single-request limit.
    public var maxUploadBytes = 100 * 1024 * 1024
    /// Lifetime of storage tokens and signed upload URLs, 10...3600 s.
    public var uploadTokenSeconds = 3600
    /// The whole of one multipart upload (fal's clients switch to multipart above 90–100 MB).
    public var maxMultipartUploadBytes = 1 << 30
    /// DNS names the development certificate covers besides `localhost` (e.g. `rest.fal.ai,v3.fal.media`).
    public var tlsExtraNames: [String] = []
    public var requestRetentionSeconds = 3600.0
    /// How long a cached result stays fresh when its model gives no `cache_ttl_seconds`.
    public var resultTTLSeconds = 86_400.0
    /// `global`: identical work is shared by every caller; `per-key`: only by requests of the same API key.
    public var perKeyCacheScope = false
    /// Byte budget of the media store (LRU eviction between watermarks); nil = unbounded.
    public var cacheMaxBytes: Int?
    /// A fal-compatible queue API to send every model to (fal itself, or another MediaRelay), instead of the synthetic
    /// generator; models whose catalog entry says `"upstream": "origin"` go there too.
    public var origin: String?
    public var originKey: String?
    public var originCA: String?
    /// Per-tier rate limits (anonymous 20, signed-in 100, pro 500 submissions a minute; reads apart).
    public var rateLimits = true
    public var enterpriseRequestsPerMinute = 2000
    public var logLevel = Logger.Level.info
    /// `fal_webhook` delivery: let loopback/private targets through, retry schedule, per-attempt timeout, bounds.
    public var webhookAllowPrivate = false
    public var webhookRetryBaseMilliseconds = 5_000
    public var webhookMaxAttempts = 6
    public var webhookTimeoutSeconds = 15
    public var webhookConcurrency = 16
    public var webhookQueueSize = 10_000
    /// A connection must send a whole request head within this time (slowloris); TLS handshakes too.
    public var headerTimeoutSeconds = 10.0
    /// Keep-alive connections idle longer are closed.
    public var idleTimeoutSeconds = 75.0
    /// A request body that stalls this long is answered 408.
    public var bodyTimeoutSeconds = 30.0
    public var maxHeaderBytes = 32 * 1024
    public var maxURLBytes = 8 * 1024
    public var maxConnections = 16_000
    public var maxConnectionsPerIP = 1_024
    public var sseKeepAliveSeconds: Int64 = 15
    public var logFormat = LogFormat.logfmt
    /// Events kept per job for replay (late joiners, resumes); older ones are dropped, the latest snapshot kept.
    public var eventLogMaxEvents = 10_000
    /// One line per request on the `access` logger.
    public var accessLog = true

    public init() {}

    /// One setting: its name and how a text value is applied.
    struct Setting: Sendable {
        let name: String
        let help: String
        let apply: @Sendable (inout RelayConfiguration, String) throws(ConfigurationError) -> Void

        var environmentName: String { "RELAY_" + name.uppercased() }
        var flagName: String { "--" + name.replacingOccurrences(of: "_", with: "-") }
    }

    static let settings: [Setting] = [
        Setting(name: "data_dir", help: "data directory (blobs, results, keys, tls)") { $0.dataDirectory = $1 },
        Setting(name: "http", help: "plain HTTP listener HOST:PORT, or off") {
            config,
            value throws(ConfigurationError) in
            config.http = try Address.parse(value)
        },
        Setting(name: "https", help: "HTTPS listener HOST:PORT, or off") { config, value throws(ConfigurationError) in
            config.https = try Address.parse(value)
        },
        Setting(name: "tls_cert", help: "PEM certificate chain (default: a development CA's certificate)") {
            $0.tlsCertificate = $1
        },
        Setting(name: "tls_key", help: "PEM private key for --tls-cert") { $0.tlsKey = $1 },
        Setting(
            name: "tls12_ciphers",
            help: "TLS 1.2 cipher suites, OpenSSL names joined by ':' (default: ECDHE with AES-GCM or ChaCha20)"
        ) { config, value throws(ConfigurationError) in
            let names = value.split(separator: ":")
            guard !names.isEmpty,
                names.allSatisfy({ $0.hasPrefix("ECDHE-") && ($0.contains("GCM") || $0.contains("CHACHA20")) })
            else {
                throw ConfigurationError(
                    "tls12_ciphers must list ECDHE suites with AES-GCM or ChaCha20-Poly1305 only, not \"\(value)\""
                )
            }
            config.tls12Ciphers = value
        },
        Setting(name: "event_loop_threads", help: "event loop threads (default: cores)") {
            config,
            value throws(ConfigurationError) in
            config.eventLoopThreads = try integer(value, "event_loop_threads", 1...256)
        },
        Setting(name: "synthetic_time_scale", help: "synthetic timings: 1 realistic, 0 instant") {
            config,
            value throws(ConfigurationError) in
            guard let scale = Double(value), scale >= 0, scale <= 100 else {
                throw ConfigurationError("synthetic_time_scale must be a number in 0...100, not \"\(value)\"")
            }
            config.syntheticTimeScale = scale
        },
        Setting(name: "synthetic_slots", help: "concurrent synthetic generations (GPU slots)") {
            config,
            value throws(ConfigurationError) in
            config.syntheticSlots = try integer(value, "synthetic_slots", 1...1024)
        },
        Setting(name: "catalog", help: "model catalog JSON file") { $0.catalogPath = $1 },
        Setting(name: "ui_dir", help: "folder of the browser UI (playground at /, /dashboard), or off") {
            config,
            value in
            config.uiDirectory = value == "off" ? nil : value
        },
        Setting(name: "queue_hosts", help: "comma-separated Host names of the queue API") { $0.queueHosts = list($1) },
        Setting(name: "run_hosts", help: "comma-separated Host names of the run API") { $0.runHosts = list($1) },
        Setting(name: "public_url", help: "origin used in media URLs, e.g. https://relay.example.com") {
            $0.publicURL = $1
        },
        Setting(name: "max_json_body_bytes", help: "largest JSON body (413 beyond)") {
            config,
            value throws(ConfigurationError) in
            config.maxJSONBodyBytes = try integer(value, "max_json_body_bytes", 1024...(1 << 30))
        },
        Setting(name: "max_upload_bytes", help: "largest upload body (413 beyond), default 104857600") {
            config,
            value throws(ConfigurationError) in
            config.maxUploadBytes = try integer(value, "max_upload_bytes", 1024...(1 << 40))
        },
        Setting(
            name: "max_multipart_upload_bytes",
            help: "largest multipart upload in all (413 beyond), default 1073741824"
        ) { config, value throws(ConfigurationError) in
            config.maxMultipartUploadBytes = try integer(value, "max_multipart_upload_bytes", 1024...(1 << 42))
        },
        Setting(name: "upload_token_seconds", help: "lifetime of storage tokens and signed upload URLs, default 3600") {
            config,
            value throws(ConfigurationError) in
            config.uploadTokenSeconds = try integer(value, "upload_token_seconds", 10...3600)
        },
        Setting(name: "tls_extra_names", help: "comma-separated DNS names the development certificate also covers") {
            $0.tlsExtraNames = list($1)
        },
        Setting(name: "request_retention_seconds", help: "how long finished requests stay addressable") {
            config,
            value throws(ConfigurationError) in
            config.requestRetentionSeconds = Double(try integer(value, "request_retention_seconds", 1...(86_400 * 30)))
        },
        Setting(name: "result_ttl_seconds", help: "how long cached results stay fresh (default 1 day)") {
            config,
            value throws(ConfigurationError) in
            config.resultTTLSeconds = Double(try integer(value, "result_ttl_seconds", 1...(86_400 * 365)))
        },
        Setting(name: "cache_scope", help: "global (share identical work across keys) or per-key") {
            config,
            value throws(ConfigurationError) in
            switch value.lowercased() {
            case "global": config.perKeyCacheScope = false
            case "per-key", "per_key": config.perKeyCacheScope = true
            default: throw ConfigurationError("cache_scope must be global or per-key, not \"\(value)\"")
            }
        },
        Setting(name: "cache_max_bytes", help: "media store byte budget (LRU eviction), e.g. 10737418240") {
            config,
            value throws(ConfigurationError) in
            config.cacheMaxBytes = try integer(value, "cache_max_bytes", (1 << 20)...Int.max)
        },
        Setting(name: "origin", help: "fal-compatible queue API URL to relay to, e.g. https://queue.fal.run") {
            config,
            value throws(ConfigurationError) in
            guard value.hasPrefix("https://") || value.hasPrefix("http://") else {
                throw ConfigurationError("origin must be an http(s) URL, not \"\(value)\"")
            }
            config.origin = value
        },
        Setting(name: "origin_key", help: "API key for the origin (default: FAL_KEY from the environment)") {
            $0.originKey = $1
        },
        Setting(name: "origin_ca", help: "extra PEM CA to trust for the origin (e.g. another relay's development CA)") {
            $0.originCA = $1
        },
        Setting(name: "rate_limits", help: "on (per-tier token buckets) or off") {
            config,
            value throws(ConfigurationError) in
            switch value.lowercased() {
            case "on", "true", "1": config.rateLimits = true
            case "off", "false", "0": config.rateLimits = false
            default: throw ConfigurationError("rate_limits must be on or off, not \"\(value)\"")
            }
        },
        Setting(name: "enterprise_rpm", help: "submissions per minute for the enterprise tier") {
            config,
            value throws(ConfigurationError) in
            config.enterpriseRequestsPerMinute = try integer(value, "enterprise_rpm", 1...1_000_000)
        },
        Setting(name: "header_timeout_seconds", help: "seconds to receive a whole request head (slowloris), default 10")
        { config, value throws(ConfigurationError) in
            config.headerTimeoutSeconds = try seconds(value, "header_timeout_seconds")
        },
        Setting(name: "idle_timeout_seconds", help: "keep-alive idle timeout in seconds, default 75") {
            config,
            value throws(ConfigurationError) in
            config.idleTimeoutSeconds = try seconds(value, "idle_timeout_seconds")
        },
        Setting(name: "body_timeout_seconds", help: "seconds a request body may stall, default 30") {
            config,
            value throws(ConfigurationError) in
            config.bodyTimeoutSeconds = try seconds(value, "body_timeout_seconds")
        },
        Setting(name: "max_header_bytes", help: "largest request head (431 beyond), default 32768") {
            config,
            value throws(ConfigurationError) in
            config.maxHeaderBytes = try integer(value, "max_header_bytes", 1024...(64 * 1024))
        },
        Setting(name: "max_url_bytes", help: "longest request URL (414 beyond), default 8192") {
            config,
            value throws(ConfigurationError) in
            config.maxURLBytes = try integer(value, "max_url_bytes", 256...(64 * 1024))
        },
        Setting(name: "max_connections", help: "open connections in total (503 beyond), default 16000") {
            config,
            value throws(ConfigurationError) in
            config.maxConnections = try integer(value, "max_connections", 1...1_000_000)
        },
        Setting(name: "max_connections_per_ip", help: "open connections per client address (503 beyond), default 1024")
        { config, value throws(ConfigurationError) in
            config.maxConnectionsPerIP = try integer(value, "max_connections_per_ip", 1...1_000_000)
        },
        Setting(name: "sse_keepalive_seconds", help: "interval of SSE `: ping` comments, default 15") {
            config,
            value throws(ConfigurationError) in
            config.sseKeepAliveSeconds = Int64(try integer(value, "sse_keepalive_seconds", 1...3600))
        },
        Setting(
            name: "webhook_allow_private",
            help: "on: fal_webhook may target loopback/private addresses (development)"
        ) {
            config,
            value throws(ConfigurationError) in
            config.webhookAllowPrivate = try switchValue(value, "webhook_allow_private")
        },
        Setting(
            name: "webhook_retry_base_ms",
            help: "first webhook retry delay ceiling in ms, doubling per retry, default 5000"
        ) {
            config,
            value throws(ConfigurationError) in
            config.webhookRetryBaseMilliseconds = try integer(value, "webhook_retry_base_ms", 1...600_000)
        },
        Setting(name: "webhook_max_attempts", help: "webhook attempts in all, the first included, default 6") {
            config,
            value throws(ConfigurationError) in
            config.webhookMaxAttempts = try integer(value, "webhook_max_attempts", 1...20)
        },
        Setting(name: "webhook_timeout_seconds", help: "deadline of one webhook attempt, default 15") {
            config,
            value throws(ConfigurationError) in
            config.webhookTimeoutSeconds = try integer(value, "webhook_timeout_seconds", 1...300)
        },
        Setting(name: "webhook_concurrency", help: "webhook attempts in flight at once, default 16") {
            config,
            value throws(ConfigurationError) in
            config.webhookConcurrency = try integer(value, "webhook_concurrency", 1...1024)
        },
        Setting(
            name: "webhook_queue_size",
            help: "pending webhook deliveries before new ones are dropped, default 10000"
        ) {
            config,
            value throws(ConfigurationError) in
            config.webhookQueueSize = try integer(value, "webhook_queue_size", 1...1_000_000)
        },
        Setting(name: "event_log_max_events", help: "events kept per job for replay and resume, default 10000") {
            config,
            value throws(ConfigurationError) in
            config.eventLogMaxEvents = try integer(value, "event_log_max_events", 16...10_000_000)
        },
        Setting(name: "log_format", help: "logfmt (default) or json") { config, value throws(ConfigurationError) in
            guard let format = LogFormat(rawValue: value.lowercased()) else {
                throw ConfigurationError("log_format must be logfmt or json, not \"\(value)\"")
            }
            config.logFormat = format
        },
        Setting(name: "access_log", help: "on (one line per request, default) or off") {
            config,
            value throws(ConfigurationError) in
            config.accessLog = try onOff(value, "access_log")
        },
        Setting(name: "log_level", help: "trace, debug, info, notice, warning, error, critical") {
            config,
            value throws(ConfigurationError) in
            guard let level = Logger.Level(rawValue: value.lowercased()) else {
                throw ConfigurationError(
                    "log_level \"\(value)\" is not one of trace, debug, info, notice, warning, error, critical"
                )
            }
            config.logLevel = level
        },
    ]

    /// Builds the configuration from its sources. `flags` maps setting names to values given on the command line.
    public static func load(
        configFile: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        flags: [String: String] = [:]
    ) throws(ConfigurationError) -> RelayConfiguration {
        var config = RelayConfiguration()
        var fileFolder: String?
        let configPath = flags["config"] ?? environment["RELAY_CONFIG"] ?? configFile
        if let configPath {
            fileFolder = (configPath as NSString).deletingLastPathComponent
            for (name, value) in try fileValues(configPath) {
                try apply(name, value, to: &config, source: "config file \(configPath)")
            }
        }
        for setting in settings {
            if let value = environment[setting.environmentName] {
                try apply(setting.name, value, to: &config, source: "environment \(setting.environmentName)")
            }
        }
        for (name, value) in flags where name != "config" {
            try apply(name, value, to: &config, source: "flag --\(name)")
        }
        // A catalog named in the config file is relative to that file.
        if let catalog = config.catalogPath, !catalog.hasPrefix("/"), let folder = fileFolder, flags["catalog"] == nil,
            environment["RELAY_CATALOG"] == nil
        {
            config.catalogPath = folder.isEmpty ? catalog : folder + "/" + catalog
        }
        if let ui = config.uiDirectory, !ui.hasPrefix("/"), let folder = fileFolder, flags["ui_dir"] == nil,
            environment["RELAY_UI_DIR"] == nil
        {
            config.uiDirectory = folder.isEmpty ? ui : folder + "/" + ui
        }
        return config
    }

    /// `--name value` and `--name=value` pairs (dashes or underscores) → setting names and values.
    public static func parseFlags(_ arguments: [String]) throws(ConfigurationError) -> [String: String] {
        var flags: [String: String] = [:]
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            guard argument.hasPrefix("--"), argument.count > 2 else {
                throw ConfigurationError("unexpected argument \"\(argument)\"; settings are given as --name value")
            }
            var name = String(argument.dropFirst(2))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            name = name.replacingOccurrences(of: "-", with: "_")
            guard setting(named: name) != nil else {
                throw ConfigurationError(
                    "unknown flag --\(name.replacingOccurrences(of: "_", with: "-")); see media-relay serve --help"
                )
            }
            if value == nil {
                guard let next = rest.popFirst(), !next.hasPrefix("--") else {
                    throw ConfigurationError("--\(name.replacingOccurrences(of: "_", with: "-")) needs a value")
                }
                value = next
            }
            flags[name] = value
        }
        return flags
    }

    /// One line per setting for `serve --help`.
    public static var flagHelp: String {
        settings.map { setting in
            let flag = setting.flagName
            return "  \(flag.padding(toLength: max(flag.count + 1, 28), withPad: " ", startingAt: 0))\(setting.help)"
        }.joined(separator: "\n")
    }

    static func setting(named name: String) -> Setting? {
        settings.first { $0.name == name }
    }

    private static func apply(
        _ name: String,
        _ value: String,
        to config: inout RelayConfiguration,
        source: String
    ) throws(ConfigurationError) {
        guard let setting = setting(named: name) else {
            throw ConfigurationError("\(source): unknown setting \"\(name)\"")
        }
        do {
            try setting.apply(&config, value)
        } catch {
            throw ConfigurationError("\(source): \(error.description)")
        }
    }

    /// The config file's settings as text values (numbers and booleans as written, lists joined by commas).
    private static func fileValues(_ path: String) throws(ConfigurationError) -> [(String, String)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read config file \(path)")
        }
        let document: JSONValue
        do {
            document = try JSONValue(parsing: [UInt8](data))
        } catch {
            throw ConfigurationError("config file \(path) is not valid JSON: \(error)")
        }
        guard let object = document.objectValue else {
            throw ConfigurationError("config file \(path) must hold a JSON object")
        }
        var values: [(String, String)] = []
        for (name, value) in object where !name.hasPrefix("_") {
            switch value {
            case .string(let text): values.append((name, text))
            case .number, .bool: values.append((name, value.serializedString))
            case .array(let items): values.append((name, items.compactMap(\.stringValue).joined(separator: ",")))
            case .null: continue
            case .object: throw ConfigurationError("config file \(path): \"\(name)\" must not be an object")
            }
        }
        return values
    }

    private static func integer(
        _ value: String,
        _ name: String,
        _ range: ClosedRange<Int>
    ) throws(ConfigurationError) -> Int {
        guard let number = Int(value), range.contains(number) else {
            throw ConfigurationError(
                "\(name) must be an integer in \(range.lowerBound)...\(range.upperBound), not \"\(value)\""
            )
        }
        return number
    }

    private static func onOff(_ value: String, _ name: String) throws(ConfigurationError) -> Bool {
        switch value.lowercased() {
        case "on", "true", "1", "yes": return true
        case "off", "false", "0", "no": return false
        default: throw ConfigurationError("\(name) must be on or off, not \"\(value)\"")
        }
    }

    private static func seconds(_ value: String, _ name: String) throws(ConfigurationError) -> Double {
        guard let number = Double(value), number > 0, number <= 86_400 else {
            throw ConfigurationError("\(name) must be a number of seconds in (0, 86400], not \"\(value)\"")
        }
        return number
    }

    private static func switchValue(_ value: String, _ name: String) throws(ConfigurationError) -> Bool {
        switch value.lowercased() {
        case "on", "true", "1": return true
        case "off", "false", "0": return false
        default: throw ConfigurationError("\(name) must be on or off, not \"\(value)\"")
        }
    }

    private static func list(_ value: String) -> [String] {
        value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}

/// A configuration that cannot be used, with the reason.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
