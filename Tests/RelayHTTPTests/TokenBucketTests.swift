import Testing

@testable import RelayHTTP

@Suite struct TokenBucketTests {
    @Test func startsFullAndAdmitsItsBurstThenRefuses() {
        var bucket = TokenBucket(capacity: 5, refillPerSecond: 1, now: .zero)
        let decisions = (0..<6).map { _ in bucket.take(now: .zero) }
        #expect(
            decisions == [
                .allowed(remaining: 4), .allowed(remaining: 3), .allowed(remaining: 2), .allowed(remaining: 1),
                .allowed(remaining: 0), .denied(retryAfter: 1),
            ]
        )
    }

    @Test func refillsLinearlyAndStopsAtCapacity() {
        var bucket = TokenBucket(capacity: 10, refillPerSecond: 2, tokens: 0, now: .seconds(100))
        #expect(bucket.available(at: .seconds(100)) == 0)
        #expect(bucket.available(at: .milliseconds(100_250)) == 0.5)
        #expect(bucket.available(at: .milliseconds(100_500)) == 1)
        #expect(bucket.available(at: .seconds(101)) == 2)
        #expect(bucket.available(at: .milliseconds(102_500)) == 5)
        #expect(bucket.available(at: .seconds(105)) == 10)
        #expect(bucket.available(at: .seconds(1_000)) == 10)

        // Taking at 2.5 s leaves 4; the next half second adds exactly one more.
        #expect(bucket.take(now: .milliseconds(102_500)) == .allowed(remaining: 4))
        #expect(bucket.tokens == 4)
        #expect(bucket.lastRefill == .milliseconds(102_500))
        #expect(bucket.available(at: .seconds(103)) == 5)
        #expect(bucket.take(now: .seconds(103), cost: 5) == .allowed(remaining: 0))
        #expect(bucket.take(now: .seconds(103)) == .denied(retryAfter: 1))
    }

    /// (capacity, refill per second, tokens held, expected Retry-After)
    static let retryCases: [(Double, Double, Double, Int)] = [
        (25, 100.0 / 60, 0, 1),  // 100 a minute: a token every 0.6 s
        (5, 20.0 / 60, 0, 3),  // 20 a minute: a token every 3 s
        (5, 20.0 / 60, 0.5, 2),  // half a token missing: 1.5 s, rounded up
        (5, 20.0 / 60, 0.99, 1),  // almost there: still at least 1
        (10, 1, 0, 1),  // exactly one second, not two
        (10, 0.1, 0, 10),
        (10, 0.1, 0.25, 8),  // 0.75 missing at 0.1 a second: 7.5 s, rounded up
    ]

    @Test(arguments: retryCases)
    func retryAfterIsTheWaitForOneTokenRoundedUp(capacity: Double, rate: Double, tokens: Double, expected: Int) {
        var bucket = TokenBucket(capacity: capacity, refillPerSecond: rate, tokens: tokens, now: .zero)
        #expect(bucket.take(now: .zero) == .denied(retryAfter: expected))
    }

    @Test func aRefusedRequestTakesNothing() {
        var bucket = TokenBucket(capacity: 5, refillPerSecond: 1.0 / 3, tokens: 0, now: .zero)
        // A client retrying in a tight loop (fal's Python client ignores Retry-After) ...
        for step in 0..<299 {
            #expect(bucket.take(now: .milliseconds(10 * step)) == .denied(retryAfter: 3 - (10 * step) / 1000))
        }
        // ... is still admitted as soon as the first token is in.
        #expect(bucket.take(now: .seconds(3)) == .allowed(remaining: 0))
    }

    @Test func anEarlierInstantMintsNothing() {
        var bucket = TokenBucket(capacity: 10, refillPerSecond: 1, tokens: 0, now: .seconds(10))
        #expect(bucket.take(now: .seconds(5)) == .denied(retryAfter: 1))
        #expect(bucket.lastRefill == .seconds(10))
        #expect(bucket.tokens == 0)
        #expect(bucket.take(now: .seconds(11)) == .allowed(remaining: 0))
        #expect(bucket.take(now: .seconds(10)) == .denied(retryAfter: 1))
        #expect(bucket.lastRefill == .seconds(11))
    }

    @Test func aCostAboveCapacityIsNeverAdmitted() {
        var bucket = TokenBucket(capacity: 5, refillPerSecond: 1, now: .zero)
        #expect(bucket.take(now: .zero, cost: 6) == .denied(retryAfter: 1))
        #expect(bucket.take(now: .seconds(1_000), cost: 6) == .denied(retryAfter: 1))
        #expect(bucket.take(now: .seconds(1_000), cost: 5) == .allowed(remaining: 0))
    }

    @Test func secondsUntilFullAndIsFull() {
        var bucket = TokenBucket(capacity: 25, refillPerSecond: 100.0 / 60, now: .zero)
        #expect(bucket.isFull(at: .zero))
        #expect(bucket.secondsUntilFull(at: .zero) == 0)
        _ = bucket.take(now: .zero, cost: 3)
        #expect(!bucket.isFull(at: .zero))
        #expect(bucket.secondsUntilFull(at: .zero) == 2)  // 3 tokens at 0.6 s each: 1.8 s
        #expect(!bucket.isFull(at: .milliseconds(1_799)))
        #expect(bucket.isFull(at: .milliseconds(1_800)))
        #expect(bucket.secondsUntilFull(at: .milliseconds(1_800)) == 0)
    }

    /// Refill is floating point; a token due at an exact instant must be there at that instant, every time.
    @Test func tokensDueAtAnInstantArePresentAtIt() {
        var bucket = TokenBucket(capacity: 25, refillPerSecond: 100.0 / 60, tokens: 0, now: .zero)
        for step in 1...10_000 {
            let decision = bucket.take(now: .milliseconds(600 * step))
            guard decision == .allowed(remaining: 0) else {
                Issue.record("step \(step): \(decision)")
                return
            }
        }
        #expect(bucket.take(now: .milliseconds(600 * 10_000)) == .denied(retryAfter: 1))

        // Checked every 0.1 s, ten refills of 0.1 add up to 0.9999999999999999, not 1: the tolerance covers it.
        var polled = TokenBucket(capacity: 1, refillPerSecond: 1, tokens: 0, now: .zero)
        var admittedAt: [Int] = []
        for step in 1...50 where polled.take(now: .milliseconds(100 * step)) == .allowed(remaining: 0) {
            admittedAt.append(step)
        }
        #expect(admittedAt == [10, 20, 30, 40, 50])
    }

    @Test func nonsenseFiguresAreTakenAsZero() {
        var empty = TokenBucket(capacity: -3, refillPerSecond: 1, now: .zero)
        #expect(empty.capacity == 0)
        #expect(empty.take(now: .seconds(1_000)) == .denied(retryAfter: 1))

        var stuck = TokenBucket(capacity: 5, refillPerSecond: .nan, tokens: 0, now: .zero)
        #expect(stuck.refillPerSecond == 0)
        #expect(stuck.take(now: .seconds(1_000)) == .denied(retryAfter: Int(Int32.max)))
    }
}
