import Synchronization
import Testing

@testable import RelayServer

/// A shutdown asked for at any moment runs the shutdown action exactly once, whether the action was set before
/// or after the request.
@Suite struct ShutdownTriggerTests {
    /// Counts the runs of an action.
    final class Runs: Sendable {
        private let count = Mutex(0)
        var value: Int { count.withLock { $0 } }
        func action() -> @Sendable () -> Void {
            { self.count.withLock { $0 += 1 } }
        }
    }

    @Test func aShutdownFiredBeforeTheActionIsSetRunsItOnceWhenSet() {
        let trigger = ShutdownTrigger()
        let runs = Runs()
        trigger.fire()
        #expect(runs.value == 0)
        trigger.set(runs.action())
        #expect(runs.value == 1)
    }

    @Test func anActionSetBeforeTheShutdownRunsOnceWhenFired() {
        let trigger = ShutdownTrigger()
        let runs = Runs()
        trigger.set(runs.action())
        #expect(runs.value == 0, "setting the action is not a shutdown")
        trigger.fire()
        #expect(runs.value == 1)
    }

    @Test func firingTwiceRunsTheActionOnce() {
        let trigger = ShutdownTrigger()
        let runs = Runs()
        trigger.set(runs.action())
        trigger.fire()
        trigger.fire()
        #expect(runs.value == 1)

        let early = ShutdownTrigger()
        let earlyRuns = Runs()
        early.fire()
        early.fire()
        early.set(earlyRuns.action())
        #expect(earlyRuns.value == 1)
    }

    @Test func concurrentFiresAndASetAlwaysRunTheActionExactlyOnce() async {
        for round in 0..<1000 {
            let trigger = ShutdownTrigger()
            let runs = Runs()
            // The set lands anywhere among the fires: before all of them, between them, or after all of them.
            let setAt = round % 9
            await withTaskGroup(of: Void.self) { group in
                for task in 0..<9 {
                    group.addTask {
                        await Task.yield()
                        if task == setAt { trigger.set(runs.action()) } else { trigger.fire() }
                    }
                }
            }
            #expect(runs.value == 1, "the set was task \(setAt) of 9")
        }
    }
}
