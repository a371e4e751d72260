import Foundation
import Logging
import RelayCore

extension RelayConfiguration {
    /// Every setting, once: the config file's keys, the `RELAY_…` environment and the flags are made from this table.
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
        Setting(
            name: "proxy_key",
            help: "fal's server proxy at /api/fal/proxy, acting as this relay key; off by default"
        ) {
            $0.proxyKey = $1 == "off" || $1.isEmpty ? nil : $1
        },
        Setting(name: "proxy_allowed_origins", help: "comma-separated Origins that may call the proxy; * for any") {
            $0.proxyAllowedOrigins = list($1)
        },
        Setting(name: "proxy_allowed_endpoints", help: "comma-separated endpoint globs the proxy may submit to") {
            $0.proxyAllowedEndpoints = list($1)
        },
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
        Setting(
            name: "origin",
            help:
                "fal-compatible queue API URL to relay to (https://queue.fal.run), or a pool: [name=]url[;key_env=VAR][;cap=N],…"
        ) { config, value throws(ConfigurationError) in
            _ = try OriginAccountSpec.parse(value)
            config.origin = value
        },
        Setting(name: "origin_cool_down_seconds", help: "how long a pool account that refused a submit is skipped") {
            config,
            value throws(ConfigurationError) in
            config.originCoolDownSeconds = Double(try integer(value, "origin_cool_down_seconds", 1...3600))
        },
        Setting(
            name: "cluster_database_url",
            help: "cluster mode: the fleet's PostgreSQL, postgres://user[:password]@host[:port]/database"
        ) { config, value throws(ConfigurationError) in
            guard value.hasPrefix("postgres://") || value.hasPrefix("postgresql://") else {
                throw ConfigurationError("cluster_database_url must be a postgres:// URL")
            }
            config.clusterDatabaseURL = value
        },
        Setting(name: "node_url", help: "cluster mode: how peers reach this node (default: its HTTP listener)") {
            config,
            value throws(ConfigurationError) in
            guard value.hasPrefix("http://") || value.hasPrefix("https://") else {
                throw ConfigurationError("node_url must be an http(s) URL, not \"\(value)\"")
            }
            config.nodeURL = value.hasSuffix("/") ? String(value.dropLast()) : value
        },
        Setting(name: "cluster_lease_seconds", help: "cluster mode: how long a claim outlives its node (default 5)") {
            config,
            value throws(ConfigurationError) in
            guard let seconds = Double(value), seconds >= 1, seconds <= 600 else {
                throw ConfigurationError("cluster_lease_seconds must be a number from 1 to 600")
            }
            config.clusterLeaseSeconds = seconds
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
        Setting(
            name: "max_in_progress",
            help: "upstream jobs in progress per caller by tier, more wait IN_QUEUE (default anonymous=2,signed-in=10,"
                + "pro=40,enterprise=200)"
        ) { config, value throws(ConfigurationError) in
            config.maxInProgress = try tierFigures(value, "max_in_progress", 1...1_000_000)
        },
        Setting(
            name: "max_watchers",
            help: "open status streams and sockets per caller by tier (default anonymous=200,signed-in=2000,"
                + "pro=10000,enterprise=50000)"
        ) { config, value throws(ConfigurationError) in
            config.maxWatchers = try tierFigures(value, "max_watchers", 1...10_000_000)
        },
        Setting(
            name: "media_bytes_per_second",
            help: "bytes of media per second per client address, burst ten seconds' worth (default: not limited)"
        ) { config, value throws(ConfigurationError) in
            config.mediaBytesPerSecond = try integer(value, "media_bytes_per_second", 1024...(1 << 40))
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
            help: "first webhook retry delay ceiling in ms, doubling per retry up to 35 min, default 25000"
        ) {
            config,
            value throws(ConfigurationError) in
            config.webhookRetryBaseMilliseconds = try integer(value, "webhook_retry_base_ms", 1...600_000)
        },
        Setting(name: "webhook_max_attempts", help: "webhook attempts in all, the first included, default 10 (fal's)") {
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
}
