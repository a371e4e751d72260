import NIOCore
import NIOHTTP1
import Testing

@testable import RelayHTTP

/// The fast lane's framing: what it may answer itself, where each message ends, and what it must leave to NIO.
@Suite struct RequestHeadScannerTests {
    let scanner = RequestHeadScanner(maxHeadBytes: 1024)

    func scan(_ text: String) -> RequestHeadScanner.Verdict {
        scanner.scan(ByteBuffer(string: text))
    }

    @Test func aPlainGetIsFastWithItsFields() throws {
        let text =
            "GET /fal-ai/flux/requests/abc?logs=1 HTTP/1.1\r\nHost: relay:8080\r\nAuthorization:  Key k1:s  \r\n"
            + "If-None-Match: \"x\"\r\nRange: bytes=0-9\r\nIf-Range: \"y\"\r\nAccept: */*\r\n\r\nGET /next"
        guard case .fast(let head, let length) = scan(text) else {
            Issue.record("not fast: \(scan(text))")
            return
        }
        #expect(length == text.utf8.count - "GET /next".utf8.count)
        #expect(head.method == .GET)
        #expect(head.uri == "/fal-ai/flux/requests/abc?logs=1")
        #expect(head.host == "relay:8080")
        #expect(head.authorization == "Key k1:s")
        #expect(head.ifNoneMatch == "\"x\"")
        #expect(head.range == "bytes=0-9")
        #expect(head.ifRange == "\"y\"")
    }

    @Test func headAndKeepAliveAndAnEmptyBodyAreFast() {
        guard
            case .fast(let head, _) = scan(
                "HEAD /healthz HTTP/1.1\r\nHost: a\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n"
            )
        else {
            Issue.record("not fast")
            return
        }
        #expect(head.method == .HEAD)
        #expect(head.host == "a")
    }

    @Test func incompleteHeadsWait() {
        for text in [
            "", "GE", "GET ", "GET /x", "GET /x HTTP/1.", "GET /x HTTP/1.1\r\n", "GET /x HTTP/1.1\r\nHost: a",
            "GET /x HTTP/1.1\r\nHost: a\r\n", "GET /x HTTP/1.1\r\nHost: a\r\n\r",
        ] {
            guard case .incomplete = scan(text) else {
                Issue.record("\(text.debugDescription) → \(scan(text))")
                continue
            }
        }
    }

    @Test func otherMethodsAndBodiesAreFramedForNIO() {
        guard
            case .slow(let length, let body) = scan(
                "POST /fal-ai/flux/dev HTTP/1.1\r\nContent-Length: 17\r\n\r\n{\"prompt\":\"x\"}"
            )
        else {
            Issue.record("not slow")
            return
        }
        #expect(length == "POST /fal-ai/flux/dev HTTP/1.1\r\nContent-Length: 17\r\n\r\n".utf8.count)
        #expect(body == 17)
        // A GET NIO should answer: connection close, expect, a body.
        for text in [
            "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /x HTTP/1.1\r\nConnection: keep-alive, x\r\n\r\n",
            "GET /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "DELETE /x HTTP/1.1\r\n\r\n",
            "get /x HTTP/1.1\r\n\r\n",
        ] {
            guard case .slow = scan(text) else {
                Issue.record("\(text.debugDescription) → \(scan(text))")
                continue
            }
        }
    }

    @Test func anUpgradeIsToldApart() {
        guard case .upgrade = scan("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        else {
            Issue.record("not an upgrade")
            return
        }
        // A chunked body is opaque even with an Upgrade field.
        guard case .opaque = scan("POST /x HTTP/1.1\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n") else {
            Issue.record("not opaque")
            return
        }
    }

    @Test func whatItCannotFrameIsOpaque() {
        for text in [
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /x HTTP/1.0\r\n\r\n",
            "GET /x HTTP/2.0\r\n\r\n",
            "GET  /x HTTP/1.1\r\n\r\n",
            "GET /x\tHTTP/1.1\r\n\r\n",
            "GET /x HTTP/1.1\nHost: a\n\n",
            "GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET /x HTTP/1.1\r\n folded\r\n\r\n",
            "GET /x HTTP/1.1\r\nX: a\u{01}b\r\n\r\n",
            "GET /x HTTP/1.1\r\nX: a\rb\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /x HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\n\rX",
            "\r\nGET /x HTTP/1.1\r\n\r\n",
        ] {
            guard case .opaque = scan(text) else {
                Issue.record("\(text.debugDescription) → \(scan(text))")
                continue
            }
        }
        // Repeated identical lengths are one length (RFC 9112 §6.3).
        guard case .slow(_, 2) = scan("POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab") else {
            Issue.record("identical lengths")
            return
        }
    }

    @Test func aHeadWithoutHostIsLeftToNIO() {
        // HTTP/1.1 requires Host (RFC 9112 §3.2): NIO's pipeline answers the 400.
        guard case .slow = scan("GET /healthz HTTP/1.1\r\n\r\n") else {
            Issue.record("fast")
            return
        }
    }

    @Test func aLongTargetIsLeftToNIO() {
        let scanner = RequestHeadScanner(maxHeadBytes: 1024, maxTargetBytes: 10)
        guard case .slow = scanner.scan(ByteBuffer(string: "GET /healthz?x=1 HTTP/1.1\r\n\r\n")) else {
            Issue.record("fast")
            return
        }
        guard case .fast = scanner.scan(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")) else {
            Issue.record("slow")
            return
        }
    }

    @Test func aHeadBeyondTheLimitIsOpaqueWhetherOrNotItEnded() {
        let long = "GET /x HTTP/1.1\r\nX-Padding: " + String(repeating: "a", count: 1100)
        guard case .opaque = scan(long) else {
            Issue.record("unterminated")
            return
        }
        guard case .opaque = scan(long + "\r\n\r\n") else {
            Issue.record("terminated")
            return
        }
        let longTarget = "GET /" + String(repeating: "a", count: 1100)
        guard case .opaque = scan(longTarget) else {
            Issue.record("target")
            return
        }
    }
}
