import NIOCore
import NIOHTTP1
import RelayCore
import RelayJobs

/// The fal queue and run APIs (PROTOCOL.md §2–§5): submit, run and `/stream`, status, result, cancel and the status
/// stream. Every transport's request for one of these routes is decided here.
extension RelayServices {
    func respondQueue(_ request: RouteRequest) -> RouteAnswer {
        if let adopting = adoptingFromFleet(request) { return adopting }
        switch request.route {
        case .submit(let endpoint), .run(let endpoint), .stream(let endpoint):
            return submit(request, endpoint: endpoint)
        case .status, .result:
            // In a fleet, another node may have told this client COMPLETED a moment before this node's copy of the
            // job heard of its end: a result call waits for the end here (briefly) rather than answer "in progress".
            if fleet != nil, !request.logAwaited, case .result(let app, let id) = request.route,
                let found = jobs.request(id, keyID: request.principal.keyID), found.endpoint.app == app.app,
                !found.phase.isCompleted
            {
                return endFromFleet(found.job, request: request)
            }
            return .response(answerRead(request.facts, route: request.route, principal: request.principal).response)
        case .cancel(let app, let id):
            let outcome = jobs.cancel(id, keyID: request.principal.keyID, app: app.app)
            if outcome == .notFound,
                case .refused(let error, let headers) = charge(
                    request.facts,
                    budget: .reads,
                    principal: request.principal
                )
            {
                return request.error(error, requestID: id, extraHeaders: headers)
            }
            let (status, body) = FalWire.cancelBody(outcome)
            return request.json(body, status: HTTPResponseStatus(statusCode: status), requestID: id)
        case .statusStream(let app, let id):
            return statusStream(request, app: app, id: id)
        default:
            return request.error(.internalError("not a queue route"))
        }
    }

    private func submit(_ request: RouteRequest, endpoint: EndpointID) -> RouteAnswer {
        let input: ModelInput
        switch modelInput(endpoint: endpoint, body: request.body) {
        case .success(let prepared): input = prepared
        case .failure(let error): return request.error(error)
        }
        var webhook: String?
        if case .submit = request.route, let url = QueryParameters(uri: request.facts.uri)["fal_webhook"] {
            if let error = webhooks.validate(url: url) { return request.error(error) }
            webhook = url
        }
        let platform: PlatformHeaders
        do {
            let query = QueryParameters(uri: request.facts.uri)
            platform = try PlatformHeaders(value: { request.facts.headers.first(name: $0) }, query: { query[$0] })
        } catch {
            return request.error(error)
        }
        let directives = FalWire.cacheDirectives(request.facts.headers)
        if let asking = resultTiersFirst(
            request,
            input: input,
            endpoint: endpoint,
            webhook: webhook,
            noCache: directives.contains("no-cache")
        ) {
            return asking
        }
        let submitted: RelayRequest
        let limitHeaders: [(String, String)]
        switch submit(
            input,
            endpoint: endpoint,
            facts: request.facts,
            principal: request.principal,
            directives: CacheDirectives(
                noCache: directives.contains("no-cache"),
                // fal's `X-Fal-Store-IO: 0` asks what `no-store` asks.
                noStore: directives.contains("no-store") || !platform.storeIO
            ),
            sharesFleetWork: request.sharesFleetWork,
            registered: request.registered,
            webhook: webhook,
            platform: platform
        ) {
        case .refused(let error, let headers):
            return request.error(error, extraHeaders: headers)
        case .submitted(let made, let headers):
            submitted = made
            limitHeaders = headers.isEmpty ? request.rateLimitHeaders : headers
        }
        let answer: RouteAnswer
        switch request.route {
        case .submit:
            if let webhook { webhooks.register(request: submitted, url: webhook) }
            answer = request.json(
                FalWire.submitResponse(submitted, base: queueBase(request.facts, app: endpoint.app)),
                requestID: submitted.id,
                extraHeaders: FalWire.cacheHeaders(submitted) + limitHeaders
            )
        case .run:
            answer = .follow(JobFollow(request: submitted, kind: .run))
        default:
            answer = .follow(JobFollow(request: submitted, kind: .partialStream))
        }
        return .afterRecorded(submitted, then: answer)
    }

