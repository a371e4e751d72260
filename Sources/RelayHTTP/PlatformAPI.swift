import RelayCore

/// fal's Platform API (`https://api.fal.ai/v1`, PROTOCOL.md §11.3) built from this relay's catalog: model search and
/// prices. Pure: tested without a server. The history routes are in `PlatformHistory`.
enum PlatformAPI {
    /// A Platform API error: fal answers these routes with `{"error": {"type", "message"}}`, not the queue's `detail`.
    struct Failure: Error {
        var status: Int
        var type: String
        var message: String

        static func validation(_ message: String) -> Failure {
            Failure(status: 400, type: "validation_error", message: message)
        }

        static func notFound(_ message: String) -> Failure {
            Failure(status: 404, type: "not_found", message: message)
        }

        /// As the client gets it (`{"error": {"type", "message"}}`).
        var error: FalError { .platform(status: status, type: type, message: message) }
    }

    /// At most this many endpoint ids per call (fal's limit).
    static let maxEndpointIDs = 50

    /// `limit`: 1…`maximum`, `fallback` when absent.
    static func limit(_ query: QueryParameters, fallback: Int = 50, maximum: Int = 100) throws(Failure) -> Int {
        guard let text = query["limit"] else { return fallback }
        guard let value = Int(text), (1...maximum).contains(value) else {
            throw .validation("limit must be an integer from 1 to \(maximum)")
        }
        return value
    }

    /// `endpoint_id`, repeated or comma-separated; each one a valid endpoint id.
    static func endpointIDs(_ query: QueryParameters) throws(Failure) -> [String] {
        let ids = query.all("endpoint_id").flatMap { $0.split(separator: ",") }.map { String($0.trimmingSpaces) }
            .filter { !$0.isEmpty }
        guard ids.count <= maxEndpointIDs else { throw .validation("at most \(maxEndpointIDs) endpoint_id values") }
        for id in ids where EndpointID(id) == nil {
            throw .validation("endpoint_id \(id) is not an endpoint id (owner/alias[/path])")
        }
        return ids
    }

    /// `expand`, repeated or comma-separated, each one of `allowed`.
    static func expansions(_ query: QueryParameters, allowed: Set<String>) throws(Failure) -> Set<String> {
        var found: Set<String> = []
        for item in query.all("expand").flatMap({ $0.split(separator: ",") }) {
            let name = String(item.trimmingSpaces)
            guard allowed.contains(name) else {
                throw .validation("expand must be one of \(allowed.sorted().joined(separator: ", "))")
            }
            found.insert(name)
        }
        return found
    }

    /// One page of `items` (sorted by `key`, descending or not) after `cursor`, which holds the previous page's last
    /// key: the page resumes at the first item past it, so items that came, went or moved meanwhile never make a
    /// page skip or repeat one that stayed.
    static func keysetPage<Item>(
        _ items: [Item],
        cursor: String?,
        limit: Int,
        descending: Bool,
        key: (Item) -> (Double, String)
    ) throws(Failure) -> (ArraySlice<Item>, next: String?) {
        var start = items.startIndex
        if let cursor {
            guard let bytes = Hex.decode(cursor), let text = String(validating: bytes, as: UTF8.self),
                let space = text.firstIndex(of: " "), let number = Double(text[..<space])
            else { throw .validation("cursor is not one this relay gave") }
            let after = (number, String(text[text.index(after: space)...]))
            start = items.firstIndex { descending ? key($0) < after : key($0) > after } ?? items.endIndex
        }
        let end = min(items.endIndex, start + limit)
        guard end < items.endIndex, end > start else { return (items[start..<end], nil) }
        let last = key(items[end - 1])
        return (items[start..<end], keysetCursor(last))
    }

    /// The cursor that resumes after the item with this key.
    static func keysetCursor(_ key: (Double, String)) -> String {
        Hex.encode("\(key.0) \(key.1)".utf8)
    }

    // MARK: - Models

    /// fal's category for a catalog entry.
    static func category(_ model: ModelSpec) -> String {
        switch model.kind {
        case .image: "text-to-image"
        case .imageEdit: "image-to-image"
        case .video:
            model.required.contains("image_url") || model.id.contains("image-to-video")
                ? "image-to-video" : "text-to-video"
        case .audio:
            model.required.contains("text") || model.defaults["voice"] != nil
                || model.defaults["voice_setting"] != nil ? "text-to-speech" : "text-to-audio"
        case .text: "llm"
        }
    }

    /// `GET /v1/models`: list mode, find mode (`endpoint_id`), search mode (`q`, `category`, `status`).
    static func models(
        _ catalog: ModelCatalog,
        query: QueryParameters,
        origin: String,
        updatedAt: Timestamp
    ) throws(Failure) -> JSONValue {
        let ids = try endpointIDs(query)
        let expand = try expansions(query, allowed: ["openapi-3.0", "enterprise_status"])
        let limit = try limit(query)
        let words = (query["q"] ?? "").lowercased().split(separator: " ")
        let category = query["category"]
        if let status = query["status"], status != "active", status != "deprecated" {
            throw .validation("status must be active or deprecated")
        }
        // Every model this relay serves is active.
        let wantsActive = query["status"] != "deprecated"
        let found = catalog.models.filter { model in
            guard wantsActive, ids.isEmpty || ids.contains(model.id) else { return false }
            if let category, Self.category(model) != category { return false }
            let text = "\(model.id) \(model.title) \(Self.category(model)) \(model.kind.rawValue)".lowercased()
            return words.allSatisfy { text.contains($0) }
        }
        // In catalog order: the position in the catalog is the key.
        let (page, next) = try keysetPage(
            Array(found.enumerated()),
            cursor: query["cursor"],
            limit: limit,
            descending: false
        ) {
            (Double($0.offset), $0.element.id)
        }
        let models: [JSONValue] = page.map(\.element).map { model in
            var entry: JSONObject = [
                "endpoint_id": .string(model.id),
                "metadata": metadata(model, origin: origin, updatedAt: updatedAt),
            ]
            if expand.contains("openapi-3.0") { entry["openapi"] = openAPI(model, origin: origin) }
            if expand.contains("enterprise_status") { entry["enterprise_status"] = "ready" }
            return .object(entry)
        }
        return [
            "models": .array(models), "next_cursor": next.map(JSONValue.string) ?? .null,
            "has_more": .bool(next != nil),
        ]
    }

