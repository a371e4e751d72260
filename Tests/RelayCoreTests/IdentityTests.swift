import Testing

@testable import RelayCore

@Suite struct IdentityTests {
    @Test func digestHexRoundTrips() {
        let digest = Digest128(high: 0x0123_4567_89ab_cdef, low: 0xfedc_ba98_7654_3210)
        #expect(digest.hex == "0123456789abcdeffedcba9876543210")
        #expect(Digest128(hex: digest.hex) == digest)
        #expect(Digest128(hex: digest.hex.uppercased()) == digest)
        #expect(Digest128(hex: "0123") == nil)
        #expect(Digest128(hex: "0123456789abcdeffedcba987654321g") == nil)
        #expect(Digest128(hex: "../23456789abcdeffedcba9876543210") == nil)
        #expect(digest.bytes.count == 16 && digest.bytes[0] == 0x01 && digest.bytes[15] == 0x10)
    }

    @Test func keyedHasherMatchesReferenceXXH3AndDependsOnSecret() {
        let secret = (0..<KeyedHasher.secretSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let hasher = KeyedHasher(secret: secret)
        let a = hasher.digest(Array("hello".utf8))
        #expect(a == hasher.digest(Array("hello".utf8)))
        #expect(a != hasher.digest(Array("hellp".utf8)))
        #expect(a != KeyedHasher(secret: secret.reversed()).digest(Array("hello".utf8)))
        // Field boundaries matter.
        #expect(
            hasher.digest(fields: [Array("ab".utf8), Array("c".utf8)])
                != hasher.digest(fields: [Array("a".utf8), Array("bc".utf8)])
        )
    }

    @Test func endpointIDs() {
        let id = EndpointID("fal-ai/flux/dev")
        #expect(id?.app == "fal-ai/flux" && id?.path == ["dev"] && id?.description == "fal-ai/flux/dev")
        let workflow = EndpointID("workflows/me/flow/run")
        #expect(workflow?.app == "workflows/me/flow" && workflow?.path == ["run"])
        #expect(EndpointID("flux") == nil)
        #expect(EndpointID("workflows/me") == nil)
        #expect(EndpointID("fal-ai/../etc") == nil)
        #expect(EndpointID("fal-ai//dev") == nil)
        #expect(EndpointID("fal-ai/fl ux") == nil)
    }

    @Test func requestIDsAreUUIDv4() {
        let ids = Set((0..<1000).map { _ in RequestID.make() })
        #expect(ids.count == 1000)
        for id in ids.prefix(20) {
            #expect(id.count == 36 && Array(id)[14] == "4" && RequestID.isPlausible(id))
        }
        #expect(!RequestID.isPlausible("../../etc/passwd"))
        #expect(!RequestID.isPlausible(""))
    }

    @Test func timestampsAreISO8601WithOffset() {
        #expect(Timestamp(secondsSinceEpoch: 0).iso8601 == "1970-01-01T00:00:00.000000+00:00")
        #expect(Timestamp(secondsSinceEpoch: 1_795_645_267.5).iso8601 == "2026-11-25T22:21:07.500000+00:00")
        #expect(Timestamp(secondsSinceEpoch: 951_782_400).iso8601 == "2000-02-29T00:00:00.000000+00:00")
    }

    @Test func base64() {
        #expect(Base64.encode([]) == "")
        #expect(Base64.encode(Array("f".utf8)) == "Zg==")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.encode(Array("foo".utf8)) == "Zm9v")
        #expect(Base64.encode([0xFF, 0xEF, 0xFE]) == "/+/+")
    }

    @Test func falErrorShapes() {
        let validation = FalError.validation(.missing("prompt"))
        #expect(validation.status == 422)
        #expect(
            validation.body.serializedString
                == #"{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}"#
        )
        let notFound = FalError.unknownModel("a/b")
        #expect(notFound.status == 404)
        #expect(notFound.body.serializedString == #"{"detail":"Unknown model \"a/b\"","error_type":"model_not_found"}"#)
        #expect(FalError.payloadTooLarge(limit: 10).status == 413)
    }

    @Test func theShippedCatalogLoads() throws {
        let path = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let bytes = try #require(FileManagerLite.read("/" + path + "/Config/models.json"))
        let catalog = try ModelCatalog(json: bytes)
        #expect(catalog.models.count >= 20)
        let flux = try #require(catalog.model("fal-ai/flux/dev"))
        #expect(flux.defaults["num_inference_steps"] == 28 && flux.defaults["guidance_scale"] == 3.5)
        #expect(flux.defaults["image_size"] == "landscape_4_3" && flux.dedup == .seeded)
        for kind in ModelKind.allCases {
            #expect(catalog.models.contains { $0.kind == kind }, "no \(kind) model in the catalog")
        }
    }

    @Test func badCatalogsAreExplained() {
        #expect(throws: CatalogError.self) { try ModelCatalog(json: Array("[]".utf8)) }
        #expect(
            throws: CatalogError(
                "model a/b: \"kind\" must be one of [\"image\", \"image-edit\", \"video\", \"audio\", \"text\"]"
            )
        ) {
            try ModelCatalog(json: Array(#"{"models":[{"id":"a/b","kind":"gpu"}]}"#.utf8))
        }
        #expect(throws: CatalogError("model a/b is listed twice")) {
            try ModelCatalog(json: Array(#"{"models":[{"id":"a/b","kind":"image"},{"id":"a/b","kind":"image"}]}"#.utf8))
        }
    }
}

/// Reads a whole file without Foundation (RelayCore's tests stay Foundation-free like the module).
enum FileManagerLite {
    static func read(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return bytes
    }
}

#if canImport(Glibc)
import Glibc
#endif
