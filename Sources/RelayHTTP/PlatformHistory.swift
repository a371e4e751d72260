import RelayCore
import RelayJobs

/// fal's Platform API history routes on this relay's retained requests (`request_retention_seconds`, restored from
/// the request log after a restart): `GET /v1/models/requests/by-endpoint` and `GET /v1/models/usage`. Pure.
enum PlatformHistory {
    /// What the history knows of one request.
    struct Entry {
        var request: RelayRequest
        var model: ModelSpec?
        var started: Timestamp?
        var ended: Timestamp?
        var outcome: JobOutcome?

        init(_ request: RelayRequest, catalog: ModelCatalog) {
            self.request = request
            model = catalog.model(request.job.model.id) ?? catalog.model(request.endpoint.description)
            (started, ended) = request.job.times
            if case .completed(let outcome) = request.phase {
                self.outcome = outcome
                // A request that ended on its own (cancelled while its shared job ran on) ended when the job did, or
                // now for its own purposes: its job's end is the best time the table keeps.
                if ended == nil { ended = request.createdAt }
            }
        }

        var statusCode: Int? {
            switch outcome {
            case nil: nil
            case .success?: 200
            case .failure(let error)?: error.status
            case .cancelled?: FalError.cancelled().status
            }
        }

        /// Seconds from its start (or, never started, from its submission) to its end.
        var duration: Double? {
            ended.map { max(0, $0.secondsSinceEpoch - (started ?? request.createdAt).secondsSinceEpoch) }
        }

        /// When it counts for a time window: its end, or its submission while in flight.
        var time: Timestamp { ended ?? request.createdAt }

        /// What its generation used, in its model's billing unit, and what that cost (nil when the price is unknown);
        /// `spent`: it ran upstream (a miss or a bypass), else its cost was saved (a hit, or coalesced). Nil for
        /// requests that made nothing.
        /// A miss whose request was cancelled while its job ran on for others still paid for the job.
        var charge: (quantity: Double, cost: Double?, spent: Bool)? {
            let spent = request.cacheOutcome == .miss || request.cacheOutcome == .bypass
            guard let model, case .completed(.success(let result, let seconds)) = request.job.status.phase,
                spent || !request.cancelled
            else { return nil }
            let input = request.input ?? request.job.input.fields
            let quantity = model.price.unit.quantity(result: result, input: input, inferenceSeconds: seconds)
            return (quantity, model.price.unitPrice.map { $0 * quantity }, spent)
        }
    }

    // MARK: - Requests

    /// The most payload bytes (`expand=payloads`) one page of the history holds.
    static let maxPayloadBytes = 8 << 20

    /// `GET /v1/models/requests/by-endpoint`: newest end first (or longest first with `sort=duration`); `q` searches
    /// the kept inputs' text; `expand=payloads` adds `json_input` and `json_output`.
    static func requests(
        _ requests: [RelayRequest],
        catalog: ModelCatalog,
        query: QueryParameters,
        now: Timestamp
    ) throws(PlatformAPI.Failure) -> JSONValue {
        let ids = try PlatformAPI.endpointIDs(query)
        let limit = try PlatformAPI.limit(query)
        let payloads = try PlatformAPI.expansions(query, allowed: ["payloads"]).contains("payloads")
        let requestID = query["request_id"]
        let window = try timeWindow(query, now: now, lookBack: requestID == nil ? 86_400 : 90 * 86_400)
        let status = query["status"]
        guard status == nil || ["success", "error", "user_error"].contains(status!) else {
            throw .validation("status must be success, error or user_error")
        }
        let sort = query["sort"] ?? "end_time"
        guard sort == "end_time" || sort == "duration" else { throw .validation("sort must be end_time or duration") }
        let words = (query["q"] ?? "").lowercased().split(separator: " ").map(String.init)

        var entries = requests.map { Entry($0, catalog: catalog) }.filter { entry in
            guard window.contains(entry.time), ids.isEmpty || ids.contains(entry.request.endpoint.description),
                requestID == nil || entry.request.id == requestID
            else { return false }
            switch (status, entry.statusCode) {
            case (nil, _): break
            case ("success"?, let code?) where (200..<300).contains(code): break
            case ("user_error"?, let code?) where (400..<500).contains(code): break
            case ("error"?, let code?) where code >= 500: break
            default: return false
            }
            guard !words.isEmpty else { return true }
            guard let input = entry.request.input else { return false }
            let text = strings(in: .object(input)).joined(separator: " ").lowercased()
            return words.allSatisfy { text.contains($0) }
        }
        // Newest end first (in flight, without an end, before all); ids break ties so pages never overlap.
        let key: (Entry) -> (Double, String) =
            sort == "duration"
            ? { ($0.duration ?? .infinity, $0.request.id) }
            : { ($0.ended?.secondsSinceEpoch ?? .infinity, $0.request.id) }
        entries.sort { key($0) > key($1) }
        let (page, next) = try PlatformAPI.keysetPage(
            entries,
            cursor: query["cursor"],
            limit: limit,
            descending: true,
            key: key
        )
        // Payloads can be large (10 MiB inputs): a page stops once it holds `maxPayloadBytes` of them (one item at
        // least), and the next one resumes after its last item.
        var items: [JSONValue] = []
        var bytes = 0
        var cursor = next
        for entry in page {
            let made = item(entry, payloads: payloads)
            if payloads {
                bytes += (made["json_input"]?.serialized().count ?? 0) + (made["json_output"]?.serialized().count ?? 0)
                if bytes > maxPayloadBytes, let last = items.indices.last {
                    cursor = PlatformAPI.keysetCursor(key(page[page.startIndex + last]))
                    break
                }
            }
            items.append(made)
        }
        return [
            "items": .array(items), "next_cursor": cursor.map(JSONValue.string) ?? .null,
            "has_more": .bool(cursor != nil),
        ]
    }