    private func statusStream(_ request: RouteRequest, app: EndpointID, id: String) -> RouteAnswer {
        guard let found = jobs.request(id, keyID: request.principal.keyID), found.endpoint.app == app.app else {
            return .response(unknownRequest(request.facts, principal: request.principal, id: id))
        }
        // Resume after the last event the client saw: the header on reconnects, the query parameter for browsers
        // (EventSource cannot set headers on its first connect).
        let query = QueryParameters(uri: request.facts.uri)
        let lastSeen =
            (request.facts.headers.first(name: "last-event-id") ?? query["last_event_id"]).flatMap { Int($0) } ?? 0
        // A resume point ahead of this node's log (a request adopted a moment ago, whose job here is still catching
        // up with its node's): wait, briefly, for the log to reach it, so the answer is the one its node would give.
        if fleet != nil, !request.logAwaited, lastSeen > found.job.status.lastSequence, !found.phase.isCompleted {
            return logReaches(lastSeen, of: found.job, request: request, within: .seconds(1))
        }
        if lastSeen > 0, found.phase.isCompleted, lastSeen >= found.job.status.lastSequence {
            return .response(PreparedResponse(status: .noContent, headers: [], isHead: false))
        }
        // Watchers are capped per caller by tier, not by a request rate.
        let lease: WatcherLease?
        switch watcherPlace(request.facts, principal: request.principal) {
        case .success(let place): lease = place
        case .failure(let error): return request.error(error, requestID: id, extraHeaders: [("retry-after", "1")])
        }
        let stream = StatusStream(
            request: found,
            base: queueBase(request.facts, app: app.app),
            withLogs: query.flag("logs"),
            after: max(0, lastSeen),
            lease: lease
        )
        return .follow(JobFollow(request: found, kind: .statusStream(stream)))
    }

    /// A submission, however it came (HTTP, `/ws`, realtime): the caller's tier budget is charged only if the job
    /// table starts upstream work for it, at the moment it decides to (`JobTable.submit(mayStartWork:)`).
    func submit(
        _ input: ModelInput,
        endpoint: EndpointID,
        facts: RequestFacts,
        principal: Principal,
        directives: CacheDirectives = CacheDirectives(),
        sharesFleetWork: Bool = false,
        registered: FleetRequest? = nil,
        webhook: String? = nil,
        platform: PlatformHeaders = PlatformHeaders()
    ) -> Submission {
        if let unavailable = fleetRefusal {
            if let registered { fleet?.withdraw(registered) }
            return .refused(unavailable, headers: [("retry-after", "2")])
        }
        var refusal: (FalError, [(String, String)])?
        var headers: [(String, String)] = []
        var reservation: SpendLedger.Reservation?
        // Work another node runs costs nothing here; work started here is held against the key's budget, read now
        // (the key table may touch the disk) rather than under the job table's lock.
        let budgeted = spend.flatMap { spend in
            principal.keyID.map { (spend, $0, authenticator.budget(for: $0), input.model.price.estimate(input) ?? 0) }
        }
        let made = jobs.submit(
            input,
            endpoint: endpoint,
            key: requestKey(input, principal: principal),
            ownerKeyID: principal.keyID,
            directives: directives,
            registered: registered,
            sharesFleetWork: sharesFleetWork,
            webhook: webhook,
            platform: platform,
            // Work another node runs is followed here, not started: it holds none of the caller's places.
            inProgressCap: sharesFleetWork
                ? nil
                : rateLimiter?.inProgressCap(
                    principal: principal,
                    clientIP: principal.keyID == nil ? facts.clientIP : ""
                ),
            mayStartWork: {
                // `fal_max_queue_length`: refused rather than queued behind more than that many (work another node
                // runs is followed, not queued here).
                if let limit = platform.maxQueueLength, !sharesFleetWork, jobs.statistics.queueDepth > limit {
                    let waiting = jobs.statistics.queueDepth
                    refusal = (
                        .rateLimited(
                            "The queue holds \(waiting) requests, more than fal_max_queue_length (\(limit)); retry later"
                        ), [("retry-after", "1")]
                    )
                    return false
                }
                // The budget first: a submission it refuses uses none of the tier's rate.
                if case let (spend, keyID, budget, estimate)? = budgeted, !sharesFleetWork {
                    switch spend.reserve(estimate, keyID: keyID, budget: budget) {
                    case .success(let held):
                        reservation = held
                    case .failure(let over):
                        let detail = Self.budgetDetail(over, keyID: keyID, currency: input.model.price)
                        refusal = (.budgetExceeded(detail), [])
                        return false
                    }
                }
                switch charge(facts, budget: .submissions, principal: principal) {
                case .admitted(_, let charged):
                    headers = charged
                    return true
                case .refused(let error, let charged):
                    refusal = (error, charged)
                    if let reservation, case let (spend, _, budget, _)? = budgeted {
                        spend.settle(reservation, cost: nil, budget: budget)
                    }
                    reservation = nil
                    return false
                }
            }
        )
        guard let made else {
            // Refused after its key's lookup registered it: the fleet must not adopt it, nor deliver its webhook.
            if let registered { fleet?.withdraw(registered) }
            let (error, charged) = refusal ?? (.rateLimited("Rate limit exceeded"), [])
            return .refused(error, headers: charged)
        }
        if let seconds = platform.startTimeout { startDeadline(made, seconds: seconds, on: facts.channel?.eventLoop) }
        if let reservation, let spend { settle(reservation, of: made.job, in: spend) }
        return .submitted(made, rateLimitHeaders: headers)
    }

