import RelayCore
import Synchronization
import Testing

@testable import RelayJobs

/// fal's `X-Fal-Queue-Priority` in the synthetic queue: normal before low, places counting both, a raise moving a low
/// waiter to the end of the normal line. Time is injected: no test here sleeps.
@Suite struct SlotQueuePriorityTests {
    typealias Priority = PlatformHeaders.Priority

    /// A queue whose one slot is taken, and waiters joining it in this order; `order` hears who was granted, in turn.
    struct Line {
        let queue: SlotQueue
        let time = SlotQueueTests.ManualTime()
        let granted = Recorder<[String]>([])
        let places = Recorder<[String: [Int]]>([:])
        var tickets: [String: Int] = [:]
        var waiters: [String: Task<Void, any Error>] = [:]

        init() async throws {
            queue = SlotQueue(slots: 1, scheduler: time.scheduler)
            try await queue.acquire { _ in }
        }

        mutating func join(_ name: String, _ priority: Priority) async {
            let (queue, granted, places) = (self.queue, self.granted, self.places)
            let ticket = queue.ticket()
            tickets[name] = ticket
            let before = queue.waitingCount
            waiters[name] = Task {
                try await queue.acquire(ticket: ticket, priority: priority) { place in
                    places.update { $0[name, default: []].append(place) }
                }
                granted.update { $0.append(name) }
            }
            while queue.waitingCount == before { await Task.yield() }
        }

        /// Releases the held slot once; waits until the next waiter holds it, and expects it to be `name`.
        func release(expecting name: String) async throws {
            let before = granted.value.count
            queue.release()
            while granted.value.count == before { await Task.yield() }
            #expect(granted.value.last == name)
        }
    }

    @Test func normalWaitersGoFirstAndLowPlacesCountThem() async throws {
        var line = try await Line()
        await line.join("n1", .normal)
        await line.join("l1", .low)
        await line.join("n2", .normal)
        await line.join("l2", .low)
        // Each is told its place when it joins: a low one counts everyone ahead, a normal one only normal ones.
        #expect(line.places.value == ["n1": [0], "l1": [1], "n2": [1], "l2": [3]])
        // n2 went ahead of l1: the next pass tells l1 it is third now.
        line.time.advance()
        #expect(line.places.value["l1"] == [1, 2])
        for name in ["n1", "n2", "l1", "l2"] {
            try await line.release(expecting: name)
        }
        #expect(line.granted.value == ["n1", "n2", "l1", "l2"])
        line.queue.release()
        #expect(line.queue.waitingCount == 0 && line.queue.trackedWaiters == 0)
    }

