import NIOCore
import NIOHTTP2
import Testing

@testable import RelayHTTP

/// The stream table's rules (RFC 9113 §5.1, §5.1.2, §6.9), with no connection around it.
@Suite struct HTTP2StreamTableTests {
    /// Runs `body` and checks it failed with exactly `expected`.
    func expectFault(
        _ expected: HTTP2Fault,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws -> Void
    ) throws {
        do {
            try body()
            Issue.record("no fault; expected \(expected)", sourceLocation: sourceLocation)
        } catch {
            #expect(error as? HTTP2Fault == expected, sourceLocation: sourceLocation)
        }
    }

    @Test func streamsOpenInRisingOddOrderUpToTheCap() throws {
        var table = HTTP2StreamTable(maxConcurrentStreams: 2)
        let result1 = try table.admit(1)
        #expect(result1 == .open)
        table.open(1, endStream: false, hasChannel: true, expectedBytes: nil)
        try expectFault(HTTP2Fault.connection(.protocolError, "client stream 4 is even")) { _ = try table.admit(4) }
        try expectFault(HTTP2Fault.connection(.protocolError, "HEADERS on closed stream 1")) { _ = try table.admit(1) }
        let result2 = try table.admit(3)
        #expect(result2 == .open)
        table.open(3, endStream: false, hasChannel: true, expectedBytes: nil)
        let result3 = try table.admit(5)
        #expect(result3 == .refuse)
        // A stream this side reset: a header block already on its way is dropped, not a fault.
        table.remove(3, resetHere: true)
        let result4 = try table.admit(3)
        #expect(result4 == .ignore)
    }

    @Test func dataSpendsBothWindowsAndEndsTheStream() throws {
        var table = HTTP2StreamTable(maxConcurrentStreams: 10)
        _ = try table.admit(1)
        table.open(1, endStream: false, hasChannel: true, expectedBytes: 10)
        let result5 = try table.receiveData(1, flowLength: 6, dataLength: 4, endStream: false)
        #expect(result5 == .deliver(closed: false))
        #expect(table.connectionReceiveWindow == 65_535 - 6)
        #expect(table[1]?.receiveWindow == 65_535 - 6)
        // content-length says 10: 4 + 5 ending the stream is malformed.
        try expectFault(HTTP2Fault.stream(1, .protocolError)) {
            _ = try table.receiveData(1, flowLength: 5, dataLength: 5, endStream: true)
        }
        let result6 = try table.receiveData(1, flowLength: 6, dataLength: 6, endStream: true)
        #expect(result6 == .deliver(closed: false))
        #expect(table[1]?.remoteOpen == false)
        try expectFault(HTTP2Fault.stream(1, .streamClosed)) {
            _ = try table.receiveData(1, flowLength: 1, dataLength: 1, endStream: false)
        }
        let result7 = table.endLocal(1)
        #expect(result7)
        #expect(table[1] == nil)
        try expectFault(HTTP2Fault.connection(.protocolError, "DATA on idle stream 3")) {
            _ = try table.receiveData(3, flowLength: 1, dataLength: 1, endStream: false)
        }
    }

    @Test func aPeerThatOverrunsAWindowIsAFlowControlError() throws {
        var table = HTTP2StreamTable(maxConcurrentStreams: 10)
        _ = try table.admit(1)
        table.open(1, endStream: false, hasChannel: true, expectedBytes: nil)
        _ = try table.receiveData(1, flowLength: 65_535, dataLength: 65_535, endStream: false)
        table.grantConnection(100)
        try expectFault(HTTP2Fault.stream(1, .flowControlError)) {
            _ = try table.receiveData(1, flowLength: 1, dataLength: 1, endStream: false)
        }
        try expectFault(HTTP2Fault.connection(.flowControlError, "connection window exceeded")) {
            _ = try table.receiveData(1, flowLength: 100, dataLength: 100, endStream: false)
        }
    }

    @Test func sendingTakesTheSmallestWindowAndTheFrameSize() throws {
        var table = HTTP2StreamTable(maxConcurrentStreams: 10)
        _ = try table.admit(1)
        table.open(1, endStream: true, hasChannel: false, expectedBytes: nil)
        let result8 = table.take(1, wanted: 100_000, maxFrame: 16_384)
        #expect(result8 == 16_384)
        try table.peerInitialWindowChanged(20_000)  // the stream's window: 20,000 - 16,384 left
        let result9 = table.take(1, wanted: 100_000, maxFrame: 16_384)
        #expect(result9 == 3_616)
        let result10 = table.take(1, wanted: 1, maxFrame: 16_384)
        #expect(result10 == 0)
        let result11 = try table.windowUpdate(1, increment: 50_000)
        #expect(result11)
        let connectionBound = table.take(1, wanted: 100_000, maxFrame: 100_000)
        #expect(connectionBound == 65_535 - 20_000)  // now the connection's limit
        let result12 = table.take(1, wanted: 1, maxFrame: 16_384)
        #expect(result12 == 0)
        let result13 = try table.windowUpdate(0, increment: 10)
        #expect(result13)
        let result14 = table.take(1, wanted: 100, maxFrame: 16_384)
        #expect(result14 == 10)
        // A lowered initial window can make a stream's window negative (§6.9.2).
        try table.peerInitialWindowChanged(0)
        #expect(table[1]!.sendWindow < 0)
    }

    @Test func windowUpdatesThatOverflowOrAddNothingAreErrors() throws {
        var table = HTTP2StreamTable(maxConcurrentStreams: 10)
        _ = try table.admit(1)
        table.open(1, endStream: true, hasChannel: false, expectedBytes: nil)
        try expectFault(HTTP2Fault.connection(.protocolError, "WINDOW_UPDATE of 0")) {
            _ = try table.windowUpdate(0, increment: 0)
        }
        try expectFault(HTTP2Fault.stream(1, .protocolError)) { _ = try table.windowUpdate(1, increment: 0) }
        try expectFault(HTTP2Fault.stream(1, .flowControlError)) {
            _ = try table.windowUpdate(1, increment: Int(Int32.max))
        }
        try expectFault(HTTP2Fault.connection(.flowControlError, "connection window over 2^31-1")) {
            _ = try table.windowUpdate(0, increment: Int(Int32.max))
        }
        try expectFault(HTTP2Fault.connection(.protocolError, "WINDOW_UPDATE on idle stream")) {
            _ = try table.windowUpdate(7, increment: 1)
        }
        try expectFault(HTTP2Fault.connection(.flowControlError, "initial window over 2^31-1")) {
            _ = try table.peerInitialWindowChanged(Int(Int32.max) + 1)
        }
    }

    @Test func theFloodGuardCountsPerWindowOfTime() {
        var guardian = HTTP2FloodGuard(limit: 3, window: .seconds(30))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var allowed: [Bool] = []
        for _ in 0..<3 { allowed.append(guardian.allow(at: start)) }
        allowed.append(guardian.allow(at: start + .seconds(29)))
        // A new window: a browser cancelling now and then is never cut off.
        allowed.append(guardian.allow(at: start + .seconds(31)))
        #expect(allowed == [true, true, true, false, true])
    }
}