    /// `X-Fal-Request-Timeout`: a request whose job has not started `seconds` after its submission ends with 504 (and
    /// `X-Fal-Request-Timeout-Type: user`), detached from the job as a cancel would; the job runs on for any other
    /// request that shares it, and stops when none is left.
    private func startDeadline(_ request: RelayRequest, seconds: Double, on eventLoop: (any EventLoop)?) {
        guard case .queued = request.phase else { return }
        // Holds ids and a weak job only: a finished job's result is not kept alive by a deadline far ahead.
        let (jobs, id, owner) = (self.jobs, request.id, request.ownerKeyID)
        let check: @Sendable () -> Void = { [weak job = request.job] in
            guard let job, case .queued = job.status.phase else { return }
            _ = jobs.cancel(id, keyID: owner, because: .startTimeout(seconds))
        }
        let delay = TimeAmount.nanoseconds(Int64(min(seconds, 86_400) * 1e9))
        if let eventLoop {
            eventLoop.scheduleTask(in: delay) { check() }
        } else {
            Task {
                try? await Task.sleep(for: .nanoseconds(delay.nanoseconds))
                check()
            }
        }
    }

    /// The scheme of the URLs built for the client: the connection's, or `public_url`'s when the client reached the
    /// relay by `public_url`'s address (a load balancer in front that terminates TLS and forwards plain HTTP).
    func urlScheme(_ facts: RequestFacts) -> String {
        // Compared as the router compares hosts: without allocating on every status poll.
        guard let publicAddress, let host = facts.host, let (name, port) = HostPattern.split(host[...]),
            publicAddress.host.matches(name: name, port: port)
        else {
            return facts.scheme
        }
        return publicAddress.scheme
    }

    func queueBase(_ facts: RequestFacts, app: String) -> FalWire.QueueBase {
        // In a fleet every URL a client sees is the fleet's public one, whichever node made it.
        if fleet != nil, let publicAddress {
            return FalWire.QueueBase(origin: "\(publicAddress.scheme)://\(publicAddress.authority)", app: app)
        }
        return FalWire.QueueBase(scheme: urlScheme(facts), host: facts.host, app: app)
    }