    private static func metadata(_ model: ModelSpec, origin: String, updatedAt: Timestamp) -> JSONValue {
        let upstream = model.upstream == "synthetic" ? "the relay's synthetic generator" : "origin \(model.upstream)"
        return [
            "display_name": .string(model.title),
            "category": .string(category(model)),
            "description": .string("\(model.title), served through MediaRelay by \(upstream)"),
            "status": "active",
            "tags": .array(([model.kind.rawValue] + (model.realtime ? ["realtime"] : [])).map(JSONValue.string)),
            "updated_at": .string(updatedAt.iso8601),
            "is_favorited": false,
            "thumbnail_url": .string("\(origin)/ui/icon.svg"),
            "model_url": .string("\(origin)/\(model.id)"),
            "date": .string(updatedAt.iso8601),
            "highlighted": false,
            "pinned": false,
            "kind": "inference",
        ]
    }

    /// `GET /v1/models/pricing?endpoint_id=…` (1–50 ids). A model whose price the relay does not know has
    /// `unit_price: null` (and `price_source` says why): never a guessed figure.
    static func pricing(_ catalog: ModelCatalog, query: QueryParameters) throws(Failure) -> JSONValue {
        let ids = try endpointIDs(query)
        guard !ids.isEmpty else { throw .validation("endpoint_id is required (1 to \(maxEndpointIDs) ids)") }
        var prices: [JSONValue] = []
        for id in ids {
            guard let model = catalog.model(id) else { throw .notFound("No model \(id) in this relay's catalog") }
            let price = model.price
            prices.append([
                "endpoint_id": .string(id),
                "unit_price": price.unitPrice.map(JSONValue.number) ?? .null,
                "unit": .string(price.unit.rawValue),
                "currency": .string(price.currency),
                "price_source": .string(price.source),
            ])
        }
        return ["prices": .array(prices), "next_cursor": .null, "has_more": false]
    }

    // MARK: - OpenAPI

    /// An OpenAPI 3.0 description of the model's queue API, its input schema built from the catalog (required
    /// fields, and each default's type and value).
    static func openAPI(_ model: ModelSpec, origin: String) -> JSONValue {
        var properties: JSONObject = [:]
        for field in model.required where model.defaults[field] == nil {
            properties[field] = ["type": "string", "title": .string(field)]
        }
        for (field, value) in model.defaults {
            properties[field] = ["type": .string(schemaType(value)), "title": .string(field), "default": value]
        }
        let ref: (String) -> JSONValue = { ["$ref": .string("#/components/schemas/\($0)")] }
        let json: (JSONValue) -> JSONValue = { ["application/json": ["schema": $0]] }
        let requestID: JSONValue = ["name": "request_id", "in": "path", "required": true, "schema": ["type": "string"]]
        let status: JSONValue = [
            "type": "object", "required": ["status", "request_id"],
            "properties": [
                "status": ["type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]],
                "request_id": ["type": "string"], "response_url": ["type": "string"],
                "status_url": ["type": "string"], "cancel_url": ["type": "string"],
                "queue_position": ["type": "integer"], "logs": ["type": "array", "items": ["type": "object"]],
            ],
        ]
        return [
            "openapi": "3.0.4",
            "info": [
                "title": .string(model.title), "version": "1.0.0",
                "x-fal-metadata": ["endpointId": .string(model.id), "category": .string(category(model))],
            ],
            "servers": [["url": .string(origin)]],
            "paths": [
                "/\(model.id)": [
                    "post": [
                        "requestBody": ["required": true, "content": json(ref("Input"))],
                        "responses": ["200": ["description": "Queued", "content": json(ref("QueueStatus"))]],
                    ]
                ],
                "/\(model.id)/requests/{request_id}/status": [
                    "get": [
                        "parameters": [requestID],
                        "responses": ["200": ["description": "The status", "content": json(ref("QueueStatus"))]],
                    ]
                ],
                "/\(model.id)/requests/{request_id}": [
                    "get": [
                        "parameters": [requestID],
                        "responses": ["200": ["description": "The result", "content": json(ref("Output"))]],
                    ]
                ],
            ],
            "components": [
                "schemas": [
                    "Input": [
                        "type": "object", "properties": .object(properties),
                        "required": .array(model.required.map(JSONValue.string)),
                    ],
                    "Output": ["type": "object"],
                    "QueueStatus": status,
                ]
            ],
        ]
    }

    private static func schemaType(_ value: JSONValue) -> String {
        switch value {
        case .null: "string"
        case .bool: "boolean"
        case .number(let number): number.rounded() == number ? "integer" : "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}
