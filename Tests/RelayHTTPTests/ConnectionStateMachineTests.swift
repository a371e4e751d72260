import NIOCore
import Testing

@testable import RelayHTTP

@Suite struct ConnectionStateMachineTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    let limits = ConnectionStateMachine.Limits(
        headerTimeout: .seconds(10),
        idleTimeout: .seconds(75),
        bodyTimeout: .seconds(30),
        maxHeaderBytes: 1000
    )

    @Test func aNewConnectionMustSendItsHeadWithinTheHeaderTimeoutFromConnect() {
        var clock = ConnectionStateMachine(limits: limits, now: start)
        #expect(clock.deadline?.0 == start + .seconds(10))
        #expect(clock.deadline?.1 == .header)
        // Dribbling bytes does not extend the first request's deadline (slowloris).
        do {
            let ok = clock.bytesArrived(10, now: start + .seconds(5))
            #expect(ok)
        }
        do {
            let ok = clock.bytesArrived(10, now: start + .seconds(9))
            #expect(ok)
        }
        #expect(clock.expired(at: start + .seconds(9)) == nil)
        #expect(clock.expired(at: start + .seconds(10)) == .header)
    }

    @Test func aCompleteRequestHasNoDeadlineWhileTheResponseRuns() {
        var clock = ConnectionStateMachine(limits: limits, now: start)
        _ = clock.bytesArrived(100, now: start)
        do {
            let ok = clock.headReceived(headBytes: 100, now: start + .seconds(1))
            #expect(ok)
        }
        clock.requestEnded()
        #expect(clock.deadline == nil)
        #expect(clock.expired(at: start + .seconds(3600)) == nil)
    }

    @Test func keepAliveIdleThenANewHeadDeadlineFromItsFirstByte() {
        var clock = ConnectionStateMachine(limits: limits, now: start)
        _ = clock.headReceived(headBytes: 100, now: start)
        clock.requestEnded()
        clock.responseEnded(now: start + .seconds(2))
        #expect(clock.deadline?.1 == .idle)
        #expect(clock.deadline?.0 == start + .seconds(77))
        #expect(clock.expired(at: start + .seconds(76)) == nil)
        _ = clock.bytesArrived(5, now: start + .seconds(70))
        #expect(clock.deadline?.1 == .header)
        #expect(clock.deadline?.0 == start + .seconds(80))
        #expect(clock.expired(at: start + .seconds(80)) == .header)
    }

    @Test func aStalledBodyExpiresButAFlowingOneDoesNot() {
        var clock = ConnectionStateMachine(limits: limits, now: start)
        _ = clock.headReceived(headBytes: 100, now: start)
        #expect(clock.deadline?.1 == .body)
        for second in stride(from: 20, through: 200, by: 20) {
            _ = clock.bytesArrived(1000, now: start + .seconds(Int64(second)))
        }
        #expect(clock.expired(at: start + .seconds(229)) == nil)
        #expect(clock.expired(at: start + .seconds(230)) == .body)
    }

    @Test func headSizeIsCheckedExactlyAtTheHeadAndRoughlyWhileStreaming() {
        var clock = ConnectionStateMachine(limits: limits, now: start)
        do {
            let ok = clock.headReceived(headBytes: 1001, now: start)
            #expect(!ok)
        }
        var streaming = ConnectionStateMachine(limits: limits, now: start)
        do {
            let ok = streaming.bytesArrived(1000 + ConnectionStateMachine.bodySlack, now: start)
            #expect(ok)
        }
        do {
            let ok = streaming.bytesArrived(1, now: start)
            #expect(!ok)
        }
    }

    @Test func pipelinedBytesStartTheNextHeadWhenTheResponseEnds() {
        var clock = ConnectionStateMachine(limits: limits, now: start)
        _ = clock.headReceived(headBytes: 100, now: start)
        clock.requestEnded()
        do {
            let ok = clock.bytesArrived(50, now: start + .seconds(1))
            #expect(ok)
        }
        clock.responseEnded(now: start + .seconds(3))
        #expect(clock.phase == .readingHead(since: start + .seconds(3), bytes: 50))
        #expect(clock.deadline?.1 == .header)
    }

    @Test func connectionLimiterCapsTotalAndPerAddress() {
        let limiter = ConnectionLimiter(maxTotal: 3, maxPerAddress: 2)
        #expect(limiter.admit("10.0.0.1") == nil)
        #expect(limiter.admit("10.0.0.1") == nil)
        #expect(limiter.admit("10.0.0.1")?.status == 503)
        #expect(limiter.admit("10.0.0.2") == nil)
        #expect(limiter.admit("10.0.0.3")?.status == 503)
        limiter.release("10.0.0.1")
        #expect(limiter.admit("10.0.0.1") == nil)
        #expect(limiter.open == 3)
    }

    @Test func aVerdictIsGivenOnceAndForwardedResponsesAreCounted() {
        var clock = ConnectionStateMachine(limits: limits, now: start)
        #expect(clock.owesNoResponse)
        clock.requestForwarded()
        #expect(!clock.owesNoResponse && clock.requestsForwarded == 1)
        clock.responseStarted()
        #expect(clock.isResponding)
        clock.responseEnded(now: start, forwarded: true)
        #expect(clock.owesNoResponse && !clock.isResponding)
        // A response the fast lane wrote owes nothing to NIO's count.
        clock.responseEnded(now: start)
        #expect(clock.owesNoResponse)
        let first = clock.close()
        let second = clock.close()
        #expect(first && !second && clock.isClosing)
    }
}

@Suite struct HeadTerminatorScannerTests {
    @Test func findsTheBlankLineWithinAndAcrossReads() {
        var scanner = HeadTerminatorScanner()
        #expect(scanner.scan(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY")) == 27)
        var split = HeadTerminatorScanner()
        #expect(split.scan(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r")) == nil)
        #expect(split.scan(ByteBuffer(string: "\n\r\nbody")) == 3)
        var lone = HeadTerminatorScanner()
        #expect(lone.scan(ByteBuffer(string: "a\r\n\n\r\r\n")) == nil)
        #expect(lone.scan(ByteBuffer(string: "\r\n")) == 2)
    }
}
