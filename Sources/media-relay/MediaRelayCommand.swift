import ArgumentParser
import Foundation
import RelayCore
import RelayServer

/// `media-relay`: the relay server and its management commands.
@main
struct MediaRelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "media-relay",
        abstract: "An edge relay for generative-media APIs that speaks the fal queue and run protocols.",
        subcommands: [Serve.self, Keys.self, Canonicalize.self, Submit.self, Cache.self, Usage.self],
        defaultSubcommand: Serve.self
    )
}

/// `media-relay serve`: runs the relay. Every setting of `RelayConfiguration.settings` is a flag (`--data-dir DIR`
/// or `--data-dir=DIR`), parsed from that one table so a new setting needs no second declaration here.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the relay. Flags override RELAY_… environment variables, which override the config file.",
        discussion: "SETTINGS (each also RELAY_<NAME> in the environment and <name> in the config file):\n"
            + RelayConfiguration.flagHelp
    )

    @Option(help: "JSON config file (default: Config/relay.json when it exists)") var config: String?
    @Argument(parsing: .allUnrecognized, help: "Settings as --name value; see below") var settings: [String] = []

    func run() async throws {
        var flags: [String: String]
        do {
            flags = try RelayConfiguration.parseFlags(settings)
        } catch {
            throw ValidationError(error.description)
        }
        if let config { flags["config"] = config }
        let defaultFile = FileManager.default.fileExists(atPath: "Config/relay.json") ? "Config/relay.json" : nil
        let configuration: RelayConfiguration
        do {
            configuration = try RelayConfiguration.load(configFile: defaultFile, flags: flags)
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
        subcommands: [Create.self, List.self, Revoke.self, Budget.self]
    )

    struct Location: ParsableArguments {
        @Option(help: "Data directory (default ./data, or RELAY_DATA_DIR)") var dataDir: String?
        @Option(help: "A fleet's PostgreSQL (or RELAY_CLUSTER_DATABASE_URL): the key table every node copies")
        var clusterDatabaseURL: String?

        /// The fleet's database, when the keys are a fleet's.
        var fleet: String? {
            clusterDatabaseURL ?? ProcessInfo.processInfo.environment["RELAY_CLUSTER_DATABASE_URL"]
        }

        var store: APIKeyStore {
            APIKeyStore(dataDirectory: dataDir ?? ProcessInfo.processInfo.environment["RELAY_DATA_DIR"] ?? "./data")
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a key; prints it as the last line (shown only once)."
        )
        @Option(help: "signed-in, pro, enterprise or admin") var tier: String = "signed-in"
        @OptionGroup var caps: Caps
        @OptionGroup var location: Location

        func run() async throws {
            do {
                if let url = location.fleet {
                    let (key, row) = try await FleetKeyTable.create(url: url, tier: tier, budget: try caps.validated())
                    print("created key \(row.id) (tier \(row.tier)) in the fleet; store it now, it is not shown again:")
                    print(key)
                    return
                }
                let (key, entry) = try location.store.create(tier: tier, budget: try caps.validated())
                print("created key \(entry.id) (tier \(entry.tier)); store it now, it is not shown again:")
                print(key)
            } catch {
                throw ValidationError("\(error)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List key ids, tiers and states (never the keys).")
        @OptionGroup var location: Location

        /// `\tdaily 25.0 monthly 500.0`, or nothing without caps.
        static func caps(_ budget: SpendBudget) -> String {
            let caps = [budget.daily.map { "daily \($0)" }, budget.monthly.map { "monthly \($0)" }].compactMap { $0 }
            return caps.isEmpty ? "" : "\t" + caps.joined(separator: " ")
        }

        func run() async throws {
            if let url = location.fleet {
                for row in try await FleetKeyTable.list(url: url) {
                    let state = row.revoked ? "revoked" : "active"
                    let budget = Self.caps(SpendBudget(daily: row.budgetDaily, monthly: row.budgetMonthly))
                    print("\(row.id)\t\(row.tier)\t\(row.created)\t\(state)\(budget)")
                }
                return
            }
            for entry in try location.store.list() {
                let state = entry.revoked ? "revoked" : "active"
                print("\(entry.id)\t\(entry.tier)\t\(entry.created)\t\(state)\(Self.caps(entry.budget))")
            }
        }
    }

    /// Spending caps per UTC day and month, in the catalog's currency.
    struct Caps: ParsableArguments {
        @Option(help: "Most the key may spend upstream per UTC day (e.g. 25)") var budgetDaily: Double?
        @Option(help: "Most the key may spend upstream per UTC month (e.g. 500)") var budgetMonthly: Double?

        var budget: SpendBudget { SpendBudget(daily: budgetDaily, monthly: budgetMonthly) }

        func validated() throws -> SpendBudget {
            for cap in [budgetDaily, budgetMonthly].compactMap({ $0 }) where !(cap >= 0 && cap.isFinite) {
                throw ValidationError("a budget is an amount ≥ 0, not \(cap)")
            }
            return budget
        }
    }

    struct Budget: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change a key's spending caps (a cap not given stays); a running relay applies them at once."
        )
        @Argument(help: "The key id (the part before the colon)") var id: String
        @OptionGroup var caps: Caps
        @Flag(help: "Remove both caps (and then set the ones given)") var clear = false
        @OptionGroup var location: Location

        func run() async throws {
            let given = try caps.validated()
            let current: SpendBudget?
            if let url = location.fleet {
                current = try await FleetKeyTable.list(url: url).first { $0.id == id }.map {
                    SpendBudget(daily: $0.budgetDaily, monthly: $0.budgetMonthly)
                }
            } else {
                current = try location.store.list().first { $0.id == id }?.budget
            }
            guard let current else { throw ValidationError("no key with id \(id)") }
            var budget = clear ? SpendBudget() : current
            if let daily = given.daily { budget.daily = daily }
            if let monthly = given.monthly { budget.monthly = monthly }
            if let url = location.fleet {
                guard try await FleetKeyTable.setBudget(url: url, id: id, budget) else {
                    throw ValidationError("no key with id \(id)")
                }
            } else {
                guard try location.store.setBudget(id: id, budget) else {
                    throw ValidationError("no key with id \(id)")
                }
            }
            let daily = budget.daily.map { "\($0) a day" } ?? "no daily cap"
            let monthly = budget.monthly.map { "\($0) a month" } ?? "no monthly cap"
            print("key \(id): \(daily), \(monthly)")
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by id; effective at once.")
        @Argument(help: "The key id (the part before the colon)") var id: String
        @OptionGroup var location: Location

        func run() async throws {
            if let url = location.fleet {
                guard try await FleetKeyTable.revoke(url: url, id: id) else {
                    throw ValidationError("no key with id \(id)")
                }
                print("revoked \(id) in the fleet")
                return
            }
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
    @Option(help: "Data directory holding the deployment secret (default ./data, or RELAY_DATA_DIR)") var dataDir:
        String?
    @Option(
        name: .customLong("relay-url"),
        help: "A URL the relay is reached at (repeatable): its media URLs in the input are keyed by their bytes"
    ) var relayURLs: [String] = []

    func run() async throws {
        let input = FileHandle.standardInput.readDataToEndOfFile()
        do {
            let output = try CanonicalForm.render(
                input: [UInt8](input),
                model: model,
                printKey: key,
                catalogPath: catalog,
                dataDirectory: dataDir ?? ProcessInfo.processInfo.environment["RELAY_DATA_DIR"] ?? "./data",
                relayURLs: relayURLs
            )
            FileHandle.standardOutput.write(Data(output + [UInt8(ascii: "\n")]))
        } catch {
            FileHandle.standardError.write(Data("media-relay canonicalize: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}
