import RelayCore
import Synchronization
import Testing

@testable import RelayJobs

/// Budgets per key: the check and the accounting under one lock (no race lets more work start than a budget
/// covers), periods that start again at UTC midnight and on the 1st, and one warning at 80 %.
@Suite struct SpendLedgerTests {
    let noon = Timestamp(iso8601: "2026-12-06T12:00:00Z")!
    let budget = SpendBudget(daily: 0.25, monthly: 1)

    @Test func concurrentReservationsNeverPassTheBudget() async {
        let ledger = SpendLedger()
        let granted = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<100 {
                group.addTask {
                    if case .success = ledger.reserve(0.025, keyID: "k", budget: budget, now: noon) { return true }
                    return false
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(granted == 10)
        #expect(ledger.snapshot(now: noon)["k"]?.reserved ?? 0 > 0.249)
    }

    @Test func aSettledGenerationIsSpentAndAFailedOneFreesItsHold() throws {
        let ledger = SpendLedger()
        let first = try ledger.reserve(0.2, keyID: "k", budget: budget, now: noon).get()
        guard case .failure(let refusal) = ledger.reserve(0.1, keyID: "k", budget: budget, now: noon) else {
            Issue.record("0.2 held and 0.1 more would pass 0.25")
            return
        }
        #expect(refusal.period == .day && refusal.budget == 0.25)
        #expect(refusal.resetsAt == Timestamp(iso8601: "2026-12-07T00:00:00Z"))
        ledger.settle(first, cost: nil, budget: budget, now: noon)  // it failed: nothing spent
        let second = try ledger.reserve(0.2, keyID: "k", budget: budget, now: noon).get()
        ledger.settle(second, cost: 0.05, budget: budget, now: noon)  // cheaper than its estimate
        #expect(ledger.snapshot(now: noon)["k"]?.daySpent == 0.05)
        #expect(ledger.snapshot(now: noon)["k"]?.reserved == 0)
        // Other keys have budgets of their own.
        #expect((try? ledger.reserve(0.25, keyID: "other", budget: budget, now: noon).get()) != nil)
    }

    @Test func theDayAndTheMonthStartAgain() throws {
        let ledger = SpendLedger()
        for hour in 0..<4 {
            let day = Timestamp(secondsSinceEpoch: noon.secondsSinceEpoch + Double(hour) * 86_400)
            let held = try ledger.reserve(0.25, keyID: "k", budget: budget, now: day).get()
            ledger.settle(held, cost: 0.25, budget: budget, now: day)
        }
        // A fifth day: 1.0 spent this month already.
        let fifth = Timestamp(secondsSinceEpoch: noon.secondsSinceEpoch + 4 * 86_400)
        guard case .failure(let refusal) = ledger.reserve(0.1, keyID: "k", budget: budget, now: fifth) else {
            Issue.record("the monthly cap holds")
            return
        }
        #expect(refusal.period == .month && refusal.resetsAt == Timestamp(iso8601: "2027-01-01T00:00:00Z"))
        let january = Timestamp(iso8601: "2027-01-01T00:00:01Z")!
        #expect((try? ledger.reserve(0.1, keyID: "k", budget: budget, now: january).get()) != nil)
    }

    @Test func eightyPercentIsWarnedOncePerPeriod() throws {
        let warnings = Mutex<[String]>([])
        let ledger = SpendLedger { key, period, _, _ in warnings.withLock { $0.append("\(key) \(period.rawValue)") } }
        for _ in 0..<9 {
            let held = try ledger.reserve(0.025, keyID: "k", budget: budget, now: noon).get()
            ledger.settle(held, cost: 0.025, budget: budget, now: noon)
        }
        #expect(warnings.withLock { $0 } == ["k day"])
    }
}

extension SpendLedgerTests {
    /// A generation whose cost cannot be estimated holds nothing, but needs the budget not to be used up already (a
    /// budget of 0 admits none).
    @Test func aGenerationOfUnknownCostNeedsBudgetLeft() throws {
        let ledger = SpendLedger()
        #expect((try? ledger.reserve(0, keyID: "k", budget: budget, now: noon).get()) != nil)
        let held = try ledger.reserve(0.25, keyID: "k", budget: budget, now: noon).get()
        ledger.settle(held, cost: 0.25, budget: budget, now: noon)
        #expect((try? ledger.reserve(0, keyID: "k", budget: budget, now: noon).get()) == nil)
        #expect((try? ledger.reserve(0, keyID: "z", budget: SpendBudget(daily: 0), now: noon).get()) == nil)
    }
}

extension SpendLedgerTests {
    /// In a fleet each node holds its share of a cap: three nodes together never pass it.
    @Test func aNodeOfAFleetHoldsItsShareOfACap() throws {
        let ledger = SpendLedger()
        ledger.setFleetShare(nodes: 3)
        let fleetBudget = SpendBudget(daily: 0.075)
        #expect((try? ledger.reserve(0.025, keyID: "k", budget: fleetBudget, now: noon).get()) != nil)
        guard case .failure(let refusal) = ledger.reserve(0.025, keyID: "k", budget: fleetBudget, now: noon) else {
            Issue.record("a third of 0.075 is one generation")
            return
        }
        #expect(refusal.budget == 0.075 && refusal.nodes == 3)
        ledger.setFleetShare(nodes: 1)
        #expect((try? ledger.reserve(0.025, keyID: "k", budget: fleetBudget, now: noon).get()) != nil)
    }
}
