import Foundation
import RelayCore
import RelayJobs
import RelayStore
import Testing

/// A job table as a node of a fleet sees it: requests adopted from the registry under their own ids, and requests in
/// flight at a restart left to the fleet.
@Suite struct JobTableFleetTests {
    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image)

    struct Manual: Upstream {
        struct Task: UpstreamTask { func cancel() {} }
        func start(_ job: Job) -> any UpstreamTask { Task() }
    }

    private func adopted(_ id: String, key: RequestKey, cancelled: Bool = false) -> FleetRequest {
        FleetRequest(
            id: id,
            endpoint: model.id,
            modelID: model.id,
            key: key,
            input: [],
            ownerKeyID: "k1",
            createdAt: Timestamp(secondsSinceEpoch: 1_000),
            cancelled: cancelled,
            nodeID: "node-a"
        )
    }

    @Test func anAdoptedRequestKeepsItsIdOwnerAndAgeAndSharesTheKeysJob() throws {
        let table = JobTable { _ in Manual() }
        let input = try ModelInput(model: model, input: ["prompt": "adopt"])
        let key = RequestKey(digest: Digest128(high: 9, low: 9))
        let local = table.submit(input, endpoint: EndpointID(model.id)!, key: key, ownerKeyID: "k1")
        let request = table.adopt(adopted("from-a", key: key), input: input, endpoint: EndpointID(model.id)!)
        #expect(request.id == "from-a" && request.ownerKeyID == "k1")
        #expect(request.createdAt == Timestamp(secondsSinceEpoch: 1_000))
        #expect(request.job === local.job, "coalesced with the key's job on this node")
        #expect(table.request("from-a", keyID: "k1") != nil && table.request("from-a", keyID: "k2") == nil)
        // Adopting again returns the request held, not a second one.
        #expect(
            table.adopt(adopted("from-a", key: key), input: input, endpoint: EndpointID(model.id)!).job === local.job
        )
        #expect(table.counts.requests == 2)
        // A request cancelled in the registry is adopted cancelled.
        let gone = table.adopt(
            adopted("gone", key: key, cancelled: true),
            input: input,
            endpoint: EndpointID(model.id)!
        )
        #expect(table.request(gone.id, keyID: "k1")?.cancelled == true)
    }

    @Test func requestsInterruptedByARestartAreLeftToTheFleet() throws {
        let table = JobTable { _ in Manual() }
        let endpoint = EndpointID(model.id)!
        let interrupted = table.submit(
            try ModelInput(model: model, input: ["prompt": "a"]),
            endpoint: endpoint,
            key: RequestKey(digest: Digest128(high: 1, low: 1)),
            ownerKeyID: nil
        )
        interrupted.job.receive(.failed(JobTable.restartedError))
        let failed = table.submit(
            try ModelInput(model: model, input: ["prompt": "b"]),
            endpoint: endpoint,
            key: RequestKey(digest: Digest128(high: 2, low: 2)),
            ownerKeyID: nil
        )
        failed.job.receive(.failed(.badGateway("origin broke")))
        #expect(table.forgetInterrupted() == 1)
        #expect(!table.holds(interrupted.id))
        #expect(table.holds(failed.id))
    }

    /// Records what the table tells the fleet.
    final class RecordingFleet: Fleet, @unchecked Sendable {
        private let lock = NSLock()
        private var ids: [String] = []
        var registered: [String] { lock.withLock { ids } }
        func register(_ request: RelayRequest, done: @escaping @Sendable () -> Void) {
            lock.withLock { ids.append(request.id) }
            done()
        }
        func stored(_ key: RequestKey, _ result: CachedResult, done: @escaping @Sendable () -> Void) { done() }
        func cancelled(_ request: RelayRequest) {}
        func attached(_ key: RequestKey, _ handle: UpstreamHandle) {}
    }

    /// A submission registered with its key's lookup keeps that id and is not registered again; one whose lookup
    /// failed on this side (it may have committed) keeps the id too, and is registered again: never a second id.
    @Test func aRegistrationInDoubtIsMadeAgainUnderTheSameId() throws {
        let fleet = RecordingFleet()
        let table = JobTable(fleet: fleet) { _ in Manual() }
        let endpoint = EndpointID(model.id)!
        var mine = adopted("sure", key: RequestKey(digest: Digest128(high: 4, low: 1)))
        mine.nodeID = "this-node"
        let sure = table.submit(
            try ModelInput(model: model, input: ["prompt": "sure"]),
            endpoint: endpoint,
            key: mine.key,
            ownerKeyID: "k1",
            registered: mine,
            mayStartWork: { true }
        )
        #expect(sure?.id == "sure" && fleet.registered.isEmpty)
        var doubt = adopted("in-doubt", key: RequestKey(digest: Digest128(high: 4, low: 2)))
        doubt.registrationInDoubt = true
        let inDoubt = table.submit(
            try ModelInput(model: model, input: ["prompt": "doubt"]),
            endpoint: endpoint,
            key: doubt.key,
            ownerKeyID: "k1",
            registered: doubt,
            mayStartWork: { true }
        )
        #expect(inDoubt?.id == "in-doubt")
        #expect(fleet.registered == ["in-doubt"])
    }
}
