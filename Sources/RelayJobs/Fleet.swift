public import RelayCore
public import RelayStore

/// What the job table tells the rest of a fleet (cluster mode; DESIGN.md "A fleet"). A single node has none.
///
/// Both calls return at once and never block the caller (an event loop, often): the work runs on tasks of the
/// fleet's own. A submission's answer waits for `register` the way it waits for its log record (`RelayRequest.recorded`).
public protocol Fleet: Sendable {
    /// Makes `request` known to every node, so that a client's next call for its id may land on any of them. Calls
    /// `done` once the registry has it, or once that failed (the id is then answerable on this node only).
    func register(_ request: RelayRequest, done: @escaping @Sendable () -> Void)

    /// A result the table just stored for `key`: shared with the fleet, and the key's claim released after it.
    /// `done` runs once the fleet's result index holds it (or the write gave up): the job's end is published only
    /// then, so that a node a client asks next finds the result even if its own copy of the job has not heard yet.
    func stored(_ key: RequestKey, _ result: CachedResult, done: @escaping @Sendable () -> Void)

    /// `request` was cancelled on this node: every node that holds it cancels it too.
    func cancelled(_ request: RelayRequest)

    /// The upstream accepted the job for `key` under its own id (an origin's): kept with the key's claim, so that a
    /// node taking the job over follows it there by that id instead of submitting it again.
    func attached(_ key: RequestKey, _ handle: UpstreamHandle)
}

/// A request as the fleet's registry has it: enough for any node to serve it again by its id.
public struct FleetRequest: Sendable, Hashable {
    public var id: String
    public var endpoint: String
    public var modelID: String
    public var key: RequestKey
    /// The input's fields, as `ModelInput.fields` held them (JSON).
    public var input: [UInt8]
    public var ownerKeyID: String?
    public var createdAt: Timestamp
    public var cancelled: Bool
    /// The node that took the submission.
    public var nodeID: String
    /// `?fal_webhook=` of the submission: the fleet delivers it once, from the node that holds the request.
    public var webhookURL: String?
    /// A registration whose statement failed on this side (a timeout, a lost connection) and may have committed all
    /// the same: the submission keeps this id, and the job table registers it again (idempotent), so that the
    /// registry holds no second id for it (whose webhook would be delivered too); refused, it withdraws this id.
    public var registrationInDoubt = false
    /// Submitted with `Cache-Control: no-cache`: a node that takes it up never attaches it to a job it shares.
    public var noCache = false

    public init(
        id: String,
        endpoint: String,
        modelID: String,
        key: RequestKey,
        input: [UInt8],
        ownerKeyID: String?,
        createdAt: Timestamp,
        cancelled: Bool,
        nodeID: String,
        webhookURL: String? = nil
    ) {
        self.id = id
        self.endpoint = endpoint
        self.modelID = modelID
        self.key = key
        self.input = input
        self.ownerKeyID = ownerKeyID
        self.createdAt = createdAt
        self.cancelled = cancelled
        self.nodeID = nodeID
        self.webhookURL = webhookURL
    }
}

extension FleetRequest {
    /// A request as this node registers it, by its parts (before the job table made it: a submission's registration
    /// rides on its key's lookup, one statement for both).
    public init(
        id: String = RequestID.make(),
        endpoint: EndpointID,
        input: ModelInput,
        key: RequestKey,
        ownerKeyID: String?,
        nodeID: String,
        webhookURL: String?
    ) {
        self.init(
            id: id,
            endpoint: endpoint.description,
            modelID: input.model.id,
            key: key,
            input: JSONValue.object(input.fields).serialized(),
            ownerKeyID: ownerKeyID,
            createdAt: .now(),
            cancelled: false,
            nodeID: nodeID,
            webhookURL: webhookURL
        )
    }

    /// The input and endpoint to serve this request with on this node, its model looked up in `models` (the
    /// catalog); nil when this node does not serve the model, or the stored input is not an object.
    public func modelInput(models: (String) -> ModelSpec?) -> (input: ModelInput, endpoint: EndpointID)? {
        guard let model = models(modelID), let endpoint = EndpointID(endpoint),
            let fields = (try? JSONValue(parsing: input))?.objectValue,
            let input = try? ModelInput(model: model, input: fields)
        else { return nil }
        return (input, endpoint)
    }
}
