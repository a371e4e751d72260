import RelayCore
import RelayJobs
import RelayStore
import Testing

@testable import RelayHTTP

/// The fleet's result index as a submission's tier: what the submission learns when the database answers, and when
/// it does not.
@Suite struct FleetResultTierTests {
    struct Failing: Error {}

    /// A fleet whose lookup fails on this side (as a timeout does), whether or not the statement committed.
    struct UnansweringFleet: FleetAccess {
        var isAvailable: Bool { false }
        func isLive(node: String) -> Bool { false }
        var peerToken: String { "token" }
        func request(_ id: String) async throws -> FleetRequest? { throw Failing() }
        func lookup(_ key: RequestKey) async throws -> (result: CachedResult?, runningElsewhere: Bool) {
            throw Failing()
        }
        func lookupOrClaim(
            _ key: RequestKey,
            registering: FleetRequest?
        ) async throws -> (result: CachedResult?, runningElsewhere: Bool) { throw Failing() }
        func withdraw(_ registered: FleetRequest) {}
        var nodeID: String { "this-node" }
        func fetchBlob(_ digest: Digest128, mediaType: MediaType) async -> Bool { false }
        func status() -> JSONValue { .null }
    }

    /// The submission goes on as a local miss under the id its registration may already hold in the registry, marked
    /// in doubt so the job table registers it again: no second id for one submission (whose webhook the fleet would
    /// then deliver twice).
    @Test func aLookupThatFailsKeepsTheRegistrationsIdInDoubt() async throws {
        let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image)
        let input = try ModelInput(model: model, input: ["prompt": "in doubt"])
        let key = RequestKey(digest: Digest128(high: 5, low: 5))
        let registering = FleetRequest(
            id: "req-1",
            endpoint: EndpointID(model.id)!,
            input: input,
            key: key,
            ownerKeyID: nil,
            nodeID: "this-node",
            webhookURL: "https://example.com/hook"
        )
        let tier = FleetResultTier(fleet: UnansweringFleet(), registering: registering)
        let answer = await tier.fill(key, input: input, into: ResultIndex())
        #expect(!answer.found && !answer.runningElsewhere)
        let registered = try #require(answer.registered)
        #expect(registered.id == "req-1" && registered.registrationInDoubt)
    }
}
