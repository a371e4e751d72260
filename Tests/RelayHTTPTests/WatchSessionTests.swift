import RelayCore
import RelayJobs
import Testing

@testable import RelayHTTP

@Suite struct WatchSessionTests {
    let id = "5217bdd1-d3e6-4163-a44d-1e3847e0a2c3"
    let time = Timestamp(secondsSinceEpoch: 1_700_000_000)

    private func preview(_ step: Int) -> JSONValue {
        [
            "images": [["url": "data:image/png;base64,AAAA", "width": 64, "height": 64]], "partial": true,
            "step": .number(Double(step)),
        ]
    }

    /// The message as a client reads it.
    private func wire(_ event: JobEvent) throws -> JSONObject {
        let message = try #require(WatchSession.message(for: event, requestID: id))
        return try #require(try JSONValue(parsing: JSONValue.object(message).serialized()).objectValue)
    }

    @Test func partialOutputsBecomePartialMessagesWithTheirData() throws {
        let message = try wire(JobEvent(sequence: 7, kind: .partial(preview(2))))
        #expect(message["type"] == "partial")
        #expect(message["request_id"] == .string(id))
        #expect(message["seq"]?.intValue == 7)
        #expect(message["data"] == preview(2))
        #expect(message["status"] == nil)
    }

    @Test func statusChangesAndLogsStayEventMessages() throws {
        let log = try wire(JobEvent(sequence: 3, kind: .log(LogEntry(message: "step 1/4", timestamp: time))))
        #expect(log["type"] == "event" && log["seq"]?.intValue == 3 && log["data"] == nil)
        let status = try #require(log["status"]?.objectValue)
        #expect(status["status"] == "IN_PROGRESS")
        #expect(status["logs"]?.arrayValue?.first?.objectValue?["message"] == "step 1/4")

        let done = try wire(
            JobEvent(sequence: 9, kind: .completed(.success(result: ["output": "hi"], inferenceSeconds: 1)))
        )
        #expect(done["type"] == "event" && done["status"]?.objectValue?["status"] == "COMPLETED")
        let queued = try wire(JobEvent(sequence: 1, kind: .queuePosition(2)))
        #expect(queued["status"]?.objectValue?["queue_position"]?.intValue == 2)
    }

    /// A socket that stops being writable mid-job, is caught up from the job's (compacted) log in two goes, and
    /// receives every log line, every partial and the end exactly once, in sequence order.
    @Test func aReplayAfterCompactionCarriesEveryStreamItem() throws {
        var machine = JobStateMachine()
        var session = WatchSession()
        var received: [JSONObject] = []
        let began = session.begin(id, after: 0)
        #expect(began)
        func live(_ update: JobUpdate, writable: Bool) throws {
            let applied = machine.apply(update, at: time)
            let event = try #require(applied)
            if session.deliver(id, sequence: event.sequence, writable: writable) == .send {
                received.append(try wire(event))
            }
        }

        try live(.queued(position: 3), writable: true)
        // The socket fills: superseded queue positions, then logs and partials, all deferred.
        try live(.queued(position: 2), writable: false)
        try live(.queued(position: 1), writable: false)
        try live(.started, writable: false)
        for step in 1...4 {
            try live(.log("step \(step)/4", level: .info), writable: step > 2)  // writable again, but still behind
            if step < 4 { try live(.partial(preview(step)), writable: true) }
        }
        try live(.succeeded(result: ["images": []], inferenceSeconds: 1), writable: true)
        #expect(received.count == 1, "nothing may overtake the deferred events")

        // First resync: room for three messages only.
        var behind = session.takeBehind()
        #expect(behind.count == 1 && behind[0].requestID == id && behind[0].after == 1)
        var room = 3
        for event in machine.replay(after: behind[0].after) {
            guard room > 0 else {
                let delivery = session.deliver(id, sequence: event.sequence, writable: false)
                #expect(delivery == .deferred)
                break
            }
            room -= 1
            session.sent(id, sequence: event.sequence)
            received.append(try wire(event))
        }
        // A live duplicate of what the resync already sent is dropped.
        let overlap = session.deliver(id, sequence: 6, writable: true)
        #expect(overlap == .duplicate)

        behind = session.takeBehind()
        #expect(behind.count == 1)
        for event in machine.replay(after: behind[0].after) {
            session.sent(id, sequence: event.sequence)
            received.append(try wire(event))
        }
        let stillBehind = session.takeBehind()
        #expect(stillBehind.isEmpty)

        let sequences = received.compactMap { $0["seq"]?.intValue }
        #expect(sequences == sequences.sorted() && Set(sequences).count == sequences.count)
        // The compaction dropped only superseded snapshots (positions 2 and 1): every stream item arrived.
        let streamItems = machine.events.filter { !$0.isSnapshot }.map(\.sequence)
        #expect(streamItems.allSatisfy(sequences.contains))
        #expect(!sequences.contains(2) && !sequences.contains(3))
        let partials = received.filter { $0["type"] == "partial" }
        #expect(partials.map { $0["data"] } == (1...3).map { .some(preview($0)) })
        let logs = received.compactMap {
            $0["status"]?.objectValue?["logs"]?.arrayValue?.first?.objectValue?["message"]?.stringValue
        }
        #expect(logs == (1...4).map { "step \($0)/4" })
        #expect(received.last?["status"]?.objectValue?["status"] == "COMPLETED")
    }

    @Test func eventsOfUnwatchedRequestsAreIgnored() {
        var session = WatchSession()
        var deliveries = [session.deliver(id, sequence: 1, writable: true)]
        let began = session.begin(id, after: 4)
        deliveries.append(session.deliver(id, sequence: 4, writable: true))
        deliveries.append(session.deliver(id, sequence: 5, writable: true))
        session.end(id)
        deliveries.append(session.deliver(id, sequence: 6, writable: true))
        #expect(began)
        #expect(deliveries == [.ignore, .duplicate, .send, .ignore])
    }
}
