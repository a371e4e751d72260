import RelayCore
import Testing

@testable import RelayJobs

@Suite struct JobStateMachineTests {
    let time = Timestamp(secondsSinceEpoch: 1_800_000_000)

    @Test func happyPathAppendsGaplessEvents() {
        var machine = JobStateMachine()
        #expect(machine.apply(.queued(position: 2), at: time)?.sequence == 1)
        #expect(machine.apply(.queued(position: 1), at: time)?.sequence == 2)
        #expect(machine.apply(.started, at: time)?.kind == .started)
        #expect(machine.apply(.log("step 1/2", level: .info), at: time) != nil)
        #expect(machine.apply(.partial(["x": 1]), at: time) != nil)
        let done = machine.apply(.succeeded(result: ["ok": true], inferenceSeconds: 1.5), at: time)
        #expect(done?.isTerminal == true)
        #expect(machine.events.map(\.sequence) == Array(1...6))
        #expect(machine.logs.map(\.message) == ["step 1/2"])
        #expect(machine.phase == .completed(.success(result: ["ok": true], inferenceSeconds: 1.5)))
    }

    @Test func repeatedQueuePositionIsNotAnEvent() {
        var machine = JobStateMachine()
        #expect(machine.apply(.queued(position: 0), at: time) != nil)
        #expect(machine.apply(.queued(position: 0), at: time) == nil)
        #expect(machine.lastSequence == 1)
    }

    @Test func nothingMovesBackwardsOrReopens() {
        var machine = JobStateMachine()
        _ = machine.apply(.started, at: time)
        #expect(machine.apply(.queued(position: 3), at: time) == nil)
        #expect(machine.phase == .running)
        _ = machine.apply(.failed(.upstreamFailed("boom")), at: time)
        #expect(machine.apply(.succeeded(result: [:], inferenceSeconds: nil), at: time) == nil)
        #expect(machine.apply(.log("late", level: .info), at: time) == nil)
        #expect(machine.cancel() == nil)
        #expect(machine.phase == .completed(.failure(.upstreamFailed("boom"))))
    }

    @Test func logWhileQueuedStartsTheJob() {
        var machine = JobStateMachine()
        _ = machine.apply(.queued(position: 0), at: time)
        _ = machine.apply(.log("warming up", level: .info), at: time)
        #expect(machine.phase == .running)
        #expect(machine.events.map(\.kind) == [.queuePosition(0), .started, .log(machine.logs[0])])
    }

    @Test func replayFromAnyPoint() {
        var machine = JobStateMachine()
        for step in 1...5 {
            _ = machine.apply(.log("step \(step)", level: .info), at: time)
        }
        #expect(machine.events(after: 0).count == 6)
        #expect(machine.events(after: 4).map(\.sequence) == [5, 6])
        #expect(machine.events(after: 6).isEmpty)
        #expect(machine.events(after: 99).isEmpty)
    }

    @Test func lateJoinersGetTheLatestSnapshotAndEveryStreamItem() {
        var machine = JobStateMachine()
        _ = machine.apply(.queued(position: 3), at: time)
        _ = machine.apply(.queued(position: 2), at: time)
        _ = machine.apply(.queued(position: 1), at: time)
        #expect(machine.replay(after: 0).map(\.kind) == [.queuePosition(1)])
        _ = machine.apply(.started, at: time)
        _ = machine.apply(.log("a", level: .info), at: time)
        _ = machine.apply(.partial(["p": 1]), at: time)
        _ = machine.apply(.log("b", level: .info), at: time)
        let replay = machine.replay(after: 0)
        #expect(replay.map(\.sequence) == [4, 5, 6, 7])
        #expect(machine.replay(after: 5).map(\.sequence) == [6, 7])
        #expect(machine.replay(after: 2).map(\.sequence) == [4, 5, 6, 7])
    }

    @Test func cancelEndsOnce() {
        var machine = JobStateMachine()
        #expect(machine.cancel()?.kind == .completed(.cancelled))
        #expect(machine.cancel() == nil)
    }
}

@Suite struct JobStateMachineBoundTests {
    @Test func theLogIsBoundedButKeepsTheLatestSnapshotAndSequenceNumbers() {
        var machine = JobStateMachine(maxEvents: 16)
        let now = Timestamp(secondsSinceEpoch: 1)
        _ = machine.apply(.queued(position: 3), at: now)
        _ = machine.apply(.started, at: now)
        for step in 1...100 {
            _ = machine.apply(.log("step \(step)", level: .info), at: now)
        }
        #expect(machine.lastSequence == 102)
        #expect(machine.events.count <= 20)
        #expect(machine.events.last?.sequence == 102)
        #expect(machine.droppedEvents == 102 - machine.events.count)
        #expect(machine.logs.count <= 20 && machine.logs.last?.message == "step 100")
        // A late joiner learns the phase from the kept snapshot, then gets the retained stream items in order.
        let replay = machine.replay(after: 0)
        #expect(replay.first?.kind == .started)
        #expect(Array(replay.dropFirst().map(\.sequence)) == Array(machine.events.map(\.sequence)))
        // A subscriber that is current gets only what is new.
        #expect(machine.replay(after: 101).map(\.sequence) == [102])
        #expect(machine.events(after: 102).isEmpty)
        let finish = machine.apply(.succeeded(result: ["ok": true], inferenceSeconds: 1), at: now)
        #expect(finish?.sequence == 103)
        #expect(machine.replay(after: 102).map(\.sequence) == [103])
    }
}

@Suite struct JobStateMachineRenumberingTests {
    let now = Timestamp(secondsSinceEpoch: 1)

    /// A node that takes a fleet's job over numbers its run past every number the run before it gave out: a client
    /// that resumes after any of those numbers, seen on whichever node, gets the new run from its first event.
    @Test func numbersSkipAheadAndAResumeInsideTheGapGetsWhatFollowsIt() {
        var machine = JobStateMachine(maxEvents: 16)
        _ = machine.apply(.started, at: now)
        _ = machine.apply(.log("step 1", level: .info), at: now)
        #expect(machine.lastSequence == 2)
        machine.numberFrom(1_000)
        machine.numberFrom(10)  // never back
        #expect(machine.apply(.log("again 1", level: .info), at: now)?.sequence == 1_000)
        #expect(machine.apply(.log("again 2", level: .info), at: now)?.sequence == 1_001)
        #expect(machine.events.map(\.sequence) == [1, 2, 1_000, 1_001])
        // After a number the old run gave out that this node never heard of (5), and after this node's last one (2):
        // the new run from its start either way.
        for after in [2, 5, 999] {
            #expect(machine.events(after: after).map(\.sequence) == [1_000, 1_001], "after \(after)")
            #expect(machine.replay(after: after).map(\.sequence) == [1_000, 1_001], "after \(after)")
        }
        #expect(machine.events(after: 1_000).map(\.sequence) == [1_001])
        #expect(machine.events(after: 1).map(\.sequence) == [2, 1_000, 1_001])
        #expect(machine.events(after: 1_001).isEmpty)
        // Past the bound, with the gap among the dropped events: numbers and the count dropped stay exact.
        for step in 3...40 {
            _ = machine.apply(.log("again \(step)", level: .info), at: now)
        }
        #expect(machine.lastSequence == 1_039)
        #expect(machine.droppedEvents == 42 - machine.events.count)
        #expect(machine.events(after: 2).first?.sequence == machine.events.first?.sequence)
        #expect(machine.events(after: 1_030).map(\.sequence) == Array(1_031...1_039))
    }
}
