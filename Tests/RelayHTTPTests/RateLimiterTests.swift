import Dispatch
import RelayCore
import Synchronization
import Testing

@testable import RelayHTTP

@Suite struct RateLimiterTests {
    private let signedIn = Principal.key(id: "k-signed", tier: "signed-in")

    /// A limiter whose own clock must never be read: every check here passes `now`.
    private func limiter(_ policy: RateLimitPolicy = .standard, maxEntries: Int = 100_000) -> RateLimiter {
        RateLimiter(policy: policy, maxEntries: maxEntries) {
            Issue.record("the limiter read its clock")
            return .zero
        }
    }

    // MARK: - Policy

    @Test func tiersHaveTheirNumbers() {
        let policy = RateLimitPolicy.standard
        let submissions = RateLimitPolicy.Tier.allCases.map { policy.limit(for: $0, budget: .submissions) }
        #expect(
            submissions == [
                RateLimitPolicy.Limit(quota: 20, windowSeconds: 60, burst: 5),
                RateLimitPolicy.Limit(quota: 100, windowSeconds: 60, burst: 25),
                RateLimitPolicy.Limit(quota: 500, windowSeconds: 60, burst: 125),
                RateLimitPolicy.Limit(quota: 2000, windowSeconds: 60, burst: 500),
                nil,
            ]
        )
        let reads = RateLimitPolicy.Tier.allCases.map { policy.limit(for: $0, budget: .reads) }
        let everyoneReads = RateLimitPolicy.Limit(quota: 20, windowSeconds: 1, burst: 100)
        #expect(reads == [everyoneReads, everyoneReads, everyoneReads, everyoneReads, nil])
        #expect(everyoneReads.refillPerSecond == 20)

