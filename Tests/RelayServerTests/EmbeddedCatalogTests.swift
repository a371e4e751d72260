import Foundation
import Testing

@testable import RelayServer

/// The catalog built into the binary is Config/models.json, and a configured file still wins.
@Suite struct EmbeddedCatalogTests {
    static let configPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Config/models.json").path

    @Test func theBuiltInCatalogIsConfigModelsJSONByteForByte() throws {
        let file = try #require(FileManager.default.contents(atPath: Self.configPath))
        var text = try #require(String(data: file, encoding: .utf8))
        // A multi-line literal cannot end with a newline of its own; the file may.
        if text.hasSuffix("\n") { text.removeLast() }
        #expect(EmbeddedCatalog.json == text, "Config/models.json changed: run `make embed-catalog`")
    }

    @Test func withNoPathTheBuiltInCatalogIsServed() throws {
        let builtIn = try EmbeddedCatalog.catalog(orFileAt: nil)
        let fromFile = try EmbeddedCatalog.catalog(orFileAt: Self.configPath)
        #expect(!builtIn.models.isEmpty)
        #expect(builtIn.models.map(\.id) == fromFile.models.map(\.id))
    }

    @Test func aConfiguredFileOverridesTheBuiltInCatalog() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("catalog-\(UUID().uuidString).json")
            .path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let one = #"{"models": [{"id": "acme/only", "kind": "image", "dedup": "seeded", "seconds_per_step": 0.1}]}"#
        try Data(one.utf8).write(to: URL(fileURLWithPath: path))
        #expect(try EmbeddedCatalog.catalog(orFileAt: path).models.map(\.id) == ["acme/only"])
        #expect(throws: ConfigurationError.self) { try EmbeddedCatalog.catalog(orFileAt: path + ".missing") }
    }
}