    private static func item(_ entry: Entry, payloads: Bool) -> JSONValue {
        let request = entry.request
        var item: JSONObject = [
            "request_id": .string(request.id),
            "endpoint_id": .string(request.endpoint.description),
            "sent_at": .string(request.createdAt.iso8601),
            "started_at": entry.started.map { .string($0.iso8601) } ?? .null,
            "ended_at": entry.ended.map { .string($0.iso8601) } ?? .null,
            "status_code": entry.statusCode.map { .number(Double($0)) } ?? .null,
            "duration": entry.duration.map(JSONValue.number) ?? .null,
            // The relay's own: how the cache served it, its tags, and what it cost or saved.
            "cache": .string(request.cacheOutcome.rawValue),
            "tags": .object(JSONObject(request.tags.map { ($0.key, JSONValue.string($0.value)) })),
        ]
        if let charge = entry.charge, let model = entry.model {
            item[charge.spent ? "cost" : "saved"] = charge.cost.map(JSONValue.number) ?? .null
            item["unit"] = .string(model.price.unit.rawValue)
            item["quantity"] = .number(charge.quantity)
            item["currency"] = .string(model.price.currency)
        }
        if payloads {
            // Kept only with the input: not for `X-Fal-Store-IO: 0`, nor once deleted.
            item["json_input"] = request.input.map(JSONValue.object) ?? .null
            item["json_output"] = .null
            if request.input != nil, case .success(let result, _)? = entry.outcome { item["json_output"] = result }
            if request.payloadsDeleted { item["payloads_deleted"] = true }
        }
        return .object(item)
    }

    /// Every string in a JSON value (the text `q` searches).
    static func strings(in value: JSONValue) -> [String] {
        switch value {
        case .string(let text): [text]
        case .array(let items): items.flatMap(strings(in:))
        case .object(let object): object.flatMap { strings(in: $0.value) }
        default: []
        }
    }

    /// `start` (default `lookBack` seconds ago) up to `end` (exclusive, default now), both ISO 8601.
    static func timeWindow(
        _ query: QueryParameters,
        now: Timestamp,
        lookBack: Double
    ) throws(PlatformAPI.Failure) -> Range<Timestamp> {
        func read(_ name: String) throws(PlatformAPI.Failure) -> Timestamp? {
            guard let text = query[name] else { return nil }
            guard let time = Timestamp(iso8601: text) else {
                throw .validation("\(name) must be an ISO 8601 date or time, such as 2026-12-06T10:00:00Z")
            }
            return time
        }
        // An end of now includes what ended this instant.
        let end = try read("end") ?? Timestamp(secondsSinceEpoch: now.secondsSinceEpoch + 0.001)
        let start = try read("start") ?? Timestamp(secondsSinceEpoch: end.secondsSinceEpoch - lookBack)
        guard start < end else { throw .validation("start must be before end") }
        return start..<end
    }
}
