import Testing

@testable import RelayHTTP

/// The one state machine behind every way a job is watched (SSE on HTTP/1.1 and HTTP/2, `/stream`, run, each `/ws`
/// watch): order, replay overlaps, back-pressure and catch-up, keep-alives, the end.
@Suite struct JobStreamStateMachineTests {
    @Test func sendsInOrderDropsRepeatsAndWaitsWhileFull() {
        var machine = JobStreamStateMachine(after: 2)
        #expect(machine.lastSent == 2)
        #expect(machine.deliver(sequence: 2, writable: true) == .drop)
        #expect(machine.deliver(sequence: 3, writable: true) == .write)
        #expect(machine.deliver(sequence: 3, writable: true) == .drop)
        #expect(machine.deliver(sequence: 4, writable: false) == .wait)
        #expect(machine.isBehind && machine.lastSent == 3)
        // Behind: even a writable moment does not let a later event jump ahead of the held-back ones.
        #expect(machine.deliver(sequence: 5, writable: true) == .wait)
        #expect(!machine.shouldPing(writable: true))
        #expect(machine.writabilityChanged(writable: false) == nil)
        #expect(machine.writabilityChanged(writable: true) == 3)
        #expect(!machine.isBehind)
        #expect(machine.writabilityChanged(writable: true) == nil)
        #expect(machine.deliver(sequence: 4, writable: true) == .write)
        #expect(machine.shouldPing(writable: true))
        #expect(!machine.shouldPing(writable: false))
        let first = machine.end()
        let second = machine.end()
        #expect(first && !second)
        #expect(machine.deliver(sequence: 9, writable: true) == .drop)
        #expect(!machine.shouldPing(writable: true) && machine.lastSent == nil)
    }

    /// A client that resumes after the end on a node whose log reaches that end only now (it follows the job on
    /// another node of the fleet): the end ends the stream without a frame, instead of being dropped as a repeat
    /// and leaving the stream open for ever.
    @Test func anEndTheClientSawEndsTheStream() {
        var machine = JobStreamStateMachine(after: 40)
        #expect(machine.deliver(sequence: 12, writable: true) == .drop)
        #expect(machine.deliver(sequence: 40, terminal: true, writable: true) == .end)
        var fresh = JobStreamStateMachine(after: 39)
        #expect(fresh.deliver(sequence: 40, terminal: true, writable: true) == .write)
        _ = fresh.end()
        #expect(fresh.deliver(sequence: 40, terminal: true, writable: true) == .drop)
    }

    /// A catch-up that replays the log from the last sent event, while live events keep arriving, sends each event
    /// exactly once and in order.
    @Test func aCatchUpOverlappingLiveEventsSendsEachOnceInOrder() {
        var machine = JobStreamStateMachine(after: 0)
        var sent: [Int] = []
        func offer(_ sequence: Int, writable: Bool) {
            if machine.deliver(sequence: sequence, writable: writable) == .write { sent.append(sequence) }
        }
        offer(1, writable: true)
        offer(2, writable: false)
        offer(3, writable: true)  // live, while behind
        let after = machine.writabilityChanged(writable: true)
        #expect(after == 1)
        for sequence in 2...3 { offer(sequence, writable: true) }  // the replay from the log
        offer(3, writable: true)  // the live copy of an event the replay already sent
        offer(4, writable: true)
        #expect(sent == [1, 2, 3, 4])
    }

    /// A `/ws` socket keeps one machine per watched request: one watch falling behind holds back only its own events.
    @Test func watchesOnOneSocketFallBehindOnTheirOwn() {
        var session = WatchSession()
        #expect(session.begin("a", after: 0) && session.begin("b", after: 5))
        #expect(session.deliver("a", sequence: 1, writable: false) == .deferred)
        #expect(session.deliver("b", sequence: 6, writable: true) == .send)
        #expect(session.deliver("b", sequence: 6, writable: true) == .duplicate)
        #expect(session.deliver("c", sequence: 1, writable: true) == .ignore)
        let behind = session.takeBehind()
        #expect(behind.map(\.requestID) == ["a"] && behind.map(\.after) == [0])
        session.sent("a", sequence: 1)
        #expect(session.deliver("a", sequence: 1, writable: true) == .duplicate)
        #expect(session.takeBehind().isEmpty)
    }
}
