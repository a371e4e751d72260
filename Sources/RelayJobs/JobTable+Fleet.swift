public import RelayCore

extension JobTable {
    /// A request another node of the fleet took (found in the registry by its id), served on this node from now on
    /// under the same id: a hit when the result is cached here, attached to the key's job when one runs here, or a
    /// new local job (whose upstream follows the node that owns the key's work). Returns the request this node
    /// already holds when it has one with that id.
    public func adopt(_ adopted: FleetRequest, input: ModelInput, endpoint: EndpointID) -> RelayRequest {
        if let held = state.withLock({ $0.requests[adopted.id] }) {
            return held
        }
        guard
            let request = submit(
                input,
                endpoint: endpoint,
                key: adopted.key,
                ownerKeyID: adopted.ownerKeyID,
                directives: CacheDirectives(noCache: adopted.noCache),
                registered: adopted,
                mayStartWork: { true }
            )
        else { preconditionFailure("an adoption that may always start work was refused") }
        if adopted.cancelled {
            _ = cancel(adopted.id, keyID: adopted.ownerKeyID, fromFleet: true)
        }
        return request
    }

    /// Whether this node can answer a submission of `key` without upstream work of its own: a cached result or a job
    /// in flight (in a fleet, anything else is first looked up in the fleet's result index).
    public func hasResultOrWork(for key: RequestKey, input: ModelInput) -> Bool {
        if state.withLock({ $0.inFlight[key].map { !$0.isTerminal } ?? false }) { return true }
        return results.probe(key, modelID: input.model.id, canonicalInput: input.canonicalBytes) != .miss
    }

    /// After a restart in a fleet: requests that were in flight here when the node stopped are forgotten instead of
    /// ending with `restartedError`, so the next call for one adopts it from the registry again and it completes
    /// (on the node that took its work over, or here). Returns how many were forgotten.
    @discardableResult
    public func forgetInterrupted() -> Int {
        state.withLock { state in
            // A request kept compact ended with a result: never interrupted.
            let interrupted = state.requests.liveValues.filter { request in
                if case .completed(.failure(let error)) = request.job.status.phase {
                    return error == Self.restartedError
                }
                return false
            }
            for request in interrupted { state.requests[request.id] = nil }
            return interrupted.count
        }
    }

    /// Whether this node holds a request with this id, whoever may see it (the fast lane leaves unknown ids to the
    /// path that asks the fleet).
    public func holds(_ id: String) -> Bool {
        state.withLock { $0.requests.contains(id) }
    }

    /// Whether this node holds a request with this id that has ended here (a result call for one still running here
    /// may be for a job another node already told the client ended: the fast lane leaves it to the path that waits).
    public func holdsEnded(_ id: String) -> Bool {
        state.withLock { $0.requests.hasEnded(id) }
    }
}