        let custom = RateLimitPolicy(enterprisePerMinute: 3001)
        #expect(
            custom.limit(for: .enterprise, budget: .submissions) == .init(quota: 3001, windowSeconds: 60, burst: 751)
        )
        #expect(custom.limit(for: .pro, budget: .submissions)?.quota == 500)
    }

    @Test(arguments: [(1, 5), (19, 5), (20, 5), (21, 6), (100, 25), (101, 26), (0, 5), (-7, 5)])
    func submissionBurstIsAQuarterRoundedUpAtLeastFive(perMinute: Int, burst: Int) {
        #expect(RateLimitPolicy.Limit.submissions(perMinute: perMinute).burst == burst)
    }

    @Test(arguments: [
        (Principal.anonymous, RateLimitPolicy.Tier.anonymous),
        (.key(id: "a", tier: "signed-in"), .signedIn),
        (.key(id: "a", tier: "pro"), .pro),
        (.key(id: "a", tier: "enterprise"), .enterprise),
        (.key(id: "a", tier: "admin"), .admin),
        (.key(id: "a", tier: "Admin"), .signedIn),
        (.key(id: "a", tier: "anonymous"), .signedIn),
        (.key(id: "a", tier: "gold"), .signedIn),
    ])
    func tierOfAPrincipal(principal: Principal, tier: RateLimitPolicy.Tier) {
        #expect(RateLimitPolicy.Tier(principal) == tier)
    }

    @Test func routesDrawFromTheirBudget() throws {
        let endpoint = try #require(EndpointID("fal-ai/flux/dev"))
        let digest = Digest128(high: 1, low: 2)
        // Every submission draws from `served`; the tier's budget is charged only when one starts upstream work.
        #expect(RateLimitPolicy.Budget(route: .submit(endpoint)) == .served)
        #expect(RateLimitPolicy.Budget(route: .run(endpoint)) == .served)
        #expect(RateLimitPolicy.Budget(route: .stream(endpoint)) == .served)
        #expect(RateLimitPolicy.Budget(route: .status(app: endpoint, requestID: "r")) == .requestReads)
        #expect(RateLimitPolicy.Budget(route: .statusStream(app: endpoint, requestID: "r")) == nil)  // watchers cap
        #expect(RateLimitPolicy.Budget(route: .result(app: endpoint, requestID: "r")) == .requestReads)
        #expect(RateLimitPolicy.Budget(route: .cancel(app: endpoint, requestID: "r")) == .requestReads)
        // Media is a CDN's job: not limited by default.
        #expect(RateLimitPolicy.Budget(route: .file(digest, fileExtension: "png")) == nil)
        #expect(RateLimitPolicy.Budget(route: .tokens) == .reads)
        // Sockets take watcher places (a count), not a rate; realtime messages are charged as submissions.
        #expect(RateLimitPolicy.Budget(route: .webSocket) == nil)
        #expect(RateLimitPolicy.Budget(route: .realtime(endpoint)) == nil)
        for route in [Route.health, .ready, .metrics, .notFound, .methodNotAllowed] {
            #expect(RateLimitPolicy.Budget(route: route) == nil)
        }
    }

    // MARK: - Decisions and headers

    @Test func anonymousSubmissionsBurstThenWaitThreeSeconds() {
        let limiter = limiter()
        let first = limiter.anonymous("192.0.2.1", .submissions, at: .zero)
        #expect(first.isAllowed)
        #expect(first.remaining == 4)
        #expect(headers(first) == ["ratelimit-policy: \"submit\";q=20;w=60", "ratelimit: \"submit\";r=4;t=3"])
        #expect(first.rejection == nil)

        for remaining in (0...3).reversed() {
            #expect(limiter.anonymous("192.0.2.1", .submissions, at: .zero).remaining == remaining)
        }
        let denied = limiter.anonymous("192.0.2.1", .submissions, at: .zero)
        #expect(!denied.isAllowed)
        #expect(denied.retryAfterSeconds == 3)
        #expect(
            headers(denied) == [
                "ratelimit-policy: \"submit\";q=20;w=60", "ratelimit: \"submit\";r=0;t=3", "retry-after: 3",
            ]
        )
        #expect(limiter.anonymous("192.0.2.1", .submissions, at: .milliseconds(2_999)).retryAfterSeconds == 1)
        #expect(limiter.anonymous("192.0.2.1", .submissions, at: .seconds(3)).isAllowed)
    }

    @Test func emptySignedInBucketSaysRetryInOneSecond() {
        let limiter = limiter()
        for _ in 0..<25 {
            #expect(limiter.keyed(signedIn, "192.0.2.1", .submissions, at: .seconds(50)).isAllowed)
        }
        let denied = limiter.keyed(signedIn, "192.0.2.1", .submissions, at: .seconds(50))
        #expect(denied.retryAfterSeconds == 1)
        #expect(denied.resetSeconds == 1)
        #expect(limiter.keyed(signedIn, "192.0.2.1", .submissions, at: .milliseconds(50_600)).isAllowed)
    }

    @Test func rejectionIsFalShaped() throws {
        let limiter = limiter()
        for _ in 0..<5 {
            _ = limiter.anonymous("198.51.100.7", .submissions, at: .zero)
        }
        let rejection = try #require(limiter.anonymous("198.51.100.7", .submissions, at: .zero).rejection)
        #expect(rejection.status == 429)
        #expect(rejection.errorType == "rate_limited")
        #expect(
            rejection.detail
                == "Rate limit exceeded: 20 submissions that start upstream work per minute for anonymous callers, retry in 3 s"
        )
        #expect(
            String(decoding: rejection.body.serialized(), as: UTF8.self)
                == #"{"detail":"Rate limit exceeded: 20 submissions that start upstream work per minute for anonymous callers, retry in 3 s","error_type":"rate_limited"}"#
        )
        #expect(rejection.headers.map { "\($0.0): \($0.1)" }.last == "retry-after: 3")

        for _ in 0..<100 {
            _ = limiter.keyed(signedIn, "198.51.100.7", .reads, at: .zero)
        }
        let reads = try #require(limiter.keyed(signedIn, "198.51.100.7", .reads, at: .zero).rejection)
        #expect(reads.detail == "Rate limit exceeded: 20 reads per second for signed-in callers, retry in 1 s")
        #expect(reads.headers.first.map { "\($0.0): \($0.1)" } == "ratelimit-policy: \"read\";q=20;w=1")
    }

    // MARK: - Who is counted

    @Test func anonymousCallersAreCountedPerIPAddress() {
        let limiter = limiter()
        for _ in 0..<5 {
            #expect(limiter.anonymous("192.0.2.1", .submissions, at: .zero).isAllowed)
        }
        #expect(!limiter.anonymous("192.0.2.1", .submissions, at: .zero).isAllowed)
        #expect(limiter.anonymous("192.0.2.2", .submissions, at: .zero).remaining == 4)
        #expect(limiter.anonymous("2001:db8::1", .submissions, at: .zero).remaining == 4)
        // A key used from the drained address has its own budget.
        #expect(limiter.keyed(signedIn, "192.0.2.1", .submissions, at: .zero).remaining == 24)
    }

    @Test func keyedCallersAreCountedPerKeyOnAnyAddress() {
        let limiter = limiter()
        let other = Principal.key(id: "k-other", tier: "signed-in")
        for index in 0..<25 {
            // One key, a new address each time: still one budget.
            #expect(limiter.keyed(signedIn, "192.0.2.\(index)", .submissions, at: .zero).isAllowed)
        }
        #expect(!limiter.keyed(signedIn, "203.0.113.9", .submissions, at: .zero).isAllowed)
        #expect(limiter.keyed(other, "192.0.2.0", .submissions, at: .zero).remaining == 24)
        #expect(limiter.anonymous("192.0.2.0", .submissions, at: .zero).remaining == 4)
    }

    @Test func submissionsAndReadsAreIndependent() {
        let limiter = limiter()
        for _ in 0..<5 {
            _ = limiter.anonymous("192.0.2.1", .submissions, at: .zero)
        }
        #expect(!limiter.anonymous("192.0.2.1", .submissions, at: .zero).isAllowed)
        for remaining in (0..<100).reversed() {
            #expect(limiter.anonymous("192.0.2.1", .reads, at: .zero).remaining == remaining)
        }
        #expect(!limiter.anonymous("192.0.2.1", .reads, at: .zero).isAllowed)
        // Drained reads leave submissions as they were: one token back after 3 s.
        #expect(limiter.anonymous("192.0.2.1", .submissions, at: .seconds(3)).isAllowed)
    }

    /// PROTOCOL.md §5.1: Python's `subscribe` polls every 0.1 s. A client must never be throttled by that.
    @Test func pythonSubscribePollingIsNeverThrottled() {
        let limiter = limiter()
        let start = Duration.seconds(1_000)
        #expect(limiter.anonymous("192.0.2.1", .submissions, at: start).isAllowed)
        var lowest = Int.max
        for poll in 1...600 {
            let decision = limiter.anonymous("192.0.2.1", .reads, at: start + .milliseconds(100 * poll))
            #expect(decision.isAllowed, "poll \(poll)")
            lowest = min(lowest, decision.remaining)
        }
        // The bucket never even dips: each 0.1 s refills two tokens, a poll takes one.
        #expect(lowest == 99)
        #expect(limiter.anonymous("192.0.2.1", .reads, at: start + .milliseconds(60_050)).isAllowed)
    }

    /// Two `subscribe` calls at once (20 reads a second) for ten minutes: exactly the sustained rate, never denied.
    @Test func twoJobsPolledAtFullSpeedAreNeverThrottled() {
        let limiter = limiter()
        var denied = 0
        for poll in 1...12_000 {
            if !limiter.anonymous("192.0.2.1", .reads, at: .milliseconds(50 * poll)).isAllowed {
                denied += 1
            }
        }
        #expect(denied == 0)
        // More at once than the budget holds: the burst of 100 goes, then requests are refused.
        let admitted = (0..<200).filter { _ in
            limiter.anonymous("192.0.2.1", .reads, at: .seconds(601)).isAllowed
        }
        #expect(admitted.count == 100)
    }

    @Test func adminIsNeverLimitedAndNeverStored() {
        let limiter = limiter()
        let admin = Principal.key(id: "k-admin", tier: "admin")
        for _ in 0..<10_000 {
            let decision = limiter.keyed(admin, "192.0.2.1", .submissions, at: .zero)
            guard decision.isAllowed, decision.headers.isEmpty, decision.rejection == nil else {
                Issue.record("admin limited: \(decision)")
                return
            }
        }
        #expect(limiter.keyed(admin, "192.0.2.1", .reads, at: .zero).isAllowed)
        #expect(limiter.count == 0)
    }

    @Test func aKeyWhoseTierChangesKeepsWhatItSpent() {
        let limiter = limiter()
        for _ in 0..<25 {
            _ = limiter.keyed(signedIn, "192.0.2.1", .submissions, at: .zero)
        }
        let promoted = Principal.key(id: "k-signed", tier: "pro")
        let decision = limiter.keyed(promoted, "192.0.2.1", .submissions, at: .seconds(6))
        // Spent 25, refilled 10 (at the old rate's worth of elapsed time) — not a fresh 125.
        #expect(decision.remaining == 9)
        #expect(headers(decision).first == "ratelimit-policy: \"submit\";q=500;w=60")
    }

    // MARK: - Memory

    @Test func tableStaysBoundedUnderManyCallers() {
        let limiter = limiter(maxEntries: 1_000)
        var largest = 0
        for index in 0..<100_000 {
            // One poll each, a millisecond apart: a read bucket is full again 50 ms after its one poll.
            let decision = limiter.anonymous("ip-\(index)", .reads, at: .milliseconds(index))
            #expect(decision.remaining == 99)
            if index % 500 == 0 { largest = max(largest, limiter.count) }
        }
        largest = max(largest, limiter.count)
        #expect(largest <= 1_000)
        #expect(limiter.count > 0)
    }

    @Test func pruningNeverForgetsABucketThatIsNotFull() {
        let limiter = limiter(maxEntries: 1_000)
        for _ in 0..<5 {
            _ = limiter.anonymous("victim", .submissions, at: .zero)
        }
        for index in 0..<100_000 {
            _ = limiter.anonymous("ip-\(index)", .reads, at: .microseconds(100 * index))
        }
        #expect(limiter.count <= 1_000)
        // After 10 s the drained bucket holds 3⅓ tokens, not the 5 a forgotten (fresh) one would.
        let admitted = (0..<5).filter { _ in
            limiter.anonymous("victim", .submissions, at: .seconds(10)).isAllowed
        }
        #expect(admitted.count == 3)
    }

    @Test func underAFloodTheFullestBucketsGoFirst() {
        let limiter = limiter(maxEntries: 100)
        for _ in 0..<5 {
            _ = limiter.anonymous("victim", .submissions, at: .zero)
        }
        // A thousand new addresses at one instant: nothing refills, so nothing is full; the table must still hold.
        for index in 0..<1_000 {
            _ = limiter.anonymous("flood-\(index)", .submissions, at: .zero)
            #expect(limiter.count <= 100)
        }
        #expect(!limiter.anonymous("victim", .submissions, at: .zero).isAllowed)
    }

    @Test func pruneDropsOnlyFullBuckets() {
        let limiter = limiter()
        _ = limiter.anonymous("a", .reads, at: .zero)  // full again at 50 ms
        _ = limiter.anonymous("b", .submissions, at: .zero)  // full again at 3 s
        #expect(limiter.count == 2)
        #expect(limiter.prune(now: .milliseconds(49)) == 0)
        #expect(limiter.prune(now: .milliseconds(50)) == 1)
        #expect(limiter.count == 1)
        #expect(limiter.prune(now: .seconds(3)) == 1)
        #expect(limiter.count == 0)
    }

    // MARK: - Concurrency

    @Test(arguments: [
        (RateLimitPolicy.Budget.submissions, 5.0, 20.0 / 60),
        (.reads, 100.0, 20.0),
    ])
    func manyThreadsOnOneBucketNeverOverAdmit(budget: RateLimitPolicy.Budget, burst: Double, rate: Double) {
        // Each reading of the clock advances it by a microsecond: 80 000 checks span 80 ms.
        let counters = Counters()
        let limiter = RateLimiter(policy: .standard, maxEntries: 1_000) {
            .microseconds(counters.ticks.add(1, ordering: .relaxed).newValue)
        }
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            var mine = 0
            for _ in 0..<5_000 {
                if limiter.check(principal: .anonymous, clientIP: "192.0.2.1", budget: budget).isAllowed {
                    mine += 1
                }
            }
            counters.admitted.add(mine, ordering: .relaxed)
        }
        let elapsed = Double(counters.ticks.load(ordering: .relaxed)) / 1_000_000
        let ceiling = Int((burst + rate * elapsed).rounded(.down))
        let admitted = counters.admitted.load(ordering: .relaxed)
        #expect(admitted <= ceiling)
        #expect(admitted >= Int(burst))
    }

    private func headers(_ decision: RateLimitDecision) -> [String] {
        decision.headers.map { "\($0.0): \($0.1)" }
    }

    private final class Counters: Sendable {
        let ticks = Atomic<Int64>(0)
        let admitted = Atomic<Int>(0)
    }
}