    @Test func aRaisedLowWaiterJoinsTheEndOfTheNormalLine() async throws {
        var line = try await Line()
        await line.join("l1", .low)
        await line.join("n1", .normal)
        await line.join("l2", .low)
        line.queue.raise(try #require(line.tickets["l2"]))
        // Raising twice, or raising a normal waiter, changes nothing.
        line.queue.raise(try #require(line.tickets["l2"]))
        line.queue.raise(try #require(line.tickets["n1"]))
        line.time.advance()
        #expect(line.places.value["l2"] == [2, 1])
        #expect(line.places.value["l1"] == [0, 2])
        for name in ["n1", "l2", "l1"] {
            try await line.release(expecting: name)
        }
        #expect(line.granted.value == ["n1", "l2", "l1"])
        line.queue.release()
        #expect(line.queue.waitingCount == 0 && line.queue.trackedWaiters == 0)
    }

    @Test func aRaiseBeforeJoiningAndACancelAfterARaiseLeaveNothingBehind() async throws {
        var line = try await Line()
        await line.join("n1", .normal)
        // Raised while still arriving: it joins the normal line.
        let early = line.queue.ticket()
        line.queue.raise(early)
        let earlyTask = Task { [queue = line.queue] in
            try await queue.acquire(ticket: early, priority: .low) { _ in }
        }
        while line.queue.waitingCount < 2 { await Task.yield() }
        await line.join("l1", .low)
        line.queue.raise(try #require(line.tickets["l1"]))
        line.waiters["l1"]?.cancel()
        await #expect(throws: CancellationError.self) { try await line.waiters["l1"]?.value }
        try await line.release(expecting: "n1")
        line.queue.release()
        try await earlyTask.value
        line.queue.release()
        #expect(line.queue.waitingCount == 0 && line.queue.trackedWaiters == 0)
    }

    @Test func aLowWaiterIsToldWhenNormalOnesPushItBackByAThird() async throws {
        var line = try await Line()
        for index in 0..<12 { await line.join("n\(index)", .normal) }
        await line.join("low", .low)
        #expect(line.places.value["low"] == [12])
        for index in 12..<15 { await line.join("n\(index)", .normal) }
        line.time.advance()
        // 15 is less than a third further back: not told yet.
        #expect(line.places.value["low"] == [12])
        for index in 15..<20 { await line.join("n\(index)", .normal) }
        line.time.advance()
        #expect(line.places.value["low"] == [12, 20])
        for waiter in line.waiters.values { waiter.cancel() }
        line.time.advance()
        line.queue.release()
        #expect(line.queue.waitingCount == 0)
    }

    /// What a status poll reads: the exact place, derived when asked, between the passes that tell it.
    @Test func aWaitersExactPlaceIsDerivedWhenAskedThroughCancelsRaisesAndReleases() async throws {
        var line = try await Line()
        for name in ["n0", "n1", "n2", "n3"] { await line.join(name, .normal) }
        await line.join("l0", .low)
        await line.join("l1", .low)
        func place(_ name: String) throws -> Int? { line.queue.place(of: try #require(line.tickets[name])) }
        #expect(try ["n0", "n1", "n2", "n3", "l0", "l1"].map(place) == [0, 1, 2, 3, 4, 5])
        // A cancel anywhere: everyone behind moves up at once, with no pass run.
        line.waiters["n1"]?.cancel()
        await #expect(throws: CancellationError.self) { try await line.waiters["n1"]?.value }
        #expect(try ["n0", "n2", "n3", "l0", "l1"].map(place) == [0, 1, 2, 3, 4])
        #expect(try place("n1") == nil)
        // A raise: l1 goes to the end of the normal line, ahead of l0.
        line.queue.raise(try #require(line.tickets["l1"]))
        #expect(try ["n0", "n2", "n3", "l1", "l0"].map(place) == [0, 1, 2, 3, 4])
        // Releases, skipping the cancelled spot at the front.
        try await line.release(expecting: "n0")
        #expect(try ["n2", "n3", "l1", "l0"].map(place) == [0, 1, 2, 3])
        try await line.release(expecting: "n2")
        try await line.release(expecting: "n3")
        #expect(try ["l1", "l0"].map(place) == [0, 1])
        try await line.release(expecting: "l1")
        #expect(try place("l0") == 0)
        try await line.release(expecting: "l0")
        #expect(try place("l0") == nil)
        line.queue.release()
        #expect(line.queue.waitingCount == 0 && line.queue.trackedWaiters == 0)
    }

    /// Thousands of cancels in a long line keep every place exact, and leave nothing behind once the line empties.
    @Test func placesStayExactThroughManyCancels() async throws {
        var line = try await Line()
        for index in 0..<300 { await line.join("w\(index)", .normal) }
        // Every third leaves.
        for index in stride(from: 0, to: 300, by: 3) { line.waiters["w\(index)"]?.cancel() }
        for index in stride(from: 0, to: 300, by: 3) { _ = try? await line.waiters["w\(index)"]?.value }
        let staying = (0..<300).filter { $0 % 3 != 0 }
        for (expected, index) in staying.enumerated() {
            #expect(line.queue.place(of: try #require(line.tickets["w\(index)"])) == expected)
        }
        for index in staying { try await line.release(expecting: "w\(index)") }
        line.queue.release()
        #expect(line.queue.waitingCount == 0 && line.queue.trackedWaiters == 0)
    }
}
