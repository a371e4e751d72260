import Testing

@testable import RelayCore

/// What a generation costs, from the catalog's price and the generation's own output, as fal bills it.
@Suite struct ModelPriceTests {
    @Test func eachUnitCountsWhatTheOutputHolds() {
        let images: JSONValue = [
            "images": [["width": 1024, "height": 768], ["width": 1920, "height": 1080]]
        ]
        #expect(PriceUnit.images.quantity(result: images, input: [:]) == 2)
        // 0.79 MP and 2.07 MP: each image is rounded up to whole megapixels.
        #expect(PriceUnit.megapixels.quantity(result: images, input: [:]) == 4)
        #expect(PriceUnit.videos.quantity(result: ["video": ["url": "x"]], input: [:]) == 1)
        #expect(PriceUnit.seconds.quantity(result: ["audio": ["url": "x"], "duration": 2.5], input: [:]) == 2.5)
        #expect(PriceUnit.seconds.quantity(result: ["video": ["url": "x"]], input: ["duration": "5"]) == 5)
        #expect(PriceUnit.seconds.quantity(result: ["video": ["url": "x"]], input: ["num_frames": 16]) == 2)
        #expect(
            PriceUnit.thousandCharacters.quantity(
                result: [:],
                input: ["text": .string(String(repeating: "a", count: 1500))]
            ) == 1.5
        )
        #expect(PriceUnit.computeSeconds.quantity(result: ["timings": ["inference": 0.75]], input: [:]) == 0.75)
        #expect(PriceUnit.units.quantity(result: [:], input: [:]) == 1)
    }

    @Test func catalogPricesAreReadAndAnUnknownPriceStaysUnknown() throws {
        let catalog = try ModelCatalog(
            json: Array(
                """
                {"models": [
                  {"id": "fal-ai/a", "kind": "image", "price": {"unit_price": 0.025, "unit": "megapixels", "source": "s"}},
                  {"id": "fal-ai/b", "kind": "video", "price": {"unit_price": null, "source": "unknown: none"}},
                  {"id": "fal-ai/c", "kind": "audio"}
                ]}
                """.utf8
            )
        )
        let a = try #require(catalog.model("fal-ai/a")).price
        #expect(a.unitPrice == 0.025 && a.unit == .megapixels && a.currency == "USD")
        #expect(a.cost(result: ["images": [["width": 1024, "height": 1024]]], input: [:]) == 0.05)
        let b = try #require(catalog.model("fal-ai/b")).price
        #expect(b.unitPrice == nil && b.unit == .seconds && b.cost(result: ["video": [:]], input: [:]) == nil)
        #expect(try #require(catalog.model("fal-ai/c")).price.unitPrice == nil)
    }

    @Test func aBadPriceNamesTheModelAndTheField() {
        for (price, field) in [
            (#"{"unit_price": -1}"#, "unit_price"), (#"{"unit": "per image"}"#, "unit"),
            (#"{"unit_price": 1, "currency": "dollars"}"#, "currency"), (#""cheap""#, "price"),
        ] {
            let json = #"{"models": [{"id": "fal-ai/a", "kind": "image", "price": \#(price)}]}"#
            #expect {
                try ModelCatalog(json: Array(json.utf8))
            } throws: { error in
                "\(error)".contains("fal-ai/a") && "\(error)".contains(field)
            }
        }
    }

    @Test func timestampsReadISO8601AndFindTheirPeriod() throws {
        let time = try #require(Timestamp(iso8601: "2026-12-06T10:30:15.5+01:00"))
        #expect(time.iso8601 == "2026-12-06T09:30:15.500000+00:00")
        #expect(Timestamp(iso8601: "2026-12-06")?.iso8601 == "2026-12-06T00:00:00.000000+00:00")
        #expect(Timestamp(iso8601: "2026-12-06T09:30:15Z") == Timestamp(iso8601: "2026-12-06T09:30:15+00:00"))
        for bad in ["2026-13-01", "yesterday", "2026-12-06T25:00:00Z", "2026-12-06T10:00:00+0100"] {
            #expect(Timestamp(iso8601: bad) == nil, "\(bad)")
        }
        #expect(time.start(of: .hour).iso8601 == "2026-12-06T09:00:00.000000+00:00")
        #expect(time.start(of: .day).iso8601 == "2026-12-06T00:00:00.000000+00:00")
        // 2026-12-06 is a Sunday: its ISO week began on Monday the 30th of November.
        #expect(time.start(of: .week).iso8601 == "2026-11-30T00:00:00.000000+00:00")
        #expect(time.start(of: .month).iso8601 == "2026-12-01T00:00:00.000000+00:00")
        #expect(time.startOfNext(.month).iso8601 == "2027-01-01T00:00:00.000000+00:00")
        #expect(time.startOfNext(.minute).iso8601 == "2026-12-06T09:31:00.000000+00:00")
    }
}

extension ModelPriceTests {
    /// `"fallbacks"` name other models of the same catalog, once each.
    @Test func fallbacksAreOtherModelsOfTheCatalog() throws {
        func catalog(_ fallbacks: String) throws -> ModelCatalog {
            try ModelCatalog(
                json: Array(
                    #"{"models": [{"id": "fal-ai/a", "kind": "image", "fallbacks": \#(fallbacks)}, {"id": "fal-ai/b", "kind": "image"}]}"#
                        .utf8
                )
            )
        }
        #expect(try catalog(#"["fal-ai/b"]"#).model("fal-ai/a")?.fallbacks == ["fal-ai/b"])
        for bad in [#"["fal-ai/c"]"#, #"["fal-ai/b", "fal-ai/b"]"#, #"["fal-ai/a"]"#, #"["nope"]"#] {
            #expect(throws: CatalogError.self, "\(bad)") { try catalog(bad) }
        }
    }
}
