import RelayCore
import RelayJobs
import Synchronization

/// A key's spend: what a generation it started held against its budget is settled with what the generation cost.
extension RelayServices {
    /// Settles `reservation` when `job` ends: a success costs what its output measures in its model's unit (the
    /// estimate when the price is known but the output does not say); a failure or a cancel costs nothing.
    func settle(_ reservation: SpendLedger.Reservation, of job: Job, in spend: SpendLedger) {
        let authenticator = authenticator
        let settled = Atomic<Bool>(false)
        let handle: @Sendable (JobEvent) -> Void = { event in
            guard case .completed(let outcome) = event.kind,
                !settled.exchange(true, ordering: .relaxed)
            else { return }
            var cost: Double?
            if case .success(let result, let seconds) = outcome {
                cost =
                    job.model.price.cost(result: result, input: job.input.fields, inferenceSeconds: seconds)
                    ?? (reservation.amount > 0 ? reservation.amount : nil)
            }
            spend.settle(reservation, cost: cost, budget: authenticator.budget(for: reservation.keyID))
        }
        let subscription = job.subscribe(after: 0, handle)
        for event in subscription.replay { handle(event) }
    }

    /// `budget_exceeded`'s detail: which cap, how much of it is spent, and when it starts again.
    static func budgetDetail(_ refusal: SpendLedger.Refusal, keyID: String, currency price: ModelPrice) -> String {
        let period = refusal.period == .day ? "daily" : "monthly"
        let spent =
            refusal.nodes == 1
            ? "\(money(refusal.spent)) spent"
            : "\(money(refusal.spent)) spent through this node, which holds 1/\(refusal.nodes) of it"
        return "Key \(keyID) would go past its \(period) budget of \(money(refusal.budget)) \(price.currency) "
            + "(\(spent)); it starts again at \(refusal.resetsAt.iso8601)"
    }

    /// An amount to the cent (to the tenth of a cent below one).
    static func money(_ amount: Double) -> String {
        let scale = amount < 1 ? 1000.0 : 100.0
        let rounded = (amount * scale).rounded() / scale
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    }
}
