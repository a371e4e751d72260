/// What kind of media a model makes: decides the synthetic generator and the result's shape.
public enum ModelKind: String, Sendable, Hashable, CaseIterable {
    case image
    case imageEdit = "image-edit"
    case video
    case audio
    case text
}

/// When identical requests may share work (DESIGN.md "Canonical form").
public enum DedupPolicy: String, Sendable, Hashable {
    /// Always served from cache and coalesced, seed or not (deterministic models).
    case always
    /// Coalesced in flight always; served from cache only when the request names a seed.
    case seeded
    /// Every request is its own generation.
    case never
}

/// One model of the catalog: its identity, inputs, defaults and how the synthetic generator imitates it.
public struct ModelSpec: Sendable, Hashable {
    public let id: String
    public let title: String
    public let kind: ModelKind
    public let dedup: DedupPolicy
    /// Input fields without which the request is a 422.
    public let required: [String]
    /// Filled in when omitted, so that `{}` and the spelled-out defaults are the same request.
    public let defaults: JSONObject
    /// Fields that do not change the output (e.g. `sync_mode`): dropped before keying.
    public let ignoredFields: [String]
    /// Seconds per inference step per megapixel at time scale 1 (synthetic upstream); per second of media for audio.
    public let secondsPerStep: Double
    public let realtime: Bool
    /// How long a result stays servable from cache; nil = the relay's default.
    public let cacheTTLSeconds: Double?
    /// The upstream that serves it: "synthetic" or the name of a configured origin.
    public let upstream: String
    /// What fal bills for it (unknown unless the catalog says).
    public let price: ModelPrice
    /// Models an origin pool submits to, in order, when every account failed this one (`"fallbacks"`).
    public let fallbacks: [String]

    public init(
        id: String,
        title: String,
        kind: ModelKind,
        dedup: DedupPolicy = .seeded,
        required: [String] = ["prompt"],
        defaults: JSONObject = [:],
        ignoredFields: [String] = [],
        secondsPerStep: Double = 0.05,
        realtime: Bool = false,
        cacheTTLSeconds: Double? = nil,
        upstream: String = "synthetic",
        price: ModelPrice? = nil,
        fallbacks: [String] = []
    ) {
        self.fallbacks = fallbacks
        self.id = id
        self.title = title
        self.kind = kind
        self.dedup = dedup
        self.required = required
        self.defaults = defaults
        self.ignoredFields = ignoredFields
        self.secondsPerStep = secondsPerStep
        self.realtime = realtime
        self.cacheTTLSeconds = cacheTTLSeconds
        self.upstream = upstream
        self.price = price ?? ModelPrice(unitPrice: nil, unit: ModelPrice.defaultUnit(kind), source: "unknown")
    }

    /// Reads one catalog entry; every problem names the model and the field.
    public init(catalogEntry value: JSONValue) throws(CatalogError) {
        guard let object = value.objectValue else { throw CatalogError("a model entry is not an object") }
        guard let id = object["id"]?.stringValue, EndpointID(id) != nil else {
            throw CatalogError("a model entry has no valid \"id\" (owner/alias[/path])")
        }
        guard let kindName = object["kind"]?.stringValue, let kind = ModelKind(rawValue: kindName) else {
            throw CatalogError("model \(id): \"kind\" must be one of \(ModelKind.allCases.map(\.rawValue))")
        }
        var dedup = DedupPolicy.seeded
        if let name = object["dedup"] {
            guard let text = name.stringValue, let policy = DedupPolicy(rawValue: text) else {
                throw CatalogError("model \(id): \"dedup\" must be always, seeded or never")
            }
            dedup = policy
        }
        func strings(_ field: String, default fallback: [String]) throws(CatalogError) -> [String] {
            guard let entry = object[field] else { return fallback }
            guard let list = entry.arrayValue else { throw CatalogError("model \(id): \"\(field)\" must be a list") }
            var out: [String] = []
            for item in list {
                guard let text = item.stringValue else {
                    throw CatalogError("model \(id): \"\(field)\" must hold strings")
                }
                out.append(text)
            }
            return out
        }
        let defaults: JSONObject
        if let entry = object["defaults"] {
            guard let defaultsObject = entry.objectValue else {
                throw CatalogError("model \(id): \"defaults\" must be an object")
            }
            defaults = defaultsObject
        } else {
            defaults = [:]
        }
        let speed = object["seconds_per_step"]?.doubleValue ?? 0.05
        guard speed >= 0, speed.isFinite else { throw CatalogError("model \(id): \"seconds_per_step\" must be ≥ 0") }
        let ttl = object["cache_ttl_seconds"]?.doubleValue
        if let ttl, !(ttl > 0 && ttl.isFinite) { throw CatalogError("model \(id): \"cache_ttl_seconds\" must be > 0") }
        self.init(
            id: id,
            title: object["title"]?.stringValue ?? id,
            kind: kind,
            dedup: dedup,
            required: try strings("required", default: kind == .text || kind == .audio ? [] : ["prompt"]),
            defaults: defaults,
            ignoredFields: try strings("ignored_fields", default: ["sync_mode"]),
            secondsPerStep: speed,
            realtime: object["realtime"]?.boolValue ?? false,
            cacheTTLSeconds: ttl,
            upstream: object["upstream"]?.stringValue ?? "synthetic",
            price: try object["price"].map { entry throws(CatalogError) in
                try ModelPrice(catalogEntry: entry, model: id, kind: kind)
            },
            fallbacks: try strings("fallbacks", default: [])
        )
        for fallback in fallbacks where EndpointID(fallback) == nil || fallback == id {
            throw CatalogError("model \(id): fallback \"\(fallback)\" is not another model's endpoint id")
        }
    }
}

/// A catalog file that cannot be used, with the reason.
public struct CatalogError: Error, Sendable, Hashable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The models this relay serves, looked up by endpoint id.
public struct ModelCatalog: Sendable {
    public let models: [ModelSpec]
    private let byID: [String: ModelSpec]

    public init(models: [ModelSpec]) {
        self.models = models
        var byID: [String: ModelSpec] = [:]
        for model in models {
            byID[model.id] = model
        }
        self.byID = byID
    }

    /// Parses `{"models": [...]}` (Config/models.json).
    public init(json bytes: [UInt8]) throws(CatalogError) {
        let document: JSONValue
        do {
            document = try JSONValue(parsing: bytes)
        } catch {
            throw CatalogError("catalog is not valid JSON: \(error)")
        }
        guard let list = document["models"]?.arrayValue else {
            throw CatalogError("catalog must be an object with a \"models\" list")
        }
        var models: [ModelSpec] = []
        var seen: Set<String> = []
        for entry in list {
            let model = try ModelSpec(catalogEntry: entry)
            guard Set(model.fallbacks).count == model.fallbacks.count else {
                throw CatalogError("model \(model.id): a fallback is listed twice")
            }
            guard seen.insert(model.id).inserted else { throw CatalogError("model \(model.id) is listed twice") }
            models.append(model)
        }
        // A fallback is a model of this catalog: its inputs, price and upstream are known.
        for model in models {
            for fallback in model.fallbacks where !seen.contains(fallback) {
                throw CatalogError("model \(model.id): fallback \(fallback) is not a model of this catalog")
            }
        }
        self.init(models: models)
    }

    public func model(_ id: String) -> ModelSpec? {
        byID[id]
    }
}
