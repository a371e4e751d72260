import RelayCore
import Synchronization
import Testing

@testable import RelayJobs

/// `submit(mayStartWork:)`: the upstream-work budget is asked exactly when a submission would start new work.
@Suite struct JobTableAdmissionTests {
    let model = ModelSpec(id: "fal-ai/flux/dev", title: "FLUX", kind: .image, defaults: ["num_images": 1])
    let hasher = KeyedHasher(secret: Array(repeating: 7, count: KeyedHasher.secretSize))
    let endpoint = EndpointID("fal-ai/flux/dev")!

    func submit(_ table: JobTable, _ prompt: String, asked: borrowing Mutex<Int>, allow: Bool) throws -> RelayRequest? {
        let input = try ModelInput(model: model, input: ["prompt": .string(prompt), "seed": 1])
        return table.submit(
            input,
            endpoint: endpoint,
            key: RequestKey(input: input, hasher: hasher),
            ownerKeyID: nil,
            mayStartWork: {
                asked.withLock { $0 += 1 }
                return allow
            }
        )
    }

    @Test func onlyNewWorkIsAskedForAndARefusalStartsNothing() throws {
        let upstream = ManualUpstream()
        let table = JobTable { _ in upstream }
        let asked = Mutex(0)
        let first = try submit(table, "a fox", asked: asked, allow: true)
        #expect(first?.cacheOutcome == .miss && asked.withLock { $0 } == 1)
        // Attached to the same work in flight: not asked, and admitted even when new work would be refused.
        let second = try submit(table, "a fox", asked: asked, allow: false)
        #expect(second?.cacheOutcome == .coalesced && asked.withLock { $0 } == 1)
        // New work refused: no request, no job, no upstream task.
        #expect(try submit(table, "a cat", asked: asked, allow: false) == nil)
        #expect(asked.withLock { $0 } == 2 && upstream.tasks.count == 1)
        // Served from the cache once the work is done: not asked.
        upstream.tasks[0].job.receive(.succeeded(result: ["done": true], inferenceSeconds: 1))
        let hit = try submit(table, "a fox", asked: asked, allow: false)
        #expect(hit?.cacheOutcome == .hit && asked.withLock { $0 } == 2)
    }
}