    /// A status poll (`…/requests/{id}/status`) or a result fetch (`…/requests/{id}`), answered from the request
    /// table: the hottest reads there are.
    /// `principal` is the caller `admit` let through.
    func answerRead(_ facts: RequestFacts, route: Route, principal: Principal) -> ReadAnswer {
        let isHead = facts.method == .HEAD
        let app: EndpointID
        let id: String
        switch route {
        case .status(let a, let i), .result(let a, let i): (app, id) = (a, i)
        default:
            return ReadAnswer(
                response: PreparedResponse(error: .internalError("not a read"), requestID: nil, isHead: isHead),
                principal: principal
            )
        }
        guard let request = jobs.request(id, keyID: principal.keyID), request.endpoint.app == app.app else {
            return ReadAnswer(response: unknownRequest(facts, principal: principal, id: id), principal: principal)
        }
        if request.payloadsDeleted, case .result = route {
            let error = FalError.notFound("The payloads of request \(id) were deleted")
            return ReadAnswer(
                response: PreparedResponse(error: error, requestID: id, isHead: isHead),
                principal: principal
            )
        }
        let phase = request.phase
        let cacheHeaders = FalWire.cacheHeaders(request)
        // A finished request answers the same from now on: only a sweep past retention can change that.
        let settled = phase.isCompleted
        if case .status = route {
            let query = QueryParameters(uri: facts.uri)
            let logs = query.flag("logs") ? request.job.status.logs[...] : nil
            let json = FalWire.status(
                id: id,
                phase: phase,
                logs: logs,
                base: queueBase(facts, app: app.app)
            )
            let status = HTTPResponseStatus(statusCode: FalWire.httpStatus(for: phase))
            return ReadAnswer(
                response: PreparedResponse(
                    status: status,
                    json: json,
                    requestID: id,
                    extraHeaders: cacheHeaders,
                    isHead: isHead
                ),
                principal: principal,
                settled: settled
            )
        }
        if case .completed(.success) = phase, let bytes = request.job.resultBytes {
            return ReadAnswer(
                response: PreparedResponse(
                    status: .ok,
                    json: bytes,
                    requestID: id,
                    extraHeaders: cacheHeaders,
                    isHead: isHead
                ),
                principal: principal,
                settled: settled
            )
        }
        switch FalWire.result(for: phase, id: id) {
        case .success(let result):
            return ReadAnswer(
                response: PreparedResponse(
                    status: .ok,
                    json: result,
                    requestID: id,
                    extraHeaders: cacheHeaders,
                    isHead: isHead
                ),
                principal: principal,
                settled: settled
            )
        case .failure(let error):
            return ReadAnswer(
                response: PreparedResponse(error: error, requestID: id, isHead: isHead),
                principal: principal,
                settled: settled
            )
        }
    }
}

/// What `answerRead` decided.
struct ReadAnswer {
    var response: PreparedResponse
    /// Who asked.
    var principal: Principal
    /// The request has finished, so the same request (method, target, Host, Authorization) gets the same response
    /// while the request table has removed nothing and the key table is unchanged. Admission (rate limits) still
    /// applies to every request.
    var settled = false

    var keyID: String? { principal.keyID }
}

extension FalWire.QueueBase {
    /// `scheme://host` as the client reached the relay (a missing or malformed Host falls back to 127.0.0.1).
    init(scheme: String, host: String?, app: String) {
        let host = host.flatMap { HostPattern.split($0[...]) != nil ? $0 : nil } ?? "127.0.0.1"
        self.init(origin: "\(scheme)://\(host)", app: app)
    }
}

/// What `RelayServices.submit` made of a submission.
enum Submission {
    /// The request, with the RateLimit fields of the budget it was charged to (none when it started no work).
    case submitted(RelayRequest, rateLimitHeaders: [(String, String)])
    /// Refused: it would have started upstream work beyond the caller's budget.
    case refused(FalError, headers: [(String, String)])
}
