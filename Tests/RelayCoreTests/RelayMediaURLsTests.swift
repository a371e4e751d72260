import Testing

@testable import RelayCore

@Suite struct RelayMediaURLsTests {
    let flux = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image, defaults: ["num_images": 1])
    let hasher = KeyedHasher(secret: (0..<KeyedHasher.secretSize).map { UInt8(truncatingIfNeeded: $0 &* 7) })
    let digest = Digest128(hex: "8287ec0846956a9509ed13ee619199bb")!
    let uploadID = Digest128(hex: "602491bde843c35072527ad35c1e6cc6")!

    var rule: RelayMediaURLs {
        let uploadID = self.uploadID
        let digest = self.digest
        return RelayMediaURLs(
            hostNames: ["localhost", "127.0.0.1", "::1", "Relay.Example.com"],
            ports: [8080, 8443, 443]
        ) { id in
            id == uploadID ? digest : nil
        }
    }

    func key(_ input: JSONObject, _ rule: RelayMediaURLs?) throws -> RequestKey {
        RequestKey(input: try ModelInput(model: flux, input: input, mediaURLs: rule), hasher: hasher)
    }

    @Test func theRelaysOwnURLsAreKeyedByDigestWhateverTheOrigin() throws {
        let urls = [
            "http://127.0.0.1:8080/files/\(digest.hex).png",
            "https://localhost:8443/files/\(digest.hex).png",
            "HTTPS://LOCALHOST:8443/files/\(digest.hex).jpg?download=1",
            "https://[::1]:8443/files/\(digest.hex).png",
            "https://relay.example.com/files/\(digest.hex).png",
            "https://127.0.0.1:8443/files/uploads/\(uploadID.hex)/photo.png",
        ]
        let keys = try urls.map { try key(["prompt": "a fox", "image_url": .string($0)], rule) }
        #expect(Set(keys).count == 1, "\(keys)")
        // Nested values count too (lists of reference images).
        let nested = try urls.map { try key(["prompt": "a fox", "image_urls": [.string($0)]], rule) }
        #expect(Set(nested).count == 1)
        #expect(nested[0] != keys[0])
    }

    @Test func otherURLsKeepTheirText() throws {
        let own = try key(
            ["prompt": "a fox", "image_url": .string("https://localhost:8443/files/\(digest.hex).png")],
            rule
        )
        for foreign in [
            "https://example.org/files/\(digest.hex).png",  // another host
            "https://localhost:9999/files/\(digest.hex).png",  // another port on this machine
            "ftp://localhost:8443/files/\(digest.hex).png",
            "https://localhost:8443/media/\(digest.hex).png",
            "https://user@localhost:8443/files/\(digest.hex).png",
            "https://127.0.0.1:8443/files/uploads/\(Digest128(high: 1, low: 2).hex)/x.png",  // an unfinished upload
        ] {
            let other = try key(["prompt": "a fox", "image_url": .string(foreign)], rule)
            #expect(other != own, "\(foreign)")
            #expect(rule.digest(of: foreign) == nil, "\(foreign)")
        }
    }

    @Test func fieldsKeepTheURLAsSentAndNoRuleMeansPlainJCS() throws {
        let url = "https://localhost:8443/files/\(digest.hex).png"
        let input = try ModelInput(model: flux, input: ["prompt": "p", "image_url": .string(url)], mediaURLs: rule)
        #expect(input.fields["image_url"] == .string(url))
        #expect(
            String(decoding: input.canonicalBytes, as: UTF8.self).contains(
                #""image_url":{"$relay_blob":"\#(digest.hex)"}"#
            )
        )
        let plain = try ModelInput(model: flux, input: ["prompt": "p", "image_url": .string(url)])
        #expect(String(decoding: plain.canonicalBytes, as: UTF8.self).contains(url))
    }
}
