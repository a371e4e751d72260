import ArgumentParser
import Foundation
import RelayCore

/// `media-relay usage`: what a running relay's generations cost and what its cache saved, as a terminal table (its
/// Platform API's `/v1/models/usage`).
struct Usage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Spend and savings per model (or per key) on a running relay, from its /v1/models/usage.",
        discussion: """
            An admin key sees every key's usage, any other key its own. Amounts are at the catalog's prices; a model \
            whose price is unknown shows "unknown".
            """
    )

    @OptionGroup var connection: Cache.Connection
    @Option(help: ArgumentHelp("From this day or time (ISO 8601; default: 24 hours ago)", valueName: "date"))
    var since: String?
    @Option(
        help: ArgumentHelp("One line per model, or per model and key, or per model and tag", valueName: "model|key|tag")
    )
    var by = "model"
    @Flag(help: "Print the raw JSON") var json = false

    func run() async throws {
        guard ["model", "key", "tag"].contains(by) else { throw ValidationError("--by must be model, key or tag") }
        if let since, Timestamp(iso8601: since) == nil {
            throw ValidationError("--since must be an ISO 8601 date or time, such as 2026-12-01")
        }
        var path = "/v1/models/usage?expand=summary" + (by == "key" ? ",auth_method" : by == "tag" ? ",tags" : "")
        if let since { path += "&start=" + since.replacingOccurrences(of: "+", with: "%2B") }
        let usage = try await connection.call(.GET, path)
        if json {
            print(String(decoding: usage.serialized(), as: UTF8.self))
            return
        }
        let split: (name: String, field: String)? = by == "key" ? ("key", "key_id") : by == "tag" ? ("tag", "tag") : nil
        for line in Self.table(usage["summary"]?.arrayValue ?? [], split: split) { print(line) }
    }

    /// The summary's lines as aligned columns, most spent first, with a total.
    /// `split`: the column a line is split by besides its model (its name, and the usage line's field).
    static func table(_ lines: [JSONValue], split: (name: String, field: String)?) -> [String] {
        let sorted = lines.sorted { ($0["cost"]?.doubleValue ?? 0) > ($1["cost"]?.doubleValue ?? 0) }
        var rows: [[String]] = [
            (split.map { [$0.name] } ?? []) + [
                "model", "unit", "quantity", "spent", "saved", "generations", "served free",
            ]
        ]
        var spent = 0.0
        var saved = 0.0
        // The catalog's currency (one for all of its prices).
        let currency = sorted.first?["currency"]?.stringValue ?? "USD"
        for line in sorted {
            spent += line["cost"]?.doubleValue ?? 0
            saved += line["saved_cost"]?.doubleValue ?? 0
            rows.append(
                (split.map { [line[$0.field]?.stringValue ?? ($0.name == "key" ? "anonymous" : "untagged")] } ?? []) + [
                    line["endpoint_id"]?.stringValue ?? "?", line["unit"]?.stringValue ?? "",
                    number(line["quantity"]?.doubleValue ?? 0), money(line["cost"]?.doubleValue, currency),
                    money(line["saved_cost"]?.doubleValue, currency),
                    number(line["requests"]?.doubleValue ?? 0), number(line["saved_requests"]?.doubleValue ?? 0),
                ]
            )
        }
        let padding = split == nil ? [] : [""]
        rows.append(padding + ["total", "", "", money(spent, currency), money(saved, currency), "", ""])
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        let textColumns = split == nil ? 2 : 3
        return rows.map { row in
            row.enumerated().map { column, cell in
                let gap = String(repeating: " ", count: widths[column] - cell.count)
                return column < textColumns ? cell + gap : gap + cell
            }.joined(separator: "  ")
        }
    }

    static func money(_ amount: Double?, _ currency: String) -> String {
        guard let amount else { return "unknown" }
        return (currency == "USD" ? "$" : currency + " ") + String(format: "%.3f", amount)
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.2f", value)
    }
}
