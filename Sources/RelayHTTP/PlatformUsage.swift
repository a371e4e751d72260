import RelayCore
import RelayJobs

/// `GET /v1/models/usage` on this relay's retained requests: what generations cost upstream per time bucket and
/// endpoint, in fal's shape, and what the cache saved beside it (`saved_*`, the relay's own fields). Pure.
///
/// Beside fal's expansions, `expand=tags` splits each line by `X-Fal-Tags` pair (`tag`: `key=value`, null for
/// untagged requests; a request with two tags counts in both lines), and `tag=key=value` keeps only the requests
/// that carry that pair.
enum PlatformUsage {
    /// One line of a bucket or of the summary.
    private struct Line {
        var model: ModelSpec
        var authMethod: String?
        var quantity = 0.0
        var requests = 0
        var savedQuantity = 0.0
        var savedRequests = 0

        func json(keyID: String?, tag: String??) -> JSONValue {
            let price = model.price
            var line: JSONObject = [
                "endpoint_id": .string(model.id),
                "unit": .string(price.unit.rawValue),
                "quantity": .number(quantity),
                "unit_price": price.unitPrice.map(JSONValue.number) ?? .null,
                "cost": price.unitPrice.map { .number($0 * quantity) } ?? .null,
                "currency": .string(price.currency),
                "requests": .number(Double(requests)),
                "saved_quantity": .number(savedQuantity),
                "saved_cost": price.unitPrice.map { .number($0 * savedQuantity) } ?? .null,
                "saved_requests": .number(Double(savedRequests)),
            ]
            if let authMethod {
                line["auth_method"] = .string(authMethod)
                line["key_id"] = keyID.map(JSONValue.string) ?? .null
            }
            if let tag { line["tag"] = tag.map(JSONValue.string) ?? .null }
            return .object(line)
        }
    }

    private struct LineKey: Hashable {
        var endpoint: String
        /// nil: all callers together; `.some(nil)`: the anonymous caller.
        var keyID: String??
        /// nil: all tags together; `.some(nil)`: untagged requests.
        var tag: String??

        var order: (String, String, String) { (endpoint, keyID.flatMap { $0 } ?? "", tag.flatMap { $0 } ?? "") }
    }

    static func usage(
        _ requests: [RelayRequest],
        catalog: ModelCatalog,
        query: QueryParameters,
        now: Timestamp
    ) throws(PlatformAPI.Failure) -> JSONValue {
        let ids = try PlatformAPI.endpointIDs(query)
        let limit = try PlatformAPI.limit(query)
        var expand = try PlatformAPI.expansions(query, allowed: ["time_series", "summary", "auth_method", "tags"])
        if expand.subtracting(["auth_method", "tags"]).isEmpty { expand.insert("time_series") }
        let byAuth = expand.contains("auth_method")
        let byTag = expand.contains("tags")
        let wantedTag = query["tag"]
        let timeframe: Timestamp.Period
        if let name = query["timeframe"] {
            guard let period = Timestamp.Period(rawValue: name) else {
                throw .validation("timeframe must be one of minute, hour, day, week, month")
            }
            timeframe = period
        } else {
            timeframe = .day
        }
        if let zone = query["timezone"], !["UTC", "Etc/UTC", "utc", "Z", "+00:00"].contains(zone) {
            throw .validation("This relay reports usage in UTC only: timezone must be UTC")
        }
        var window = try PlatformHistory.timeWindow(query, now: now, lookBack: 86_400)
        switch query["bound_to_timeframe"] {
        case nil, "false"?: break
        case "true"?:
            let end =
                window.upperBound.start(of: timeframe) == window.upperBound
                ? window.upperBound : window.upperBound.startOfNext(timeframe)
            window = window.lowerBound.start(of: timeframe)..<end
        default: throw .validation("bound_to_timeframe must be true or false")
        }

        var buckets: [Timestamp: [LineKey: Line]] = [:]
        var summary: [LineKey: Line] = [:]
        for request in requests {
            let entry = PlatformHistory.Entry(request, catalog: catalog)
            guard let model = entry.model, let charge = entry.charge, let ended = entry.ended,
                window.contains(ended),
                ids.isEmpty || ids.contains(model.id) || ids.contains(request.endpoint.description)
            else { continue }
            let tags = request.tags.map { "\($0.key)=\($0.value)" }
            if let wantedTag, !tags.contains(wantedTag) { continue }
            let owner: String?? = byAuth ? .some(request.ownerKeyID) : nil
            let keys: [LineKey] =
                byTag
                ? (tags.isEmpty ? [nil] : tags.map(Optional.some)).map {
                    LineKey(endpoint: model.id, keyID: owner, tag: .some($0))
                }
                : [LineKey(endpoint: model.id, keyID: owner, tag: nil)]
            let authMethod = byAuth ? (request.ownerKeyID == nil ? "Anonymous" : "API Key") : nil
            let add = { (line: inout Line) in
                if charge.spent {
                    line.quantity += charge.quantity
                    line.requests += 1
                } else {
                    line.savedQuantity += charge.quantity
                    line.savedRequests += 1
                }
            }
            let fresh = Line(model: model, authMethod: authMethod)
            for key in keys {
                add(&buckets[ended.start(of: timeframe), default: [:]][key, default: fresh])
                add(&summary[key, default: fresh])
            }
        }
        let lines = { (group: [LineKey: Line]) -> JSONValue in
            let ordered = group.sorted { $0.key.order < $1.key.order }
            return .array(ordered.map { $0.value.json(keyID: $0.key.keyID.flatMap { $0 }, tag: $0.key.tag) })
        }
        var answer: JSONObject = ["next_cursor": .null, "has_more": false]
        if expand.contains("time_series") {
            let ordered = buckets.keys.sorted()
            let (page, next) = try PlatformAPI.keysetPage(
                ordered,
                cursor: query["cursor"],
                limit: limit,
                descending: false
            ) { ($0.secondsSinceEpoch, "") }
            answer["time_series"] = .array(
                page.map { bucket in ["bucket": .string(bucket.iso8601), "results": lines(buckets[bucket] ?? [:])] }
            )
            answer["next_cursor"] = next.map(JSONValue.string) ?? .null
            answer["has_more"] = .bool(next != nil)
        }
        if expand.contains("summary") { answer["summary"] = lines(summary) }
        return .object(answer)
    }
}
