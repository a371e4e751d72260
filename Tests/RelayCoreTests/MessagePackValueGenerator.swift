import Foundation
import Testing

@testable import RelayCore

/// Deterministic random JSON values that cross every MessagePack format boundary.
struct MessagePackValueGenerator {
    var random: JSONSeededRandom

    init(seed: UInt64) {
        random = JSONSeededRandom(seed: seed)
    }

    mutating func value(depth: Int = 0) -> JSONValue {
        switch random.below(depth >= 3 ? 6 : 9) {
        case 0: return .null
        case 1: return .bool(random.chance(0.5))
        case 2, 3: return .number(number())
        case 4, 5: return .string(string())
        case 6, 7: return .array((0..<count()).map { _ in value(depth: depth + 1) })
        default:
            return .object(JSONObject((0..<count()).map { _ in (string(maxLength: 12), value(depth: depth + 1)) }))
        }
    }

    private static let boundaries: [Double] = [
        0, 127, 255, 65535, 4_294_967_295, 0x1p53, 0x1p63, 0x1p64, -32, -128, -32768, -2_147_483_648, -0x1p63,
    ]

    private mutating func number() -> Double {
        switch random.below(7) {
        case 0, 1:
            let base = Self.boundaries[random.below(Self.boundaries.count)]
            // Neighbours in Double steps: ±1 for small values, the next Double for 2^53 and up.
            switch random.below(3) {
            case 0: return base.nextDown
            case 1: return base
            default: return base.magnitude < 0x1p53 ? base + 1 : base.nextUp
            }
        case 2:
            return Double(Int64(bitPattern: random.next()) >> UInt64(random.below(64)))
        case 3:
            return Double(random.next() >> UInt64(random.below(64)))
        case 4:
            while true {
                let value = Double(bitPattern: random.next())
                if value.isFinite { return value }
            }
        case 5:
            return Double(random.below(2001) - 1000) / 8
        default:
            return Double(random.next() >> 11) * 0x1p-53 * 2e6 - 1e6
        }
    }

    private mutating func count() -> Int {
        random.chance(0.08) ? 14 + random.below(6) : random.below(6)
    }

    private mutating func string(maxLength: Int? = nil) -> String {
        let length: Int
        if let maxLength {
            length = random.below(maxLength + 1)
        } else {
            switch random.below(100) {
            case 0: length = 65_530 + random.below(12)
            case 1..<4: length = 250 + random.below(12)
            case 4..<12: length = 28 + random.below(8)
            default: length = random.below(28)
            }
        }
        var string = ""
        string.unicodeScalars.reserveCapacity(length)
        // Mostly ASCII so that long strings land near their byte-length boundaries.
        while string.utf8.count < length {
            let value: UInt32
            switch random.below(20) {
            case 0: value = 0x80 + UInt32(random.below(0x780))
            case 1: value = 0x1_0000 + UInt32(random.below(0x10_0000))
            case 2: value = UInt32(random.below(0x20))
            case 3: value = 0xE000 + UInt32(random.below(0x2000))
            default: value = 0x20 + UInt32(random.below(0x5F))
            }
            string.unicodeScalars.append(Unicode.Scalar(value) ?? "?")
        }
        return string
    }
}
