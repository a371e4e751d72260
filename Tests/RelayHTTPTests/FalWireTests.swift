import RelayCore
import RelayJobs
import Testing

@testable import RelayHTTP

/// The fal queue documents as clients decode them.
@Suite struct FalWireTests {
    static let levels: [LogEntry.Level] = [.info, .warn, .error, .debug, .stdout, .stderr]

    /// fal-swift decodes `logs[i].labels.level` and fails without it; the Python client reads the flat `level`.
    @Test func everyLogEntryCarriesItsLevelFlatAndInLabels() throws {
        let entries = Self.levels.enumerated().map { index, level in
            LogEntry(message: "line \(index)", level: level, timestamp: Timestamp(secondsSinceEpoch: 1_700_000_000))
        }
        let phases: [JobPhase] = [
            .queued(position: 3), .running, .completed(.success(result: [:], inferenceSeconds: 1)),
        ]
        for phase in phases {
            let status = FalWire.status(id: "abc", phase: phase, logs: entries[...], base: nil)
            let logs = try #require(status["logs"]?.arrayValue)
            #expect(logs.count == entries.count)
            for (log, entry) in zip(logs, entries) {
                #expect(log["level"]?.stringValue == entry.level.rawValue)
                #expect(log["labels"]?["level"]?.stringValue == entry.level.rawValue)
                #expect(log["message"]?.stringValue == entry.message)
                #expect(log["timestamp"]?.stringValue?.hasPrefix("2023-11-14T22:13:20") == true)
            }
        }
        let single = FalWire.logEntry(entries[1])
        #expect(single["labels"] == ["level": "WARN"])
    }
}
