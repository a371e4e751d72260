import NIOCore
import NIOHTTP1
import RelayCore
import RelayJobs
import RelayStore
import Synchronization

/// The fleet's node-to-node route and the steps the queue and media responders take for what another node holds
/// (cluster mode, DESIGN.md "A fleet"): a request id taken elsewhere is adopted from the registry and then answered
/// here; a blob stored elsewhere is copied from its holder and then served here.
extension RelayServices {
    /// `POST /_cluster/v1/follow` `{"model", "key", "input", "after"}`: a peer that waits on a key this node claimed
    /// follows the key's job here. Its request attaches to the job (or finds the result, or starts the job again
    /// after a restart) and gets the job's events after `after`. With `"request_id"` (and `"owner_key_id"`), a peer
    /// that adopted a request this node took follows that request's own job instead (404 when it is not here).
    func respondPeer(_ request: RouteRequest) -> RouteAnswer {
        guard let fleet else { return request.error(.notFound("This relay is a single node, not a fleet")) }
        guard let token = request.facts.headers.first(name: "x-relay-cluster-token"),
            Self.constantTimeEqual(Array(token.utf8), Array(fleet.peerToken.utf8))
        else {
            return request.error(.unauthorized("Peers present the fleet's token"))
        }
        guard let body = request.jsonObject, let modelID = body["model"]?.stringValue,
            let model = catalog.model(modelID), let endpoint = EndpointID(modelID),
            let keyHex = body["key"]?.stringValue, let digest = Digest128(hex: keyHex),
            let fields = body["input"]?.objectValue
        else {
            return request.error(.badRequest("A follow names a known model, its key and its input"))
        }
        let input: ModelInput
        do {
            input = try ModelInput(model: model, input: fields)
        } catch {
            return request.error(error)
        }
        let after = max(0, body["after"]?.intValue ?? 0)
        if let id = body["request_id"]?.stringValue {
            guard let held = jobs.request(id, keyID: body["owner_key_id"]?.stringValue), held.job.key.digest == digest
            else {
                return request.error(.notFound("Request \(id) is not held here"))
            }
            return .follow(JobFollow(request: held, kind: .peerEvents(after: after, detachOnLeave: false)))
        }
        let key = RequestKey(digest: digest)
        // A request of the peer's: not registered again, never counted against a caller.
        let followed = FleetRequest(
            id: RequestID.make(),
            endpoint: endpoint.description,
            modelID: modelID,
            key: key,
            input: [],
            ownerKeyID: nil,
            createdAt: .now(),
            cancelled: false,
            nodeID: ""
        )
        let made = jobs.adopt(followed, input: input, endpoint: endpoint)
        return .follow(JobFollow(request: made, kind: .peerEvents(after: after, detachOnLeave: true)))
    }

