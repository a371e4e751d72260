import Foundation
import Logging
import RelayCore
import RelayJobs
import RelayStore
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// The spend ledger's durable copy, `<data>/spend.json`: read at start, written every 10 s when it changed and at
/// shutdown (`DurableFile`: a temporary file, fsynced, renamed over it, and the directory fsynced). A crash loses at most the last
/// 10 s of spend. What running generations hold, and the 80 % warnings given, start again from nothing.
struct SpendBook: Service {
    let ledger: SpendLedger
    let path: String
    let logger: Logger

    /// The ledger as the file left it; a key passing 80 % of a budget is logged as a warning.
    init(dataDirectory: String, logger: Logger) {
        path = dataDirectory + "/spend.json"
        self.logger = logger
        let accounts = Self.read(path, logger: logger)
        ledger = SpendLedger(accounts: accounts) { keyID, period, spent, budget in
            logger.warning(
                "a key passed 80 % of its budget",
                metadata: [
                    "key": "\(keyID)", "period": "\(period.rawValue)", "spent": "\(spent)", "budget": "\(budget)",
                ]
            )
        }
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var written = ledger.snapshot()
            while (try? await Task.sleep(for: .seconds(10))) != nil {
                written = write(unless: written)
            }
        }
        _ = write(unless: nil)
    }

    /// Writes the ledger unless it is what was written last; returns what is on disk now.
    private func write(unless last: [String: SpendLedger.Account]?) -> [String: SpendLedger.Account] {
        let accounts = ledger.snapshot()
        guard accounts != last else { return accounts }
        var object: JSONObject = [:]
        for (key, account) in accounts.sorted(by: { $0.key < $1.key }) {
            object[key] = [
                "day": .string(account.day.iso8601), "day_spent": .number(account.daySpent),
                "month": .string(account.month.iso8601), "month_spent": .number(account.monthSpent),
            ]
        }
        do throws(StoreError) {
            try DurableFile.replace(path, with: JSONValue.object(["accounts": .object(object)]).serialized())
        } catch {
            logger.warning("spend not written", metadata: ["path": "\(path)", "error": "\(error)"])
            return last ?? [:]
        }
        return accounts
    }

    private static func read(_ path: String, logger: Logger) -> [String: SpendLedger.Account] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        guard let accounts = (try? JSONValue(parsing: Array(data)))?["accounts"]?.objectValue else {
            // Kept for whoever looks into it; budgets start again from nothing, which must not go unnoticed.
            let kept = path + ".unreadable-\(Int(Date().timeIntervalSince1970))"
            rename(path, kept)
            logger.error(
                "spend file unreadable: today's and this month's spend start from 0",
                metadata: ["path": "\(path)", "kept_as": "\(kept)"]
            )
            return [:]
        }
        var found: [String: SpendLedger.Account] = [:]
        for (key, value) in accounts {
            guard let day = value["day"]?.stringValue.flatMap(Timestamp.init(iso8601:)),
                let month = value["month"]?.stringValue.flatMap(Timestamp.init(iso8601:))
            else { continue }
            found[key] = SpendLedger.Account(
                day: day,
                daySpent: value["day_spent"]?.doubleValue ?? 0,
                month: month,
                monthSpent: value["month_spent"]?.doubleValue ?? 0
            )
        }
        return found
    }
}
