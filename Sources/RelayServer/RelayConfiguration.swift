public import Foundation
public import Logging
import RelayCore
public import RelayHTTP

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
    /// fal's server-proxy mode (`/api/fal/proxy`): the relay key its requests are made as; nil: off.
    public var proxyKey: String?
    /// Pages whose `Origin` may call the proxy (`*`: any); other callers present a key.
    public var proxyAllowedOrigins: [String] = []
    /// Endpoint globs a proxied POST may target; empty: every endpoint.
    public var proxyAllowedEndpoints: [String] = []
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
    /// A pool account that refused a submit (429, 5xx, unreachable) is skipped this long.
    public var originCoolDownSeconds = 30.0
    /// Cluster mode: the fleet's PostgreSQL (`postgres://user[:password]@host[:port]/database`); nil = single node.
    public var clusterDatabaseURL: String?
    /// How peers reach this node; default its HTTP listener.
    public var nodeURL: String?
    /// How long a claim on a piece of work outlives its node's last heartbeat.
    public var clusterLeaseSeconds = 5.0
    /// Per-tier rate limits (anonymous 20, signed-in 100, pro 500 submissions a minute; reads apart).
    public var rateLimits = true
    public var enterpriseRequestsPerMinute = 2000
    /// Upstream jobs in progress per caller, by tier, where they differ from the policy's (2 / 10 / 40 / 200): more
    /// wait `IN_QUEUE` until one ends.
    public var maxInProgress: [RateLimitPolicy.Tier: Int] = [:]
    /// Open watchers (status streams, sockets) per caller, by tier, where they differ from the policy's.
    public var maxWatchers: [RateLimitPolicy.Tier: Int] = [:]
    /// Bytes of media per second per client address (nil: media is not limited).
    public var mediaBytesPerSecond: Int?
    public var logLevel = Logger.Level.info
    /// `fal_webhook` delivery: let loopback/private targets through, retry schedule, per-attempt timeout, bounds.
    public var webhookAllowPrivate = false
    public var webhookRetryBaseMilliseconds = 25_000
    public var webhookMaxAttempts = 10
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

    /// `anonymous=2,pro=60`: a figure for some of the tiers (admin keys are never capped).
    static func tierFigures(
        _ value: String,
        _ name: String,
        _ range: ClosedRange<Int>
    ) throws(ConfigurationError) -> [RateLimitPolicy.Tier: Int] {
        var figures: [RateLimitPolicy.Tier: Int] = [:]
        for pair in value.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, let tier = RateLimitPolicy.Tier(rawValue: parts[0]), tier != .admin else {
                throw ConfigurationError(
                    "\(name) takes tier=number pairs (anonymous, signed-in, pro, enterprise), not \"\(pair)\""
                )
            }
            figures[tier] = try integer(parts[1], "\(name) for \(tier.rawValue)", range)
        }
        return figures
    }

    static func integer(
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

    static func onOff(_ value: String, _ name: String) throws(ConfigurationError) -> Bool {
        switch value.lowercased() {
        case "on", "true", "1", "yes": return true
        case "off", "false", "0", "no": return false
        default: throw ConfigurationError("\(name) must be on or off, not \"\(value)\"")
        }
    }

    static func seconds(_ value: String, _ name: String) throws(ConfigurationError) -> Double {
        guard let number = Double(value), number > 0, number <= 86_400 else {
            throw ConfigurationError("\(name) must be a number of seconds in (0, 86400], not \"\(value)\"")
        }
        return number
    }

    static func switchValue(_ value: String, _ name: String) throws(ConfigurationError) -> Bool {
        switch value.lowercased() {
        case "on", "true", "1": return true
        case "off", "false", "0": return false
        default: throw ConfigurationError("\(name) must be on or off, not \"\(value)\"")
        }
    }

    static func list(_ value: String) -> [String] {
        value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}

/// A configuration that cannot be used, with the reason.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
