import Foundation
import Logging
import NIOCore
import RelayCore
import RelayJobs
import RelayStore
import RelayUpstreams

/// `origin`: one fal-compatible origin, or a pool of accounts — a comma-separated list of
/// `[name=]url[;key=…|;key_env=VAR][;cap=N][;ca=path]` (each account its own key and concurrency cap; the same URL
/// may appear with different keys). An account without a key uses `origin_key` (or `FAL_KEY`).
struct OriginAccountSpec: Sendable, Hashable {
    var name: String?
    var url: String
    var key: String?
    var keyVariable: String?
    var cap: Int?
    var ca: String?

    static func parse(_ text: String) throws(ConfigurationError) -> [OriginAccountSpec] {
        var accounts: [OriginAccountSpec] = []
        for entry in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !entry.isEmpty {
            var parts = entry.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            var head = parts.removeFirst()
            var name: String?
            if !head.hasPrefix("http://"), !head.hasPrefix("https://"), let equals = head.firstIndex(of: "=") {
                name = String(head[..<equals])
                head = String(head[head.index(after: equals)...])
            }
            guard head.hasPrefix("https://") || head.hasPrefix("http://") else {
                throw ConfigurationError("origin must be an http(s) URL, not \"\(head)\"")
            }
            var account = OriginAccountSpec(name: name, url: head)
            for part in parts {
                let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
                guard pair.count == 2, !pair[1].isEmpty else {
                    throw ConfigurationError("origin option \"\(part)\" is not name=value")
                }
                switch pair[0] {
                case "key": account.key = pair[1]
                case "key_env": account.keyVariable = pair[1]
                case "ca": account.ca = pair[1]
                case "cap":
                    guard let cap = Int(pair[1]), cap > 0 else {
                        throw ConfigurationError("origin cap must be a whole number above 0, not \"\(pair[1])\"")
                    }
                    account.cap = cap
                default:
                    throw ConfigurationError("unknown origin option \"\(pair[0])\" (key, key_env, cap, ca)")
                }
            }
            accounts.append(account)
        }
        guard !accounts.isEmpty else { throw ConfigurationError("origin lists no URL") }
        if accounts.count > 1 {
            for (index, account) in accounts.enumerated() where account.name == nil {
                accounts[index].name = "origin-\(index + 1)"
            }
            let names = accounts.compactMap(\.name)
            guard Set(names).count == names.count else { throw ConfigurationError("origin account names repeat") }
        }
        return accounts
    }
}

extension RelayApplication {
    /// The configured origin: one account as it always was, or a pool (`OriginPool`) of several.
    static func makeOrigin(
        _ config: RelayConfiguration,
        store: BlobStore,
        logger: Logger,
        group: any EventLoopGroup,
        publicOrigin: @escaping @Sendable () -> String
    ) throws -> (upstream: any Upstream, accounts: [FalOriginUpstream])? {
        guard let text = config.origin else { return nil }
        let specs = try OriginAccountSpec.parse(text)
        let environment = ProcessInfo.processInfo.environment
        let accounts = try specs.map { spec in
            var key = spec.key ?? config.originKey ?? environment["FAL_KEY"]
            if let variable = spec.keyVariable {
                guard let value = environment[variable], !value.isEmpty else {
                    throw ConfigurationError("origin account \(spec.name ?? spec.url): $\(variable) is not set")
                }
                key = value
            }
            var configuration = FalOriginUpstream.Configuration(
                baseURL: spec.url,
                apiKey: key,
                additionalCAPath: spec.ca ?? config.originCA,
                publicBaseURL: publicOrigin
            )
            configuration.userAgent = "MediaRelay"
            configuration.accountName = specs.count > 1 ? spec.name : nil
            return (
                try FalOriginUpstream(
                    configuration: configuration,
                    store: store,
                    logger: logger,
                    eventLoopGroup: group
                ), spec.cap
            )
        }
        guard accounts.count > 1 else { return (accounts[0].0, [accounts[0].0]) }
        let pool = OriginPool(
            accounts: accounts.map { OriginPool.Account($0.0, cap: $0.1) },
            coolDown: .milliseconds(Int64(config.originCoolDownSeconds * 1000))
        )
        return (pool, accounts.map(\.0))
    }
}
