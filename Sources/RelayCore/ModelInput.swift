/// A request's input after the catalog's rules: validated, defaults filled in, presets expanded, no-op fields dropped.
///
/// Two inputs the model would treat as the same request normalise to the same `canonicalBytes` (RFC 8785).
public struct ModelInput: Sendable, Hashable {
    /// Named image sizes (fal's presets) and what they mean.
    public static let imageSizePresets: [String: (width: Int, height: Int)] = [
        "square_hd": (1024, 1024),
        "square": (512, 512),
        "portrait_4_3": (768, 1024),
        "portrait_16_9": (576, 1024),
        "landscape_4_3": (1024, 768),
        "landscape_16_9": (1024, 576),
    ]
    public static let dimensionRange = 64...2048

    public let model: ModelSpec
    /// The normalised input object.
    public let fields: JSONObject
    /// The seed the client asked for, if any (decides cacheability under `dedup: seeded`).
    public let explicitSeed: Int?
    /// RFC 8785 bytes of `fields`, with URLs of the relay's own media keyed by their digest (see `RelayMediaURLs`).
    public let canonicalBytes: [UInt8]

    /// Validates and normalises; every problem becomes one 422 entry, all reported at once.
    ///
    /// `mediaURLs` recognises this relay's media URLs (`/files/<digest>.<ext>`, upload URLs) in the input: the
    /// canonical bytes name them by digest, so the origin the client used (http or https, `127.0.0.1` or
    /// `localhost`) does not change the RequestKey. `fields` keeps the URLs as sent: they are what upstreams fetch.
    public init(model: ModelSpec, input: JSONObject, mediaURLs: RelayMediaURLs? = nil) throws(FalError) {
        var fields = input
        var issues: [FalError.ValidationIssue] = []
        for name in model.required {
            switch fields[name] {
            case nil, .null?:
                issues.append(.missing(name))
            case .string(let text)? where text.isEmpty:
                issues.append(
                    .invalid(
                        name,
                        "ensure this value has at least 1 characters",
                        type: "value_error.any_str.min_length"
                    )
                )
            default:
                break
            }
        }
        for (name, value) in model.defaults where fields[name] == nil || fields[name] == .null {
            fields[name] = value
        }
        for name in model.ignoredFields {
            fields[name] = nil
        }
        Self.checkString("prompt", in: fields, issues: &issues)
        Self.checkString("text", in: fields, issues: &issues)
        Self.checkString("image_url", in: fields, issues: &issues)
        if let size = fields["image_size"] {
            switch Self.parseImageSize(size) {
            case .success(let expanded):
                fields["image_size"] = .object([
                    "width": .number(Double(expanded.width)), "height": .number(Double(expanded.height)),
                ])
            case .failure(let issue):
                issues.append(issue)
            }
        }
        Self.checkInteger("num_images", in: fields, range: 1...4, issues: &issues)
        Self.checkInteger("num_inference_steps", in: fields, range: 1...100, issues: &issues)
        Self.checkInteger("max_tokens", in: fields, range: 1...8192, issues: &issues)
        Self.checkInteger("num_frames", in: fields, range: 1...240, issues: &issues)
        Self.checkNumber("guidance_scale", in: fields, range: 0...50, issues: &issues)
        Self.checkNumber("duration", in: fields, range: 0.1...60, issues: &issues)
        var seed: Int?
        if let value = fields["seed"], value != .null {
            if let integer = value.intValue, integer >= 0, integer <= 9_007_199_254_740_991 {
                seed = integer
            } else {
                issues.append(.invalid("seed", "value is not a valid non-negative integer", type: "type_error.integer"))
            }
        } else {
            fields["seed"] = nil
        }
        if !issues.isEmpty {
            throw FalError.validation(issues)
        }
        self.model = model
        self.fields = fields
        self.explicitSeed = seed
        let canonical = JSONValue.object(fields)
        self.canonicalBytes = (mediaURLs?.canonicalising(canonical) ?? canonical).canonicalBytes()
    }

