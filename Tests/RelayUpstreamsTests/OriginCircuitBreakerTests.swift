import Testing

@testable import RelayUpstreams

@Suite struct OriginCircuitBreakerTests {
    let start = ContinuousClock.now

    func at(_ seconds: Double) -> ContinuousClock.Instant { start + .seconds(seconds) }

    @Test func opensAfterConsecutiveFailuresOnly() {
        var breaker = OriginCircuitBreaker(configuration: .init(failureThreshold: 3, coolDown: .seconds(10)))
        breaker.recordFailure(now: at(0))
        breaker.recordFailure(now: at(1))
        breaker.recordSuccess()  // the streak is broken
        #expect(breaker.state == .closed(consecutiveFailures: 0))
        breaker.recordFailure(now: at(2))
        breaker.recordFailure(now: at(3))
        #expect(breaker.acquire(now: at(3)) == .allowed)
        breaker.recordFailure(now: at(4))
        #expect(breaker.state == .open(until: at(14)))
        #expect(breaker.acquire(now: at(5)) == .rejected)
        #expect(breaker.acquire(now: at(13.9)) == .rejected)
    }

    @Test func halfOpenLetsExactlyOneProbeThroughAndClosesOnItsSuccess() {
        var breaker = OriginCircuitBreaker(configuration: .init(failureThreshold: 1, coolDown: .seconds(10)))
        breaker.recordFailure(now: at(0))
        guard case .probe(let ticket) = breaker.acquire(now: at(10)) else {
            Issue.record("expected a probe")
            return
        }
        #expect(breaker.state == .halfOpen(probe: ticket))
        #expect(breaker.acquire(now: at(10.5)) == .rejected)
        #expect(breaker.acquire(now: at(60)) == .rejected)
        breaker.recordSuccess()
        #expect(breaker.state == .closed(consecutiveFailures: 0))
        #expect(breaker.acquire(now: at(61)) == .allowed)
    }

    @Test func aFailedProbeOpensTheCircuitForAnotherCoolDown() {
        var breaker = OriginCircuitBreaker(configuration: .init(failureThreshold: 2, coolDown: .seconds(5)))
        breaker.recordFailure(now: at(0))
        breaker.recordFailure(now: at(0))
        #expect(breaker.acquire(now: at(5)) == .probe(ticket: 1))
        breaker.recordFailure(now: at(6))
        #expect(breaker.state == .open(until: at(11)))
        #expect(breaker.acquire(now: at(10)) == .rejected)
        #expect(breaker.acquire(now: at(11)) == .probe(ticket: 2))
    }

    @Test func anAbandonedProbeMakesRoomForAnotherOnlyIfItIsStillTheProbe() {
        var breaker = OriginCircuitBreaker(configuration: .init(failureThreshold: 1, coolDown: .seconds(1)))
        breaker.recordFailure(now: at(0))
        #expect(breaker.acquire(now: at(1)) == .probe(ticket: 1))
        breaker.abandonProbe(1)
        #expect(breaker.state == .halfOpen(probe: nil))
        #expect(breaker.acquire(now: at(1)) == .probe(ticket: 2))
        breaker.abandonProbe(1)  // stale ticket: the second probe stays the only one
        #expect(breaker.acquire(now: at(1)) == .rejected)
    }

    @Test func lateAnswersDoNotShortenTheCoolDown() {
        var breaker = OriginCircuitBreaker(configuration: .init(failureThreshold: 1, coolDown: .seconds(10)))
        breaker.recordFailure(now: at(0))
        breaker.recordSuccess()
        breaker.recordFailure(now: at(5))
        #expect(breaker.state == .open(until: at(10)))
    }
}
