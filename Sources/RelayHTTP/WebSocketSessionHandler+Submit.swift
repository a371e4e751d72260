import NIOCore
import RelayCore
import RelayJobs

// Submissions over the socket (`/ws` submit and fal realtime): admitted, keyed and submitted as one over HTTP is,
// through the same result tiers and the same `RelayServices.submit`.
extension WebSocketSessionHandler {
    /// Submits, then hands `then` the request (or the error) on the loop; a submission memory cannot answer asks the
    /// result tiers beneath it first, as one over HTTP does.
    func submit(
        model: String,
        input: JSONObject,
        context: ChannelHandlerContext,
        then: @escaping (WebSocketSessionHandler, ChannelHandlerContext, Result<RelayRequest, FalError>) -> Void
    ) {
        let prepared: (ModelInput, EndpointID, RequestFacts)
        switch prepare(model: model, input: input, context: context) {
        case .success(let ready): prepared = ready
        case .failure(let error): return then(self, context, .failure(error))
        }
        let (normalised, endpoint, facts) = prepared
        let key = services.requestKey(normalised, principal: principal)
        guard
            let asking = services.resultTiersFirst(
                key: key,
                input: normalised,
                endpoint: endpoint,
                principal: principal,
                noCache: false,
                eventLoop: context.eventLoop
            )
        else {
            return then(self, context, complete(normalised, endpoint: endpoint, facts: facts))
        }
        // `then` is called on this loop only: bound to it with the handler and context.
        let bound = NIOLoopBound((self, context, then), eventLoop: context.eventLoop)
        let fleet = services.fleet
        asking.whenSuccess { tiers in
            let (handler, context, then) = bound.value
            guard context.channel.isActive else {
                // Nobody to give the id to: the registration made with the lookup is taken back.
                if let registered = tiers.registered { fleet?.withdraw(registered) }
                return
            }
            let made = handler.complete(
                normalised,
                endpoint: endpoint,
                facts: facts,
                sharesFleetWork: tiers.runningElsewhere,
                registered: tiers.registered
            )
            then(handler, context, made)
        }
    }

    func answer(_ submitted: Result<RelayRequest, FalError>, context: ChannelHandlerContext) {
        switch submitted {
        case .success(let request):
            // The id goes out only once the request's record is durable (see `RelayRequest.recorded`).
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            request.recorded.whenDone {
                eventLoop.execute {
                    let (handler, context) = bound.value
                    guard context.channel.isActive else { return }
                    handler.sendJSON(
                        context: context,
                        [
                            "type": "submitted", "request_id": .string(request.id),
                            "cache": .string(request.cacheOutcome.rawValue),
                        ]
                    )
                    handler.watch(request, after: 0, context: context)
                }
            }
        case .failure(let error):
            sendJSON(
                context: context,
                ["type": "error", "detail": .string(error.message), "status": .number(Double(error.status))]
            )
        }
    }

    /// A submission over the socket: charged like a `POST` (every submission, and the tier's budget if it starts
    /// upstream work), keyed like one.
    /// The submission's model input, its endpoint and its facts; charged to the socket's read budget first.
    func prepare(
        model: String,
        input: JSONObject,
        context: ChannelHandlerContext
    ) -> Result<(ModelInput, EndpointID, RequestFacts), FalError> {
        guard let endpoint = EndpointID(model) else { return .failure(.unknownModel(model)) }
        let facts = RequestFacts(
            method: .POST,
            uri: "/" + endpoint.description,
            host: nil,
            authorization: nil,
            scheme: "ws",
            channel: context.channel
        )
        if case .refused(let error, _) = services.charge(facts, route: .submit(endpoint), principal: principal) {
            return .failure(error)
        }
        return services.modelInput(endpoint: endpoint, object: input).map { ($0, endpoint, facts) }
    }

    func complete(
        _ input: ModelInput,
        endpoint: EndpointID,
        facts: RequestFacts,
        sharesFleetWork: Bool = false,
        registered: FleetRequest? = nil
    ) -> Result<RelayRequest, FalError> {
        switch services.submit(
            input,
            endpoint: endpoint,
            facts: facts,
            principal: principal,
            sharesFleetWork: sharesFleetWork,
            registered: registered
        ) {
        case .submitted(let request, _): return .success(request)
        case .refused(let error, _): return .failure(error)
        }
    }
}