    /// For a request id this node does not hold, in a fleet: looks it up in the registry, adopts it, and answers
    /// `request` again once that is done (on the connection's loop). nil when there is nothing to ask.
    func adoptingFromFleet(_ request: RouteRequest) -> RouteAnswer? {
        guard let fleet, !request.tiersAsked, let id = request.route.requestID, !jobs.holds(id) else { return nil }
        let catalog = self.catalog
        let jobs = self.jobs
        let promise = request.eventLoop.makePromise(of: FalError?.self)
        promise.completeWithTask {
            let found: FleetRequest?
            do {
                found = try await fleet.request(id)
            } catch {
                // Not knowing is not "not found": the client retries once the database answers.
                return .unavailable("cluster_unavailable: \(error)", type: "cluster_unavailable")
            }
            guard let found, let (input, endpoint) = found.modelInput(models: catalog.model) else { return nil }
            // A request whose node is gone is served from the fleet's index when it finished (a hit here, not new
            // work); one whose node lives follows its own job there (`ClusterUpstream`), numbers and all.
            if !fleet.isLive(node: found.nodeID), !jobs.hasResultOrWork(for: found.key, input: input),
                let (result, _) = try? await fleet.lookup(found.key),
                let result, result.modelID == input.model.id, result.canonicalInput == input.canonicalBytes
            {
                jobs.results.store(found.key, result)
            }
            let adopted = jobs.adopt(found, input: input, endpoint: endpoint)
            // Its first answer waits (a second at most) until this node holds what the request's node had.
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let once = Once()
                let timeout = Task {
                    try? await Task.sleep(for: .seconds(1))
                    if once.claim() { done.resume() }
                }
                adopted.job.whenCaughtUp {
                    timeout.cancel()
                    if once.claim() { done.resume() }
                }
            }
            return nil
        }
        let again = request.withTiersAsked
        return .later(
            promise.futureResult.map { unavailable in
                guard let unavailable else { return self.respond(again) }
                return request.error(unavailable, requestID: id, extraHeaders: [("retry-after", "1")])
            }
        )
    }

    /// A submission memory cannot answer: the result tiers beneath it are asked first, off the event loop (this
    /// node's manifest files, then in a fleet the fleet's result index), and a result found there is put in memory,
    /// so the submission is a hit like any other. nil when there is nothing to ask (`no-cache`, a result or a job in
    /// memory, nothing beneath it). Every transport's submission comes through here (`/ws` and realtime too).
    func resultTiersFirst(
        key: RequestKey,
        input: ModelInput,
        endpoint: EndpointID,
        principal: Principal,
        webhook: String? = nil,
        noCache: Bool,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<ResultTierAnswer>? {
        guard !noCache else { return nil }
        let fleetTier = fleet.flatMap { fleet -> FleetResultTier? in
            guard JobTable.isCacheable(input) else { return nil }
            let registering = FleetRequest(
                endpoint: endpoint,
                input: input,
                key: key,
                ownerKeyID: principal.keyID,
                nodeID: fleet.nodeID,
                webhookURL: webhook
            )
            return FleetResultTier(fleet: fleet, registering: registering)
        }
        let tiers = jobs.tiersToAsk(for: key, input: input, fleet: fleetTier)
        guard !tiers.isEmpty else { return nil }
        let results = jobs.results
        let promise = eventLoop.makePromise(of: ResultTierAnswer.self)
        promise.completeWithTask {
            var registered: FleetRequest?
            for tier in tiers {
                var answer = await tier.fill(key, input: input, into: results)
                registered = answer.registered ?? registered
                answer.registered = registered
                if answer.found || answer.runningElsewhere { return answer }
            }
            return ResultTierAnswer(found: false, registered: registered)
        }
        return promise.futureResult
    }

    /// `resultTiersFirst` for a route's submission: answered again once the tiers were asked.
    func resultTiersFirst(
        _ request: RouteRequest,
        input: ModelInput,
        endpoint: EndpointID,
        webhook: String?,
        noCache: Bool
    ) -> RouteAnswer? {
        guard !request.tiersAsked,
            let asking = resultTiersFirst(
                key: requestKey(input, principal: request.principal),
                input: input,
                endpoint: endpoint,
                principal: request.principal,
                webhook: webhook,
                noCache: noCache,
                eventLoop: request.eventLoop
            )
        else { return nil }
        let asked = request.withTiersAsked
        return .later(
            asking.map { answer in
                var again = asked
                again.sharesFleetWork = answer.runningElsewhere
                again.registered = answer.registered
                return self.respond(again)
            }
        )
    }

    /// A blob's record: from this node's store, else (in a fleet) copied from a node that holds it first.
    func mediaRecord(
        _ file: MediaFileRequest,
        fromPeer: Bool = false,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<BlobRecord?> {
        let local = media.record(file.digest, mediaType: file.mediaType, eventLoop: eventLoop)
        guard let fleet, !fromPeer else { return local }
        let media = self.media
        return local.flatMap { record in
            if record != nil { return eventLoop.makeSucceededFuture(record) }
            let promise = eventLoop.makePromise(of: Bool.self)
            promise.completeWithTask { await fleet.fetchBlob(file.digest, mediaType: file.mediaType) }
            return promise.futureResult.flatMap { copied in
                copied
                    ? media.record(file.digest, mediaType: file.mediaType, eventLoop: eventLoop)
                    : eventLoop.makeSucceededFuture(nil)
            }
        }
    }

    /// A result call for a request whose job here has not heard of its end, which another node told the client: the
    /// fleet's result index is read (the owner publishes a result as it ends) and a result found there ends the job
    /// here, so the call is answered with it; the job's own end is waited for too, up to 5 s in all (a loaded fleet,
    /// a node draining, one restarting, was seen to take a job over in about a second).
    func endFromFleet(_ job: Job, request: RouteRequest) -> RouteAnswer {
        // A `no-cache` request's own run is waited for: the index holds another run's output.
        guard let fleet, job.shared else { return logReaches(.max, of: job, request: request, within: .seconds(5)) }
        let promise = request.eventLoop.makePromise(of: Void.self)
        promise.completeWithTask {
            let deadline = ContinuousClock.now + .seconds(5)
            while !job.isTerminal, ContinuousClock.now < deadline {
                if let (found, _) = try? await fleet.lookup(job.key), let found, found.modelID == job.model.id,
                    found.canonicalInput == job.input.canonicalBytes,
                    case .success(let result, let seconds) = found.outcome
                {
                    job.receive(.succeeded(result: result, inferenceSeconds: seconds))
                    return
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        // Then the end, made durable here (or the rest of the 5 s).
        return .later(
            promise.futureResult.map { self.logReaches(.max, of: job, request: request, within: .seconds(2)) }
        )
    }

    /// Answers `request` again once `job`'s log here reaches `sequence` (`.max`: the job's end) or the job ends, or
    /// after `limit` at most.
    func logReaches(_ sequence: Int, of job: Job, request: RouteRequest, within limit: TimeAmount) -> RouteAnswer {
        let promise = request.eventLoop.makePromise(of: Void.self)
        let subscription = job.subscribe(after: 0) { event in
            if event.sequence >= sequence || event.isTerminal { promise.succeed() }
        }
        if job.status.lastSequence >= sequence || job.isTerminal || subscription.token == 0 { promise.succeed() }
        let timeout = request.eventLoop.scheduleTask(in: limit) { promise.succeed() }
        var again = request
        again.logAwaited = true
        let answer = again
        return .later(
            promise.futureResult.map {
                timeout.cancel()
                if subscription.token != 0 { job.unsubscribe(subscription.token) }
                return self.respond(answer)
            }
        )
    }

    /// Submissions need the fleet's registry: while its database is away they get 503 with `Retry-After`.
    var fleetRefusal: FalError? {
        guard let fleet, !fleet.isAvailable else { return nil }
        return .unavailable(
            "cluster_unavailable: the fleet's database cannot be reached; retry shortly",
            type: "cluster_unavailable"
        )
    }

    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(lhs, rhs) { difference |= a ^ b }
        return difference == 0
    }
}
