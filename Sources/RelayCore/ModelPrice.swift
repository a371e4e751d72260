/// What fal bills a model's generation by: `unit` in fal's pricing API (`GET /v1/models/pricing`).
public enum PriceUnit: String, Sendable, Hashable, CaseIterable {
    /// Each output image.
    case images
    /// Each output image's megapixels, each image rounded up to a whole megapixel.
    case megapixels
    /// Each output video.
    case videos
    /// Seconds of output video or audio.
    case seconds
    /// Seconds of GPU time (`timings.inference`, or how long the job ran).
    case computeSeconds = "compute seconds"
    /// Thousands of input characters (text to speech).
    case thousandCharacters = "1000 characters"
    /// Millions of output tokens (language models).
    case millionTokens = "1m tokens"
    /// Each request, whatever it makes.
    case units

    /// How many units a generation used: read from its result (and, for characters, its input) the way fal bills.
    public func quantity(result: JSONValue, input: JSONObject, inferenceSeconds: Double? = nil) -> Double {
        switch self {
        case .units:
            return 1
        case .computeSeconds:
            return result["timings"]?["inference"]?.doubleValue ?? inferenceSeconds ?? 0
        case .images:
            return Double(Self.images(in: result).count)
        case .megapixels:
            return Self.images(in: result).reduce(0) { total, image in
                let width = image["width"]?.doubleValue ?? 0
                let height = image["height"]?.doubleValue ?? 0
                return total + max(1, (width * height / 1_000_000).rounded(.up))
            }
        case .videos:
            return result["video"] == nil ? Double(result["videos"]?.arrayValue?.count ?? 0) : 1
        case .seconds:
            return Self.seconds(result: result, input: input)
        case .thousandCharacters:
            let text = input["text"]?.stringValue ?? input["prompt"]?.stringValue ?? ""
            return Double(text.count) / 1000
        case .millionTokens:
            let usage = result["usage"]
            let tokens = usage?["completion_tokens"]?.doubleValue ?? usage?["output_tokens"]?.doubleValue
            // Without a usage report, a word of output is counted as one token.
            let counted = tokens ?? Double(result["output"]?.stringValue?.split(separator: " ").count ?? 0)
            return counted / 1_000_000
        }
    }

    private static func images(in result: JSONValue) -> [JSONValue] {
        if let images = result["images"]?.arrayValue { return images }
        return result["image"].map { [$0] } ?? []
    }

    /// The media's length: the result's `duration` (top level or on the file), else the input's (`"5"` or `5`), else
    /// the synthetic video's frames at 8 per second.
    private static func seconds(result: JSONValue, input: JSONObject) -> Double {
        if let seconds = result["duration"]?.doubleValue ?? result["video"]?["duration"]?.doubleValue
            ?? result["audio"]?["duration"]?.doubleValue
        {
            return seconds
        }
        if let duration = input["duration"] {
            if let seconds = duration.doubleValue ?? duration.stringValue.flatMap({ Double($0.trimmingSuffix("s")) }) {
                return seconds
            }
        }
        return Double(input["num_frames"]?.doubleValue ?? 0) / 8
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> Substring {
        hasSuffix(suffix) ? dropLast(suffix.count) : self[...]
    }
}

/// A model's published price (catalog entry `"price"`): what one unit costs, in which currency, and where the
/// figure came from. A price the relay cannot know has no `unitPrice`: it is reported as unknown, never guessed.
public struct ModelPrice: Sendable, Hashable {
    public let unitPrice: Double?
    public let unit: PriceUnit
    public let currency: String
    /// Where the figure was published (a URL and its date), or why it is unknown.
    public let source: String

    public init(unitPrice: Double?, unit: PriceUnit, currency: String = "USD", source: String = "") {
        self.unitPrice = unitPrice
        self.unit = unit
        self.currency = currency
        self.source = source
    }

    /// The unit a model of `kind` is billed by when its catalog entry says nothing.
    public static func defaultUnit(_ kind: ModelKind) -> PriceUnit {
        switch kind {
        case .image, .imageEdit: .megapixels
        case .video: .seconds
        case .audio: .thousandCharacters
        case .text: .millionTokens
        }
    }

    /// What a generation cost, from its result and input; nil when the price is unknown.
    public func cost(result: JSONValue, input: JSONObject, inferenceSeconds: Double? = nil) -> Double? {
        unitPrice.map { $0 * unit.quantity(result: result, input: input, inferenceSeconds: inferenceSeconds) }
    }

    /// Reads a catalog entry's `"price"`: `{"unit_price": 0.025 or null, "unit": "megapixels", "currency": "USD",
    /// "source": "…"}`.
    init(catalogEntry value: JSONValue, model id: String, kind: ModelKind) throws(CatalogError) {
        guard let object = value.objectValue else { throw CatalogError("model \(id): \"price\" must be an object") }
        var unit = Self.defaultUnit(kind)
        if let name = object["unit"] {
            guard let text = name.stringValue, let found = PriceUnit(rawValue: text) else {
                let names = PriceUnit.allCases.map(\.rawValue).joined(separator: ", ")
                throw CatalogError("model \(id): price \"unit\" must be one of \(names)")
            }
            unit = found
        }
        let unitPrice: Double?
        switch object["unit_price"] {
        case nil, .null?:
            unitPrice = nil
        case let entry?:
            guard let number = entry.doubleValue, number >= 0, number.isFinite else {
                throw CatalogError("model \(id): price \"unit_price\" must be a number ≥ 0 or null (unknown)")
            }
            unitPrice = number
        }
        let currency = object["currency"]?.stringValue ?? "USD"
        guard currency.utf8.count == 3, currency.utf8.allSatisfy({ (65...90).contains($0) }) else {
            throw CatalogError("model \(id): price \"currency\" must be an ISO 4217 code such as USD")
        }
        self.init(unitPrice: unitPrice, unit: unit, currency: currency, source: object["source"]?.stringValue ?? "")
    }
}

extension ModelPrice {
    /// What a generation of `input` will cost, estimated before it runs from what its input asks for (images and their
    /// size, seconds, characters, tokens): what a budget reserves. nil when the price, or the quantity, is unknown.
    public func estimate(_ input: ModelInput) -> Double? {
        guard let unitPrice else { return nil }
        let images = Double(max(1, input.integer("num_images", default: 1)))
        let quantity: Double?
        switch unit {
        case .units, .videos: quantity = 1
        case .images: quantity = images
        case .megapixels:
            let size = input.imageSize
            quantity = images * max(1, (Double(size.width * size.height) / 1_000_000).rounded(.up))
        case .seconds:
            quantity = unit.quantity(result: [:], input: input.fields)
        case .thousandCharacters:
            quantity = unit.quantity(result: [:], input: input.fields)
        case .millionTokens:
            quantity = Double(input.integer("max_tokens", default: 0)) / 1_000_000
        case .computeSeconds:
            quantity = nil
        }
        return quantity.map { $0 * unitPrice }
    }
}

/// A key's spending caps (`media-relay keys create --budget-daily 25 --budget-monthly 500`), in the catalog's
/// currency; nil: no cap for that period.
public struct SpendBudget: Sendable, Hashable {
    public var daily: Double?
    public var monthly: Double?

    public init(daily: Double? = nil, monthly: Double? = nil) {
        self.daily = daily
        self.monthly = monthly
    }

    public var isEmpty: Bool { daily == nil && monthly == nil }
}
