import NIOCore
import Testing

@testable import RelayLoadKit

@Suite struct RequestGenerationTests {
    @Test func zipfProbabilitiesFollowTheLaw() {
        let zipf = ZipfDistribution(count: 100, exponent: 1.1)
        let total = (0..<100).map(zipf.probability(of:)).reduce(0, +)
        #expect(abs(total - 1) < 1e-9)
        // P(0) / P(1) = 2^1.1
        #expect(abs(zipf.probability(of: 0) / zipf.probability(of: 1) - 2.1435469) < 1e-6)

        var random = SeededGenerator(seed: 42)
        var counts = [Int](repeating: 0, count: 100)
        for _ in 0..<100_000 { counts[zipf.sample(using: &random)] += 1 }
        #expect(abs(Double(counts[0]) / 100_000 - zipf.probability(of: 0)) < 0.01)
        #expect(counts[0] > counts[1] && counts[1] > counts[10])
    }

    @Test func theSameSeedGivesTheSameSequence() {
        var a = SeededGenerator(seed: 7)
        var b = SeededGenerator(seed: 7)
        var c = SeededGenerator(seed: 8)
        let first = (0..<8).map { _ in a.next() }
        #expect(first == (0..<8).map { _ in b.next() })
        #expect(first != (0..<8).map { _ in c.next() })
    }

    @Test func rangesStayInsideTheFile() throws {
        let url = try #require(TargetURL("http://127.0.0.1:8080/files/abc.png"))
        let plan = RequestPlan(url: url, variation: .randomRange(fileSize: 1000, maxLength: 300))
        var source = RequestSource(plan: plan, seed: 3, allocator: ByteBufferAllocator())
        for _ in 0..<2000 {
            let text = String(buffer: source.next(allocator: ByteBufferAllocator()))
            #expect(text.hasPrefix("GET /files/abc.png HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"))
            #expect(text.hasSuffix("\r\n\r\n"))
            let line = try #require(text.split(separator: "\r\n").first { $0.hasPrefix("Range: bytes=") })
            let bounds = line.dropFirst("Range: bytes=".count).split(separator: "-").compactMap { Int($0) }
            #expect(bounds.count == 2)
            #expect(bounds[0] >= 0 && bounds[0] <= bounds[1] && bounds[1] < 1000 && bounds[1] - bounds[0] < 300)
        }
    }

    @Test func zipfBodiesCarryTheRankAndALength() throws {
        let url = try #require(TargetURL("http://127.0.0.1:8080/fal-ai/flux/dev"))
        let plan = RequestPlan(
            method: "POST",
            url: url,
            headers: ["Authorization: Key k"],
            variation: .zipfBodies(bodyTemplate: #"{"prompt":"p{i}","seed":{i}}"#, prompts: 5, exponent: 1)
        )
        var source = RequestSource(plan: plan, seed: 1, allocator: ByteBufferAllocator())
        let text = String(buffer: source.next(allocator: ByteBufferAllocator()))
        let rank = source.lastRank
        let body = #"{"prompt":"p\#(rank)","seed":\#(rank)}"#
        #expect(text.hasPrefix("POST /fal-ai/flux/dev HTTP/1.1\r\n"))
        #expect(text.contains("Authorization: Key k\r\n"))
        #expect(text.contains("Content-Length: \(body.utf8.count)\r\n\r\n" + body))
    }

    @Test func targetURLs() throws {
        let https = try #require(TargetURL("https://127.0.0.1:8443/fal-ai/flux/requests/x/status?logs=1"))
        #expect(https.tls && https.port == 8443 && https.target == "/fal-ai/flux/requests/x/status?logs=1")
        #expect(https.hostIsIPAddress)
        let v6 = try #require(TargetURL("http://[::1]:8080"))
        #expect(v6.host == "::1" && v6.target == "/" && v6.authority == "[::1]:8080")
        let named = try #require(TargetURL("https://localhost/healthz"))
        #expect(named.port == 443 && !named.hostIsIPAddress)
        #expect(TargetURL("ftp://x/") == nil)
        #expect(TargetURL("http://:80/") == nil)
    }
}
