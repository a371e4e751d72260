import Testing

@testable import FalQueue

@Suite struct RetryPolicyTests {
    let policy = RetryPolicy()

    @Test func fullJitterBackoffDoublesUpToTheCap() {
        // jitter 1 gives the ceiling itself: 0.25, 0.5, 1, 2, 4, 8, then capped at 10.
        let ceilings = (1...8).map { policy.backoff(attempt: $0, jitter: 1) }
        #expect(
            ceilings == [
                .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8),
                .seconds(10), .seconds(10),
            ]
        )
        #expect(policy.backoff(attempt: 3, jitter: 0) == .zero)
        #expect(policy.backoff(attempt: 3, jitter: 0.5) == .milliseconds(500))
        // Out-of-range draws are clamped, never negative or past the ceiling.
        #expect(policy.backoff(attempt: 2, jitter: -3) == .zero)
        #expect(policy.backoff(attempt: 2, jitter: 7) == .milliseconds(500))
        #expect(policy.backoff(attempt: 2, jitter: .nan) == .zero)
        #expect(policy.backoff(attempt: 500, jitter: 1) == .seconds(10))
    }

    @Test func retriesTransientStatusesUntilTheAttemptsRunOut() {
        for status in [429, 502, 503, 504] {
            #expect(
                policy.decision(after: .status(status), attempt: 1, replay: .onlyIfNotAccepted, jitter: 1)
                    == .retry(after: .milliseconds(250))
            )
            #expect(
                policy.decision(after: .status(status), attempt: 5, replay: .safe, jitter: 0.5)
                    == .retry(after: .seconds(2))
            )
            #expect(policy.decision(after: .status(status), attempt: 6, replay: .safe, jitter: 0.5) == .giveUp)
        }
    }

    @Test func neverRetriesFinalStatuses() {
        for status in [400, 401, 404, 409, 422, 500, 501] {
            #expect(policy.decision(after: .status(status), attempt: 1, replay: .safe, jitter: 0.5) == .giveUp)
        }
        // A 504 for the caller's own start timeout would only time out again.
        #expect(
            policy.decision(after: .status(504, userTimeout: true), attempt: 1, replay: .safe, jitter: 0.5) == .giveUp
        )
    }

    @Test func aSubmitIsRepeatedOnlyWhenTheOriginCertainlyDidNotTakeIt() {
        #expect(
            policy.decision(after: .transport(.connect), attempt: 1, replay: .onlyIfNotAccepted, jitter: 1)
                == .retry(after: .milliseconds(250))
        )
        #expect(
            policy.decision(after: .transport(.exchange), attempt: 1, replay: .onlyIfNotAccepted, jitter: 1) == .giveUp
        )
        #expect(
            policy.decision(after: .transport(.exchange), attempt: 1, replay: .safe, jitter: 1)
                == .retry(after: .milliseconds(250))
        )
        #expect(policy.decision(after: .transport(.permanent), attempt: 1, replay: .safe, jitter: 1) == .giveUp)
    }

    @Test func honoursRetryAfterWithinItsCap() {
        #expect(
            policy.decision(
                after: .status(429, retryAfter: .seconds(3)),
                attempt: 1,
                replay: .onlyIfNotAccepted,
                jitter: 0
            ) == .retry(after: .seconds(3))
        )
        #expect(
            policy.decision(after: .status(503, retryAfter: .seconds(3600)), attempt: 1, replay: .safe, jitter: 0)
                == .retry(after: .seconds(30))
        )
        #expect(
            policy.decision(after: .status(500, retryAfter: .seconds(1)), attempt: 1, replay: .safe, jitter: 0)
                == .giveUp
        )
        #expect(RetryPolicy.retryAfter("7") == .seconds(7))
        #expect(RetryPolicy.retryAfter(" 0 ") == .zero)
        #expect(RetryPolicy.retryAfter("Wed, 21 Oct 2015 07:28:00 GMT") == nil)
        #expect(RetryPolicy.retryAfter("-1") == nil)
        #expect(RetryPolicy.retryAfter("99999999999999999999") == nil)
        #expect(RetryPolicy.retryAfter(nil) == nil)
    }

    @Test func injectedGeneratorDecidesTheJitter() {
        var first = SplitMix64(seed: 42)
        var second = SplitMix64(seed: 42)
        for attempt in 1...5 {
            let decision = policy.decision(after: .status(503), attempt: attempt, replay: .safe, using: &first)
            #expect(decision == policy.decision(after: .status(503), attempt: attempt, replay: .safe, using: &second))
            guard case .retry(let delay) = decision else {
                Issue.record("expected a retry")
                return
            }
            #expect(delay >= .zero && delay <= policy.backoff(attempt: attempt, jitter: 1))
        }
        let single = RetryPolicy(maxAttempts: 1)
        #expect(single.decision(after: .transport(.connect), attempt: 1, replay: .safe, jitter: 1) == .giveUp)
        #expect(RetryPolicy(maxAttempts: 0).maxAttempts == 1)
    }
}

/// A small deterministic generator (SplitMix64).
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
