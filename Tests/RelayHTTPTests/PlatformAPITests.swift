import RelayCore
import Testing

@testable import RelayHTTP

/// fal's Platform API shapes built from the catalog: routes, model search and paging, prices, OpenAPI, errors.
@Suite struct PlatformAPITests {
    let catalog = ModelCatalog(models: [
        ModelSpec(
            id: "fal-ai/flux/dev",
            title: "FLUX.1 [dev]",
            kind: .image,
            price: ModelPrice(unitPrice: 0.025, unit: .megapixels, source: "s")
        ),
        ModelSpec(id: "fal-ai/kontext", title: "Kontext", kind: .imageEdit, required: ["prompt", "image_url"]),
        ModelSpec(id: "fal-ai/veo3", title: "Veo 3", kind: .video, defaults: ["duration": "8"]),
        ModelSpec(id: "fal-ai/kokoro", title: "Kokoro", kind: .audio, required: ["text"]),
    ])
    let now = Timestamp(secondsSinceEpoch: 1_800_000_000)

    func query(_ text: String) -> QueryParameters { QueryParameters(uri: "/v1/models?\(text)") }

    @Test func routes() {
        let router = Router(queueHosts: [], runHosts: [])
        let id = "5217bdd1-d3e6-4163-a44d-1e3847e0a2c3"
        #expect(router.route(method: .GET, host: nil, uri: "/v1/models?q=flux") == .platform(.models))
        #expect(router.route(method: .GET, host: nil, uri: "/v1/models/pricing") == .platform(.pricing))
        #expect(router.route(method: .GET, host: nil, uri: "/v1/models/usage") == .platform(.usage))
        #expect(router.route(method: .GET, host: nil, uri: "/v1/models/requests/by-endpoint") == .platform(.requests))
        #expect(
            router.route(method: .DELETE, host: nil, uri: "/v1/models/requests/\(id)/payloads")
                == .platform(.deletePayloads(id))
        )
        #expect(router.route(method: .POST, host: nil, uri: "/v1/models") == .methodNotAllowed)
        #expect(router.route(method: .GET, host: nil, uri: "/v1/models/requests/\(id)/payloads") == .methodNotAllowed)
        #expect(router.route(method: .DELETE, host: nil, uri: "/v1/models/requests/..%2F/payloads") == .notFound)
        #expect(router.route(method: .GET, host: nil, uri: "/v1/models/nothing") == .notFound)
        #expect(router.route(method: .GET, host: nil, uri: "/history") == .ui("history.html"))
    }

    @Test func modelsAreListedFoundSearchedAndPaged() throws {
        let all = try PlatformAPI.models(catalog, query: query(""), origin: "https://relay", updatedAt: now)
        #expect(all["models"]?.arrayValue?.count == 4 && all["has_more"] == false && all["next_cursor"] == .null)
        let first = try #require(all["models"]?.arrayValue?.first)
        #expect(first["endpoint_id"] == "fal-ai/flux/dev")
        #expect(first["metadata"]?["category"] == "text-to-image" && first["metadata"]?["status"] == "active")
        #expect(first["metadata"]?["model_url"] == "https://relay/fal-ai/flux/dev" && first["openapi"] == nil)

        var seen: [String] = []
        var cursor: String?
        repeat {
            let page = try PlatformAPI.models(
                catalog,
                query: query("limit=3" + (cursor.map { "&cursor=\($0)" } ?? "")),
                origin: "https://relay",
                updatedAt: now
            )
            seen += page["models"]?.arrayValue?.compactMap { $0["endpoint_id"]?.stringValue } ?? []
            cursor = page["next_cursor"]?.stringValue
            #expect(page["has_more"]?.boolValue == (cursor != nil))
        } while cursor != nil
        #expect(seen == catalog.models.map(\.id))

        let found = try PlatformAPI.models(
            catalog,
            query: query("endpoint_id=fal-ai/veo3&endpoint_id=fal-ai/kokoro"),
            origin: "o",
            updatedAt: now
        )
        #expect(
            found["models"]?.arrayValue?.compactMap { $0["endpoint_id"]?.stringValue } == [
                "fal-ai/veo3", "fal-ai/kokoro",
            ]
        )
        let searched = try PlatformAPI.models(catalog, query: query("q=VEO"), origin: "o", updatedAt: now)
        #expect(searched["models"]?.arrayValue?.count == 1)
        let edits = try PlatformAPI.models(
            catalog,
            query: query("category=image-to-image"),
            origin: "o",
            updatedAt: now
        )
        #expect(edits["models"]?.arrayValue?.first?["endpoint_id"] == "fal-ai/kontext")
        let speech = try PlatformAPI.models(
            catalog,
            query: query("category=text-to-speech"),
            origin: "o",
            updatedAt: now
        )
        #expect(speech["models"]?.arrayValue?.first?["endpoint_id"] == "fal-ai/kokoro")
        let deprecated = try PlatformAPI.models(catalog, query: query("status=deprecated"), origin: "o", updatedAt: now)
        #expect(deprecated["models"]?.arrayValue?.isEmpty == true)
    }

    @Test func openAPIDescribesTheInputFromTheCatalog() throws {
        let answer = try PlatformAPI.models(
            catalog,
            query: query("endpoint_id=fal-ai/veo3&expand=openapi-3.0"),
            origin: "https://relay",
            updatedAt: now
        )
        let openAPI = try #require(answer["models"]?.arrayValue?.first?["openapi"])
        #expect(openAPI["openapi"] == "3.0.4" && openAPI["servers"]?.arrayValue?.first?["url"] == "https://relay")
        let input = try #require(openAPI["components"]?["schemas"]?["Input"])
        #expect(input["required"] == ["prompt"])
        #expect(input["properties"]?["duration"] == ["type": "string", "title": "duration", "default": "8"])
        #expect(openAPI["paths"]?["/fal-ai/veo3/requests/{request_id}/status"]?["get"] != nil)
    }

    @Test func pricesNameTheirUnitAndAnUnknownPriceIsNull() throws {
        let prices = try PlatformAPI.pricing(catalog, query: query("endpoint_id=fal-ai/flux/dev,fal-ai/veo3"))
        let list = try #require(prices["prices"]?.arrayValue)
        #expect(list[0]["unit_price"] == 0.025 && list[0]["unit"] == "megapixels" && list[0]["currency"] == "USD")
        #expect(list[1]["unit_price"] == .null && list[1]["unit"] == "seconds")
        #expect(prices["has_more"] == false)
    }

    /// Pages resume past the last key they gave: an item that moved (a request that ended) or went never makes the
    /// next page skip or repeat one that stayed.
    @Test func keysetPagesNeitherSkipNorRepeat() throws {
        // Three requests in flight (no end yet: first), one ended.
        var items: [(Double, String)] = [(.infinity, "c"), (.infinity, "b"), (.infinity, "a"), (10, "d")]
        let (first, cursor) = try PlatformAPI.keysetPage(items, cursor: nil, limit: 2, descending: true) { $0 }
        #expect(first.map(\.1) == ["c", "b"])
        // "b" ends now (the newest end, 40) and moves behind "a": "a", which stayed, must not be skipped.
        items = [(.infinity, "c"), (.infinity, "a"), (40, "b"), (10, "d")]
        let (second, next) = try PlatformAPI.keysetPage(items, cursor: cursor, limit: 2, descending: true) { $0 }
        #expect(second.map(\.1) == ["a", "b"] && next != nil)
        let (third, last) = try PlatformAPI.keysetPage(items, cursor: next, limit: 2, descending: true) { $0 }
        #expect(third.map(\.1) == ["d"] && last == nil)
        #expect(throws: PlatformAPI.Failure.self) {
            try PlatformAPI.keysetPage(items, cursor: "zz", limit: 2, descending: true) { $0 }
        }
    }

    @Test func badParametersAreValidationErrorsInThePlatformShape() {
        let cases: [(String, Int, String)] = [
            ("", 400, "endpoint_id is required"),
            ("endpoint_id=nope", 400, "not an endpoint id"),
            ("endpoint_id=fal-ai/missing", 404, "No model"),
            ("endpoint_id=" + (0...50).map { "fal-ai/m\($0)" }.joined(separator: ","), 400, "at most 50"),
        ]
        for (text, status, message) in cases {
            #expect {
                try PlatformAPI.pricing(catalog, query: query(text))
            } throws: { error in
                guard let failure = error as? PlatformAPI.Failure else { return false }
                return failure.status == status && failure.message.contains(message)
                    && failure.error.body["error"]?["type"] == (status == 404 ? "not_found" : "validation_error")
            }
        }
        for text in ["limit=0", "limit=101", "limit=x", "cursor=zz", "cursor=00", "expand=everything", "status=gone"] {
            #expect(throws: PlatformAPI.Failure.self, "\(text)") {
                try PlatformAPI.models(catalog, query: query(text), origin: "o", updatedAt: now)
            }
        }
    }
}
