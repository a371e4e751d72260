import NIOCore

/// One priority's line of a `SlotQueue`: waiters' spots in arrival order, numbered consecutively, with the numbers of
/// the spots whose waiters left (cancelled, or raised into the other line) kept sorted until they reach the front. So a
/// waiter's exact place, the live spots ahead of it, is derived when asked in O(log n), and neither a release nor a
/// cancellation tells anybody anything.
struct QueueLine {
    /// A waiter's spot: plain values, so that a pass over the whole line copies no closures.
    struct Spot {
        /// The waiter's ticket.
        let id: Int
        /// Its number in this line: consecutive from the front.
        let order: Int
        /// The last place it was told (-1: none yet).
        var told: Int
    }

    private(set) var spots = CircularBuffer<Spot>()
    private var nextOrder = 0
    /// Orders of spots still in line whose waiters left, ascending from `leftStart`.
    private var left: [Int] = []
    private var leftStart = 0

    /// Spots in line, those of waiters that left included.
    var count: Int { spots.count }

    /// Spots in line whose waiters left.
    var leftCount: Int { left.count - leftStart }

    /// Appends a spot for ticket `id`; returns its order.
    mutating func append(id: Int, told: Int) -> Int {
        defer { nextOrder += 1 }
        spots.append(Spot(id: id, order: nextOrder, told: told))
        return nextOrder
    }

    /// The spot at the front, which leaves the line; whether its waiter had left already.
    mutating func popFirst() -> (spot: Spot, hadLeft: Bool)? {
        guard let spot = spots.popFirst() else { return nil }
        guard leftStart < left.count, left[leftStart] == spot.order else { return (spot, false) }
        leftStart += 1
        if leftStart == left.count {
            (left, leftStart) = ([], 0)
        } else if leftStart >= 1024, leftStart * 2 >= left.count {
            left.removeFirst(leftStart)
            leftStart = 0
        }
        return (spot, true)
    }

    /// The waiter at `order` left; its spot stays until it reaches the front, where it is skipped.
    mutating func markLeft(_ order: Int) {
        let index = insertionIndex(order)
        guard index == left.count || left[index] != order else { return }
        left.insert(order, at: index)
    }

    /// Live spots ahead of the one at `order`: its 0-based place in this line.
    func place(of order: Int) -> Int {
        guard let front = spots.first?.order else { return 0 }
        return order - front - (insertionIndex(order) - leftStart)
    }

    /// Sets the place last told to the spot at `index` of `spots`.
    mutating func setTold(_ place: Int, at index: CircularBuffer<Spot>.Index) {
        spots[index].told = place
    }

    /// The first index in `left` (from `leftStart`) whose order is not below `order`.
    private func insertionIndex(_ order: Int) -> Int {
        var (low, high) = (leftStart, left.count)
        while low < high {
            let middle = (low + high) / 2
            if left[middle] < order { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
