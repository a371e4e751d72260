/// The members of a JSON object: unique keys, kept in the order they were parsed or inserted.
///
/// Keys are compared as exact Unicode scalar sequences (byte-for-byte UTF-8), not with `String`'s
/// canonical equivalence: `"é"` (U+00E9) and `"e\u{301}"` are two different keys, as they are for
/// every other JSON implementation and for RFC 8785.
///
/// Equality ignores member order (JSON objects are unordered); serialisation does not.
public struct JSONObject: Sendable {
    public typealias Element = (key: String, value: JSONValue)

    /// Objects with more members than this get a hash index, so a hostile document with many keys
    /// cannot make parsing (duplicate detection) quadratic. Below it a linear scan is faster.
    static let indexThreshold = 16

    private(set) var members: [Element]
    private var index: [JSONKey: Int]?

    public init() {
        members = []
        index = nil
    }

    /// Builds an object from members in order; a later duplicate key replaces the earlier value in place.
    public init(_ members: [(String, JSONValue)]) {
        self.init()
        self.members.reserveCapacity(members.count)
        for (key, value) in members {
            self[key] = value
        }
    }

    /// The value for `key`. Setting `nil` removes the member; setting a new key appends it.
    public subscript(key: String) -> JSONValue? {
        get {
            guard let position = position(of: key) else { return nil }
            return members[position].value
        }
        set {
            if let position = position(of: key) {
                if let newValue {
                    members[position].value = newValue
                } else {
                    remove(at: position)
                }
            } else if let newValue {
                append(key, newValue)
            }
        }
    }

    /// Member names in stored order.
    public var keys: [String] { members.map(\.key) }

    public var count: Int { members.count }

    public var isEmpty: Bool { members.isEmpty }

    /// Appends a member unless `key` is already present; returns whether it was appended.
    mutating func appendIfAbsent(_ key: String, _ value: JSONValue) -> Bool {
        guard position(of: key) == nil else { return false }
        append(key, value)
        return true
    }

    private func position(of key: String) -> Int? {
        if let index {
            return index[JSONKey(key)]
        }
        return members.firstIndex { JSONKey.equal($0.key, key) }
    }

    private mutating func append(_ key: String, _ value: JSONValue) {
        members.append((key, value))
        if index != nil {
            index?[JSONKey(key)] = members.count - 1
        } else if members.count > Self.indexThreshold {
            rebuildIndex()
        }
    }

    private mutating func remove(at position: Int) {
        members.remove(at: position)
        if members.count > Self.indexThreshold {
            rebuildIndex()
        } else {
            index = nil
        }
    }

    private mutating func rebuildIndex() {
        var index = [JSONKey: Int](minimumCapacity: members.count)
        for (position, member) in members.enumerated() {
            index[JSONKey(member.key)] = position
        }
        self.index = index
    }
}

extension JSONObject: Sequence {
    public func makeIterator() -> IndexingIterator<[Element]> {
        members.makeIterator()
    }

    public var underestimatedCount: Int { members.count }
}

extension JSONObject: ExpressibleByDictionaryLiteral {
    /// Later duplicates replace earlier ones, as with ``init(_:)``.
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.init(elements)
    }
}

extension JSONObject: Hashable {
    /// Same keys (exact scalars) with equal values, in any order.
    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.count == rhs.count else { return false }
        for (key, value) in lhs.members {
            guard let other = rhs[key], other == value else { return false }
        }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        // Order-independent, to agree with ==: a commutative sum of per-member hashes.
        var sum = 0
        for (key, value) in members {
            var memberHasher = Hasher()
            JSONKey(key).hash(into: &memberHasher)
            value.hash(into: &memberHasher)
            sum &+= memberHasher.finalize()
        }
        hasher.combine(members.count)
        hasher.combine(sum)
    }
}

extension JSONObject: CustomStringConvertible {
    public var description: String { JSONValue.object(self).serializedString }
}