    /// Requested picture size, after preset expansion (1024×768 when the model has no size).
    public var imageSize: (width: Int, height: Int) {
        guard let size = fields["image_size"]?.objectValue,
            let width = size["width"]?.intValue, let height = size["height"]?.intValue
        else { return (1024, 768) }
        return (width, height)
    }

    public func integer(_ name: String, default fallback: Int) -> Int {
        fields[name]?.intValue ?? fallback
    }

    public func string(_ name: String) -> String? {
        fields[name]?.stringValue
    }

    private static func parseImageSize(
        _ value: JSONValue
    ) -> Result<(width: Int, height: Int), FalError.ValidationIssue> {
        if let name = value.stringValue {
            guard let preset = imageSizePresets[name] else {
                let names = imageSizePresets.keys.sorted().joined(separator: ", ")
                return .failure(
                    .invalid(
                        "image_size",
                        "unknown preset \"\(name)\"; use one of \(names) or {width, height}",
                        type: "value_error.enum"
                    )
                )
            }
            return .success(preset)
        }
        guard let object = value.objectValue, let width = object["width"]?.intValue,
            let height = object["height"]?.intValue
        else {
            return .failure(
                .invalid(
                    "image_size",
                    "must be a preset name or an object {width, height} of integers",
                    type: "type_error"
                )
            )
        }
        guard dimensionRange.contains(width), dimensionRange.contains(height) else {
            return .failure(
                .invalid(
                    "image_size",
                    "width and height must be within \(dimensionRange.lowerBound)...\(dimensionRange.upperBound)",
                    type: "value_error.number.not_in_range"
                )
            )
        }
        return .success((width, height))
    }

    private static func checkString(_ name: String, in fields: JSONObject, issues: inout [FalError.ValidationIssue]) {
        guard let value = fields[name], value != .null else { return }
        if value.stringValue == nil {
            issues.append(.invalid(name, "str type expected", type: "type_error.str"))
        }
    }

    private static func checkInteger(
        _ name: String,
        in fields: JSONObject,
        range: ClosedRange<Int>,
        issues: inout [FalError.ValidationIssue]
    ) {
        guard let value = fields[name], value != .null else { return }
        guard let integer = value.intValue else {
            issues.append(.invalid(name, "value is not a valid integer", type: "type_error.integer"))
            return
        }
        if !range.contains(integer) {
            issues.append(
                .invalid(
                    name,
                    "ensure this value is within \(range.lowerBound)...\(range.upperBound)",
                    type: "value_error.number.not_in_range"
                )
            )
        }
    }

    private static func checkNumber(
        _ name: String,
        in fields: JSONObject,
        range: ClosedRange<Double>,
        issues: inout [FalError.ValidationIssue]
    ) {
        guard let value = fields[name], value != .null else { return }
        guard let number = value.doubleValue else {
            issues.append(.invalid(name, "value is not a valid number", type: "type_error.float"))
            return
        }
        if !range.contains(number) {
            issues.append(
                .invalid(
                    name,
                    "ensure this value is within \(range.lowerBound)...\(range.upperBound)",
                    type: "value_error.number.not_in_range"
                )
            )
        }
    }
}

/// The identity of a piece of work: model + canonical input (+ scope), XXH3-128 under the deployment secret.
public struct RequestKey: Sendable, Hashable, CustomStringConvertible {
    public let digest: Digest128

    public init(digest: Digest128) {
        self.digest = digest
    }

    /// `scope` is empty for the global scope, or the API key id under `per-key` scoping.
    public init(input: ModelInput, scope: String = "", hasher: KeyedHasher) {
        self.digest = hasher.digest(fields: [Array(input.model.id.utf8), input.canonicalBytes, Array(scope.utf8)])
    }

    public var description: String { digest.hex }
}
