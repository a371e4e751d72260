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
