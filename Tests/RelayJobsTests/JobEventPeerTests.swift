import RelayCore
import RelayJobs
import Testing

/// A job followed on another node logs the same events under the same numbers as the job it follows.
@Suite struct JobEventPeerTests {
    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image)

    @Test func aFollowerLogsTheOwnersEventsUnderTheSameNumbers() throws {
        let input = try ModelInput(model: model, input: ["prompt": "peer"])
        let key = RequestKey(digest: Digest128(high: 1, low: 2))
        let owner = Job(input: input, key: key, maxEvents: 100)
        let follower = Job(input: input, key: key, maxEvents: 100)
        let updates: [JobUpdate] = [
            .queued(position: 3), .queued(position: 1), .started, .log("step 1/4", level: .info),
            .partial(["images": [["url": "http://x/files/a.png"]]]), .log("warn", level: .warn),
            .succeeded(result: ["images": [], "seed": 7], inferenceSeconds: 1.25),
        ]
        for update in updates { owner.receive(update) }
        // The owner's every event (superseded queue positions too): what `/_cluster/v1/follow` streams.
        for event in owner.events(after: 0) {
            let (sequence, update) = try #require(JobUpdate.fromPeer(event.peerJSON))
            #expect(sequence == event.sequence)
            follower.receive(update)
        }
        let owned = owner.events(after: 0)
        let followed = follower.events(after: 0)
        #expect(followed.map(\.sequence) == owned.map(\.sequence))
        #expect(followed.map(\.kind.withoutTimestamps) == owned.map(\.kind.withoutTimestamps))
        #expect(follower.status.phase == owner.status.phase)
    }

    /// A follower that joins a long job late (its log bounded, the start dropped) and one that follows a run taken
    /// over (numbers that skip) still number every event as the owner does, so `Last-Event-ID` means the same
    /// event on every node.
    @Test func aLateFollowerOfABoundedLogKeepsTheOwnersNumbers() throws {
        let input = try ModelInput(model: model, input: ["prompt": "long"])
        let key = RequestKey(digest: Digest128(high: 1, low: 3))
        let owner = Job(input: input, key: key, maxEvents: 16)
        owner.receive(.queued(position: 2))
        owner.receive(.started)
        for step in 1...60 { owner.receive(.log("step \(step)", level: .info)) }
        owner.numberFrom(1_000)  // the run taken over by this node
        for step in 1...5 { owner.receive(.log("again \(step)", level: .info)) }
        let follower = Job(input: input, key: key, maxEvents: 16)
        for event in owner.events(after: follower.status.lastSequence) {
            let (sequence, update) = try #require(JobUpdate.fromPeer(event.peerJSON))
            #expect(follower.receive(fromPeer: update, numbered: sequence))
        }
        // What the follower logged sits under the owner's numbers, event for event.
        let owned = Dictionary(uniqueKeysWithValues: owner.events(after: 0).map { ($0.sequence, $0.kind) })
        for event in follower.events(after: 0) where event.sequence > 2 {
            #expect(owned[event.sequence]?.withoutTimestamps == event.kind.withoutTimestamps, "\(event.sequence)")
        }
        #expect(follower.status.lastSequence == owner.status.lastSequence)
        // A replay of what it has is skipped.
        let last = try #require(owner.events(after: 0).last)
        let (sequence, update) = try #require(JobUpdate.fromPeer(last.peerJSON))
        #expect(!follower.receive(fromPeer: update, numbered: sequence))
    }

    @Test func failuresCrossWithTheirStatusAndType() throws {
        let cases: [FalError] = [
            .validation(.invalid("prompt", "too long")), .unavailable("gone", type: "cluster_unavailable"),
            .badGateway("origin broke"), .rateLimited("slow down"),
        ]
        for error in cases {
            let event = JobEvent(sequence: 4, kind: .completed(.failure(error)))
            let (_, update) = try #require(JobUpdate.fromPeer(event.peerJSON))
            #expect(update == .failed(error))
        }
        let cancelled = JobEvent(sequence: 2, kind: .completed(.cancelled))
        #expect(JobUpdate.fromPeer(cancelled.peerJSON)?.update == .failed(.cancelled()))
        #expect(JobUpdate.fromPeer(["seq": 1, "kind": "unheard-of"]) == nil)
        #expect(JobUpdate.fromPeer(["kind": "started"]) == nil)
    }
}

extension JobEvent.Kind {
    /// Log timestamps are each node's own.
    fileprivate var withoutTimestamps: String {
        if case .log(let entry) = self { return "log \(entry.level) \(entry.message)" }
        return "\(self)"
    }
}