extension RateLimiter {
    fileprivate func anonymous(_ ip: String, _ budget: RateLimitPolicy.Budget, at now: Duration) -> RateLimitDecision {
        check(principal: .anonymous, clientIP: ip, budget: budget, now: now)
    }

    fileprivate func keyed(
        _ principal: Principal,
        _ ip: String,
        _ budget: RateLimitPolicy.Budget,
        at now: Duration
    ) -> RateLimitDecision {
        check(principal: principal, clientIP: ip, budget: budget, now: now)
    }
}

/// The policy's per-request reads and per-caller watcher places.
@Suite struct RateLimitPolicyShapeTests {
    /// 1,000 requests in flight on one key, each polled ten times a second, never touch each other's budget.
    @Test func readsOfOneRequestAreCountedPerRequestAndCaller() {
        let limiter = RateLimiter(policy: .standard) { .zero }
        let pro = Principal.key(id: "k", tier: "pro")
        for second in 0..<3 {
            for id in 0..<1_000 {
                for poll in 0..<10 {
                    let now = Duration.seconds(second) + .milliseconds(100 * poll)
                    let decision = limiter.check(
                        principal: pro,
                        clientIP: "",
                        budget: .requestReads,
                        requestID: "r\(id)",
                        now: now
                    )
                    #expect(decision.isAllowed)
                }
            }
        }
        // One request read far faster than any client polls is limited, for that request and caller only.
        var refused = 0
        for _ in 0..<200 {
            if !limiter.check(principal: pro, clientIP: "", budget: .requestReads, requestID: "hot", now: .seconds(5))
                .isAllowed
            {
                refused += 1
            }
        }
        #expect(refused == 100)
        let other = Principal.key(id: "other", tier: "pro")
        #expect(
            limiter.check(principal: other, clientIP: "", budget: .requestReads, requestID: "hot", now: .seconds(5))
                .isAllowed
        )
    }

    @Test func watcherPlacesAreCappedByTierAndGivenBack() {
        var policy = RateLimitPolicy.standard
        policy.watchers[.signedIn] = 2
        let limiter = RateLimiter(policy: policy) { .zero }
        let key = Principal.key(id: "k", tier: "signed-in")
        let first = limiter.acquireWatcher(principal: key, clientIP: "")
        var second = limiter.acquireWatcher(principal: key, clientIP: "")
        #expect(first != nil && second != nil)
        #expect(limiter.acquireWatcher(principal: key, clientIP: "") == nil)
        first?.release()
        first?.release()  // idempotent
        #expect(limiter.watchers(principal: key, clientIP: "") == 1)
        second = nil  // a lease that goes away gives its place back
        #expect(limiter.watchers(principal: key, clientIP: "") == 0)
        #expect(second == nil)
        let admin = Principal.key(id: "a", tier: "admin")
        let many = (0..<10).compactMap { _ in limiter.acquireWatcher(principal: admin, clientIP: "") }
        #expect(many.count == 10)
    }
}
