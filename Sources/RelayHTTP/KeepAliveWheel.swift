import NIOCore
import NIOPosix

/// Something that sends a keep-alive now and then (a bare SSE stream's `: ping`).
protocol KeepAliveTarget: AnyObject {
    func keepAlive()
}

/// The keep-alives of every stream on one event loop, from one timer: a wheel of one-second buckets, one turn per
/// interval, each stream in the bucket that had just ticked when it started. A stream gets its keep-alive every
/// interval, like a timer of its own, but 10,000 streams cost one scheduled task instead of 10,000 (timer-heap
/// entries, closures and per-connection memory), and their pings spread evenly over the interval instead of
/// bunching.
///
/// Loop-confined: created, used and dropped on its event loop (`KeepAliveWheel.on(_:seconds:)`).
final class KeepAliveWheel {
    private let eventLoop: any EventLoop
    private let key: Key
    private var buckets: [[ObjectIdentifier: any KeepAliveTarget]]
    private var hand = 0
    private var count = 0
    private var task: RepeatedTask?

    private init(eventLoop: any EventLoop, key: Key) {
        self.eventLoop = eventLoop
        self.key = key
        self.buckets = Array(repeating: [:], count: max(1, key.seconds))
    }

    /// A handle to leave the wheel with.
    struct Slot {
        fileprivate let wheel: KeepAliveWheel
        fileprivate let bucket: Int
    }

    /// Adds `target`: its first keep-alive comes one interval from now.
    func add(_ target: any KeepAliveTarget) -> Slot {
        eventLoop.preconditionInEventLoop()
        guard buckets[hand].updateValue(target, forKey: ObjectIdentifier(target)) == nil else {
            return Slot(wheel: self, bucket: hand)
        }
        count += 1
        if task == nil {
            let bound = NIOLoopBound(self, eventLoop: eventLoop)
            task = eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                bound.value.tick()
            }
        }
        return Slot(wheel: self, bucket: hand)
    }

    static func remove(_ target: any KeepAliveTarget, from slot: Slot) {
        let wheel = slot.wheel
        wheel.eventLoop.preconditionInEventLoop()
        guard wheel.buckets[slot.bucket].removeValue(forKey: ObjectIdentifier(target)) != nil else { return }
        wheel.count -= 1
        if wheel.count == 0 {
            // An idle loop schedules nothing, and the registry forgets the wheel (and with it the loop).
            wheel.task?.cancel()
            wheel.task = nil
            Registry.current.wheels[wheel.key] = nil
        }
    }

    private func tick() {
        hand = (hand + 1) % buckets.count
        guard !buckets[hand].isEmpty else { return }
        // A copy: a keep-alive may end its stream (a failed write closes the channel), which leaves the wheel.
        for target in Array(buckets[hand].values) {
            target.keepAlive()
        }
    }

    // MARK: - One wheel per event loop and interval

    private struct Key: Hashable {
        let loop: ObjectIdentifier
        let seconds: Int
    }

    /// The wheels of this thread's event loop(s): an event loop runs on one thread, so no lock is needed (tests run
    /// several embedded loops on one thread, hence the key).
    /// `@unchecked Sendable`: each instance lives in one thread's slot and is only ever touched by that thread.
    private final class Registry: @unchecked Sendable {
        var wheels: [Key: KeepAliveWheel] = [:]

        private static let perThread = ThreadSpecificVariable<Registry>()

        static var current: Registry {
            if let registry = perThread.currentValue { return registry }
            let registry = Registry()
            perThread.currentValue = registry
            return registry
        }
    }

    /// The wheel for keep-alives every `seconds` on `eventLoop`; call on that loop.
    static func on(_ eventLoop: any EventLoop, seconds: Int64) -> KeepAliveWheel {
        eventLoop.preconditionInEventLoop()
        let key = Key(loop: ObjectIdentifier(eventLoop), seconds: Int(max(1, seconds)))
        let registry = Registry.current
        if let wheel = registry.wheels[key] { return wheel }
        let wheel = KeepAliveWheel(eventLoop: eventLoop, key: key)
        registry.wheels[key] = wheel
        return wheel
    }
}

@available(*, unavailable)
extension KeepAliveWheel: Sendable {}
