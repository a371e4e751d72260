import RelayCore
import Testing

@testable import RelayHTTP

/// `media_bytes_per_second`: bytes of media per client address, burst ten seconds' worth, a body larger than the
/// bucket taking the whole bucket; in a fleet each node's share of the bucket.
@Suite struct MediaByteLimitTests {
    func limiter(bytesPerSecond: Int?, clock: @escaping RateLimiter.Clock = { .zero }) -> RateLimiter {
        var policy = RateLimitPolicy.standard
        policy.mediaBytesPerSecond = bytesPerSecond
        return RateLimiter(policy: policy, clock: clock)
    }

    @Test func offByDefault() {
        #expect(limiter(bytesPerSecond: nil).chargeMediaBytes(1 << 30, clientIP: "10.0.0.1") == nil)
    }

    @Test func anAddressSpendsItsBurstThenWaitsAndOthersAreNotCharged() throws {
        let limiter = limiter(bytesPerSecond: 1_000)
        #expect(try #require(limiter.chargeMediaBytes(6_000, clientIP: "10.0.0.1")).rejection == nil)
        #expect(try #require(limiter.chargeMediaBytes(4_000, clientIP: "10.0.0.1")).rejection == nil)
        let refused = try #require(limiter.chargeMediaBytes(1, clientIP: "10.0.0.1")?.rejection)
        #expect(refused.detail.contains("1000 bytes of media per second for each address"))
        #expect(
            refused.headerFields.contains(
                RateLimitRejection.HeaderField(name: "ratelimit-policy", value: "\"media\";q=1000;w=1")
            )
        )
        #expect(try #require(limiter.chargeMediaBytes(10_000, clientIP: "10.0.0.2")).rejection == nil)
    }

    /// A body larger than the bucket is still served once the bucket is full, also when a fleet shares the bucket
    /// (two nodes: 5,000 bytes each, and a 6,000-byte body takes all of them rather than never fitting).
    @Test func aBodyLargerThanTheBucketTakesTheWholeBucketAlsoInAFleet() throws {
        let limiter = limiter(bytesPerSecond: 1_000)
        limiter.setFleetShare(nodes: 2)
        #expect(try #require(limiter.chargeMediaBytes(6_000, clientIP: "10.0.0.3")).rejection == nil)
        #expect(try #require(limiter.chargeMediaBytes(1, clientIP: "10.0.0.3")).rejection != nil)
    }
}
