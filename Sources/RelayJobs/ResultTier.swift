public import RelayCore
public import RelayStore

/// A place beneath this node's memory where a finished result for a key may be (DESIGN.md "A fleet"): this node's
/// manifest files (`ResultIndex`, single node and fleet alike) and, in a fleet, the fleet's result index in
/// PostgreSQL. Memory answers a submission on the event loop; a tier is asked only when memory cannot, off the event
/// loop, and what it finds is in memory when it returns, so the submission is then answered there like any hit.
public protocol ResultTier: Sendable {
    /// Puts the result this tier has for `key` (for exactly this input) into `results`.
    func fill(_ key: RequestKey, input: ModelInput, into results: ResultIndex) async -> ResultTierAnswer
}

/// What a tier found.
public struct ResultTierAnswer: Sendable, Hashable {
    /// The result is in memory now.
    public var found: Bool
    /// No result, but another node of the fleet runs the key's job now: follow it rather than start one.
    public var runningElsewhere: Bool
    /// The submission's request, registered in the fleet with the same statement: submitted under this id and age,
    /// and not registered again.
    public var registered: FleetRequest?

    public init(found: Bool, runningElsewhere: Bool = false, registered: FleetRequest? = nil) {
        self.found = found
        self.runningElsewhere = runningElsewhere
        self.registered = registered
    }
}

/// The files tier: a manifest the index knows of but has not decoded (after a restart, or past its decoded limit)
/// is read on the index's thread pool.
extension ResultIndex: ResultTier {
    public func fill(_ key: RequestKey, input: ModelInput, into results: ResultIndex) async -> ResultTierAnswer {
        guard let entry = await read(key) else { return ResultTierAnswer(found: false) }
        return ResultTierAnswer(found: entry.modelID == input.model.id && entry.canonicalInput == input.canonicalBytes)
    }
}

extension JobTable {
    /// The tiers to ask before submitting `input` under `key`, in order; empty when memory answers (a result or a
    /// job in flight here) or there is nothing beneath it to ask. Memory only: an event loop may call it.
    public func tiersToAsk(
        for key: RequestKey,
        input: ModelInput,
        fleet: (any ResultTier)?
    ) -> [any ResultTier] {
        if state.withLock({ $0.inFlight[key].map { !$0.isTerminal } ?? false }) { return [] }
        switch results.probe(key, modelID: input.model.id, canonicalInput: input.canonicalBytes) {
        case .hit:
            return []
        case .onDisk:
            return [results] + (fleet.map { [$0] } ?? [])
        case .miss:
            return fleet.map { [$0] } ?? []
        }
    }
}
