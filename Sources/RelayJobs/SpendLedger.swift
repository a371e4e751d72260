public import RelayCore
import Synchronization

/// What each key spent upstream today and this month (UTC), and what its generations still running are expected to
/// cost: the budget check (`reserve`) and the accounting (`settle`) in one lock, so concurrent submissions can never
/// start more work than a budget covers. Time is passed in.
public final class SpendLedger: Sendable {
    /// A budget a submission would go past: which one, and when it starts again.
    public struct Refusal: Error, Sendable, Hashable {
        public var period: Timestamp.Period
        /// The key's whole cap, and what this node spent of its share of it (`nodes`: live nodes of the fleet).
        public var budget: Double
        public var spent: Double
        public var resetsAt: Timestamp
        public var nodes = 1
    }

    /// Money held for a generation from its start until its cost is known.
    public struct Reservation: Sendable, Hashable {
        public let keyID: String
        public let amount: Double
    }

    /// One key's spend in the current day and month (a period's totals start again at 0 when it changes).
    public struct Account: Sendable, Hashable {
        public var day: Timestamp
        public var daySpent = 0.0
        public var month: Timestamp
        public var monthSpent = 0.0
        /// Held for generations still running.
        public var reserved = 0.0
        /// The budget thresholds already warned about in this period (a warning is given once).
        var warnedDay = false
        var warnedMonth = false

        public init(day: Timestamp, daySpent: Double = 0, month: Timestamp, monthSpent: Double = 0) {
            self.day = day
            self.daySpent = daySpent
            self.month = month
            self.monthSpent = monthSpent
        }

        mutating func roll(to now: Timestamp) {
            let today = now.start(of: .day)
            if today != day {
                (day, daySpent, warnedDay) = (today, 0, false)
            }
            let thisMonth = now.start(of: .month)
            if thisMonth != month {
                (month, monthSpent, warnedMonth) = (thisMonth, 0, false)
            }
        }
    }

    /// The share of a budget past which a warning is given (once per period).
    public static let warningShare = 0.8

    private let accounts = Mutex<[String: Account]>([:])
    /// Live nodes of the fleet (1 for a single node): each node holds this share of every cap, as it does of every
    /// rate budget, so the fleet together never passes a cap.
    private let fleetNodes = Atomic<Int>(1)

    /// Sets the number of live nodes whose share of each cap this node enforces.
    public func setFleetShare(nodes: Int) {
        fleetNodes.store(max(1, nodes), ordering: .relaxed)
    }
    /// Told when a key's spend passes `warningShare` of a budget.
    private let warn: @Sendable (_ keyID: String, _ period: Timestamp.Period, _ spent: Double, _ budget: Double) -> Void

    public init(
        accounts: [String: Account] = [:],
        warn: @escaping @Sendable (String, Timestamp.Period, Double, Double) -> Void = { _, _, _, _ in }
    ) {
        self.accounts.withLock { $0 = accounts }
        self.warn = warn
    }

    /// Holds `amount` for a generation `keyID` starts now, unless what it spent and holds already plus `amount` would
    /// pass one of `budget`'s caps.
    public func reserve(
        _ amount: Double,
        keyID: String,
        budget: SpendBudget,
        now: Timestamp = .now()
    ) -> Result<Reservation, Refusal> {
        let nodes = fleetNodes.load(ordering: .relaxed)
        return accounts.withLock { accounts in
            var account = accounts[keyID] ?? Account(day: now.start(of: .day), month: now.start(of: .month))
            account.roll(to: now)
            defer { accounts[keyID] = account }
            // A generation whose cost cannot be estimated (0) still needs the budget not to be used up already.
            let slack = amount > 0 ? 1e-9 : -1e-9
            let periods = [
                (Timestamp.Period.day, budget.daily, account.daySpent), (.month, budget.monthly, account.monthSpent),
            ]
            for case let (period, cap?, spent) in periods
            where spent + account.reserved + amount > cap / Double(nodes) + slack {
                // This node holds 1/nodes of the cap (a fleet); the refusal names the whole cap.
                return .failure(
                    Refusal(period: period, budget: cap, spent: spent, resetsAt: now.startOfNext(period), nodes: nodes)
                )
            }
            account.reserved += amount
            return .success(Reservation(keyID: keyID, amount: amount))
        }
    }

    /// The generation ended: its hold is released and `cost` (nil: it made nothing billable, a failure or a cancel)
    /// is spent. Warns once per period when the spend passes `warningShare` of a cap of `budget`.
    public func settle(_ reservation: Reservation, cost: Double?, budget: SpendBudget, now: Timestamp = .now()) {
        let warnings = accounts.withLock { accounts -> [(Timestamp.Period, Double, Double)] in
            guard var account = accounts[reservation.keyID] else { return [] }
            account.roll(to: now)
            defer { accounts[reservation.keyID] = account }
            account.reserved = max(0, account.reserved - reservation.amount)
            guard let cost, cost > 0 else { return [] }
            account.daySpent += cost
            account.monthSpent += cost
            var warnings: [(Timestamp.Period, Double, Double)] = []
            if let daily = budget.daily, !account.warnedDay, account.daySpent >= daily * Self.warningShare {
                account.warnedDay = true
                warnings.append((.day, account.daySpent, daily))
            }
            if let monthly = budget.monthly, !account.warnedMonth, account.monthSpent >= monthly * Self.warningShare {
                account.warnedMonth = true
                warnings.append((.month, account.monthSpent, monthly))
            }
            return warnings
        }
        for (period, spent, cap) in warnings { warn(reservation.keyID, period, spent, cap) }
    }

    /// Every key's account as of `now` (periods rolled), for persisting and reporting.
    public func snapshot(now: Timestamp = .now()) -> [String: Account] {
        accounts.withLock { accounts in
            for key in accounts.keys { accounts[key]?.roll(to: now) }
            return accounts
        }
    }
}
