public import RelayCore
import Synchronization

/// Caps open connections in total and per client address. Accepting beyond a cap costs one answer: the connection
/// is served a 503 in the fal error shape and closed.
public final class ConnectionLimiter: Sendable {
    public let maxTotal: Int
    public let maxPerAddress: Int
    private let state = Mutex<(total: Int, perAddress: [String: Int])>((0, [:]))

    public init(maxTotal: Int, maxPerAddress: Int) {
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
    }

    /// Admits a connection from `address`, or says why not. An admitted connection must be `release`d once.
    public func admit(_ address: String) -> FalError? {
        state.withLock { state in
            if state.total >= maxTotal {
                return .unavailable(
                    "The relay is at its connection limit (\(maxTotal)); retry shortly",
                    type: "too_many_connections"
                )
            }
            let mine = state.perAddress[address, default: 0]
            if mine >= maxPerAddress {
                return .unavailable(
                    "Too many connections from your address (limit \(maxPerAddress))",
                    type: "too_many_connections"
                )
            }
            state.total += 1
            state.perAddress[address] = mine + 1
            return nil
        }
    }

    public func release(_ address: String) {
        state.withLock { state in
            state.total -= 1
            let left = state.perAddress[address, default: 1] - 1
            state.perAddress[address] = left > 0 ? left : nil
        }
    }

    public var open: Int { state.withLock { $0.total } }
}
