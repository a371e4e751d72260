import RelayCore
import RelayJobs
import Testing

@testable import RelayUpstreams

@Suite("Webhook target validation")
struct WebhookTargetTests {
    /// URLs that must be refused by default, with the 422 `type` expected.
    static let refused: [(String, String)] = [
        ("ftp://example.com/hook", "value_error.url.scheme"),
        ("file:///etc/passwd", "value_error.url.scheme"),
        ("javascript:alert(1)", "value_error.url"),
        ("example.com/hook", "value_error.url"),
        ("", "value_error.url"),
        ("https://user:pass@example.com/hook", "value_error.url.userinfo"),
        ("https://user@example.com/hook", "value_error.url.userinfo"),
        ("http://example.com\\@127.0.0.1/", "value_error.url"),
        ("http://exa mple.com/", "value_error.url"),
        ("http://exämple.com/", "value_error.url"),
        ("http:///nohost", "value_error.url"),
        ("http://example.com:0/", "value_error.url"),
        ("http://example.com:65536/", "value_error.url"),
        ("http://example.com:80x/", "value_error.url"),
        ("http://[::1/", "value_error.url"),
        ("http://[fe80::1%25eth0]/", "value_error.url"),
        ("http://ex_ample..com/", "value_error.url"),
        // Loopback, private, link-local, CGNAT, unique-local, multicast, unspecified, and their IPv6 forms.
        ("http://127.0.0.1:8080/hook", "value_error.url.host"),
        ("http://127.255.0.9/", "value_error.url.host"),
        ("http://localhost/", "value_error.url.host"),
        ("http://LOCALHOST./", "value_error.url.host"),
        ("http://api.localhost/", "value_error.url.host"),
        ("http://10.1.2.3/", "value_error.url.host"),
        ("http://172.16.0.1/", "value_error.url.host"),
        ("http://172.31.255.255/", "value_error.url.host"),
        ("http://192.168.1.1/", "value_error.url.host"),
        ("http://100.64.0.1/", "value_error.url.host"),
        ("http://100.127.255.254/", "value_error.url.host"),
        ("http://169.254.169.254/latest/meta-data/", "value_error.url.host"),
        ("http://0.0.0.0/", "value_error.url.host"),
        ("http://224.0.0.1/", "value_error.url.host"),
        ("http://255.255.255.255/", "value_error.url.host"),
        ("http://[::1]/", "value_error.url.host"),
        ("http://[::]/", "value_error.url.host"),
        ("http://[fc00::1]/", "value_error.url.host"),
        ("http://[fd12:3456::1]/", "value_error.url.host"),
        ("http://[fe80::1]/", "value_error.url.host"),
        ("http://[ff02::1]/", "value_error.url.host"),
        ("http://[::ffff:127.0.0.1]/", "value_error.url.host"),
        ("http://[::ffff:7f00:1]/", "value_error.url.host"),
        ("http://[::ffff:169.254.169.254]/", "value_error.url.host"),
        ("http://[::ffff:10.0.0.1]/", "value_error.url.host"),
        ("http://[64:ff9b::a9fe:a9fe]/", "value_error.url.host"),
        ("http://[2002:7f00:1::]/", "value_error.url.host"),
        // Numeric hosts a resolver reads as IPv4 in other spellings (all 127.0.0.1): refused as ambiguous.
        ("http://2130706433/", "value_error.url"),
        ("http://127.1/", "value_error.url"),
        ("http://0x7f.0.0.1/", "value_error.url"),
        ("http://0177.0.0.1/", "value_error.url"),
        ("http://127.000.000.001/", "value_error.url"),
    ]

    @Test("refuses bad and private URLs", arguments: refused)
    func refuses(url: String, type: String) {
        switch WebhookTarget.parse(url, allowPrivate: false) {
        case .success(let target):
            Issue.record("accepted \(url) as \(target)")
        case .failure(let rejection):
            #expect(rejection.type == type, "\(url): \(rejection.message)")
        }
    }

    /// Public targets, and what is actually called.
    static let accepted: [(String, String)] = [
        ("https://example.com/hook", "https://example.com/hook"),
        ("HTTPS://Example.COM:443/hook?x=1&y=%20z#frag", "https://example.com/hook?x=1&y=%20z"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com:8080?q=1", "http://example.com:8080/?q=1"),
        ("http://hooks.example.com./in", "http://hooks.example.com/in"),
        ("http://8.8.8.8/", "http://8.8.8.8/"),
        ("http://172.32.0.1/", "http://172.32.0.1/"),
        ("http://100.128.0.1/", "http://100.128.0.1/"),
        ("http://[2606:4700::1111]:8443/x", "http://[2606:4700::1111]:8443/x"),
        ("http://[::ffff:8.8.8.8]/", "http://[::ffff:8.8.8.8]/"),
    ]

    @Test("accepts public URLs and rebuilds them", arguments: accepted)
    func accepts(url: String, expected: String) throws {
        let target = try WebhookTarget.parse(url, allowPrivate: false).get()
        #expect(target.url == expected)
    }

    @Test("allow_private lets loopback and private targets through, never bad URLs")
    func allowPrivate() throws {
        for url in [
            "http://127.0.0.1:9000/hook", "http://localhost:9000/", "http://[::1]:9000/", "http://10.0.0.5/",
            "http://169.254.169.254/",
        ] {
            #expect(throws: Never.self) { try WebhookTarget.parse(url, allowPrivate: true).get() }
        }
        for url in ["ftp://127.0.0.1/", "http://user@127.0.0.1/", "http://2130706433/"] {
            #expect(throws: WebhookTarget.Rejection.self) { try WebhookTarget.parse(url, allowPrivate: true).get() }
        }
    }

    @Test("plain HTTP is pinned to the checked address with the Host kept")
    func pinning() throws {
        let target = try WebhookTarget.parse("http://hooks.example.com:8080/in?a=b", allowPrivate: false).get()
        let v4 = try #require(IPAddress(dottedQuad: "93.184.216.34"))
        let v6 = try #require(IPAddress(ipv6: "2606:2800::1"))
        #expect(target.url(pinnedTo: v4) == "http://93.184.216.34:8080/in?a=b")
        #expect(target.url(pinnedTo: v6) == "http://[2606:2800::1]:8080/in?a=b")
        #expect(target.authority == "hooks.example.com:8080")
    }

    @Test("resolved addresses are classified, IPv4-mapped forms by the IPv4 inside")
    func classification() throws {
        let cases: [(IPAddress?, IPAddress.Kind)] = [
            (IPAddress(dottedQuad: "127.0.0.1"), .loopback),
            (IPAddress(dottedQuad: "192.168.0.10"), .privateNetwork),
            (IPAddress(dottedQuad: "100.64.0.0"), .sharedAddressSpace),
            (IPAddress(dottedQuad: "169.254.169.254"), .linkLocal),
            (IPAddress(dottedQuad: "239.1.1.1"), .multicast),
            (IPAddress(dottedQuad: "1.1.1.1"), .global),
            (IPAddress(ipv6: "::ffff:192.168.0.1"), .privateNetwork),
            (IPAddress(ipv6: "::ffff:1.1.1.1"), .global),
            (IPAddress(ipv6: "fdff::1"), .uniqueLocal),
            (IPAddress(ipv6: "2001:4860:4860::8888"), .global),
        ]
        for (address, kind) in cases {
            let address = try #require(address)
            #expect(address.kind == kind, "\(address)")
            #expect((WebhookTarget.forbiddenReason(address) == nil) == (kind == .global))
        }
    }

    @Test("a rejection becomes a fal 422 on the query parameter")
    func validationShape() {
        let error = WebhookDispatcher.validationError(WebhookTarget.Rejection(message: "nope", type: "value_error.url"))
        #expect(error.status == 422)
        #expect(
            error.body == ["detail": [["loc": ["query", "fal_webhook"], "msg": "nope", "type": "value_error.url"]]]
        )
    }
}

@Suite("Webhook signature and payload")
struct WebhookSignatureTests {
    @Test("key, JWKS and signature match vectors computed independently (Python cryptography)")
    func fixedVector() throws {
        let signer = WebhookSigner(deploymentSecret: Array(0..<32))
        let key = try #require(signer.jwks["keys"]?.arrayValue?.first)
        #expect(key["kty"] == "OKP" && key["crv"] == "Ed25519" && key["alg"] == "EdDSA" && key["use"] == "sig")
        #expect(key["x"] == "aayVB09aWZxJdyu-JfvkyknpvXZy2OkNpbnWEGNWiPw")
        #expect(key["kid"] == "be5117658c608814" && signer.keyID == "be5117658c608814")
        let body = Array(#"{"request_id":"r1","status":"OK"}"#.utf8)
        #expect(
            signer.signature(requestID: "r1", userID: "key-1", timestamp: 1_700_000_000, body: body)
                == "bf4358ed876df1de42c6ce04b0ad06aa50152750f4f82d0ebfc761a551ce8000"
                + "d6e52c33c8d10bf0fe7ac108e4d6663e7cbdb6ca6e58c69e305e73afbde9c00d"
        )
    }

    @Test("request id, user id, timestamp, body and secret each change the signature")
    func coverage() {
        let signer = WebhookSigner(deploymentSecret: Array(0..<32))
        let base = signer.signature(requestID: "a", userID: "u", timestamp: 1, body: [1])
        #expect(signer.signature(requestID: "b", userID: "u", timestamp: 1, body: [1]) != base)
        #expect(signer.signature(requestID: "a", userID: "v", timestamp: 1, body: [1]) != base)
        #expect(signer.signature(requestID: "a", userID: "u", timestamp: 2, body: [1]) != base)
        #expect(signer.signature(requestID: "a", userID: "u", timestamp: 1, body: [2]) != base)
        let other = WebhookSigner(deploymentSecret: Array(1..<33))
        #expect(other.signature(requestID: "a", userID: "u", timestamp: 1, body: [1]) != base)
        #expect(other.publicKey != signer.publicKey)
    }

    @Test("the default retry budget is fal's: 10 attempts within about two hours")
    func falsBudget() {
        let schedule = WebhookRetrySchedule()
        #expect(schedule.maxAttempts == 10)
        #expect(schedule.maxTotalDelay == .seconds(7375))
    }

    @Test("payloads follow fal's shape for OK, ERROR and cancelled")
    func payloads() {
        let ok = WebhookPayload.body(requestID: "r1", outcome: .success(result: ["seed": 7], inferenceSeconds: 1))
        #expect(
            ok == [
                "request_id": "r1", "gateway_request_id": "r1", "status": "OK", "payload": ["seed": 7], "error": .null,
            ]
        )
        let failure = FalError.validation(.missing("prompt"))
        let error = WebhookPayload.body(requestID: "r2", outcome: .failure(failure))
        #expect(error["status"] == "ERROR")
        #expect(error["payload"] == failure.body)
        #expect(error["error"] == .string(failure.message))
        let cancelled = WebhookPayload.body(requestID: "r3", outcome: .cancelled)
        #expect(cancelled["status"] == "ERROR")
        #expect(cancelled["payload"]?["error_type"] == "request_cancelled")
    }
}

@Suite("Webhook retry schedule")
struct WebhookRetryScheduleTests {
    let schedule = WebhookRetrySchedule(
        baseDelay: .seconds(5),
        maxDelay: .seconds(120),
        maxAttempts: 6,
        maxRetryAfter: .seconds(60)
    )

    @Test("2xx is delivered; other 4xx and 3xx end it at once")
    func finalAnswers() {
        #expect(schedule.decision(after: .status(200), attempt: 1, jitter: 0.5) == .delivered)
        #expect(schedule.decision(after: .status(204), attempt: 6, jitter: 0.5) == .delivered)
        for status in [301, 400, 401, 403, 404, 410, 422] {
            #expect(schedule.decision(after: .status(status), attempt: 1, jitter: 0.5) == .giveUp, "\(status)")
        }
    }

    @Test("transport errors, 408, 429 and 5xx are retried until the attempt bound")
    func retries() {
        for outcome: WebhookRetrySchedule.Outcome in [
            .transport, .status(408), .status(429), .status(500), .status(503), .status(599),
        ] {
            for attempt in 1..<6 {
                guard case .retry = schedule.decision(after: outcome, attempt: attempt, jitter: 0.5) else {
                    Issue.record("\(outcome) attempt \(attempt) not retried")
                    continue
                }
            }
            #expect(schedule.decision(after: outcome, attempt: 6, jitter: 0.5) == .giveUp)
        }
    }

    @Test("full jitter: each delay lies in 0...min(max, base·2^(n−1))")
    func jitterRange() {
        let ceilings: [Duration] = [
            .seconds(5), .seconds(10), .seconds(20), .seconds(40), .seconds(80), .seconds(120), .seconds(120),
        ]
        for (index, ceiling) in ceilings.enumerated() {
            let attempt = index + 1
            #expect(schedule.backoff(attempt: attempt, jitter: 0) == .zero)
            #expect(schedule.backoff(attempt: attempt, jitter: 1) == ceiling)
            #expect(schedule.backoff(attempt: attempt, jitter: 0.5) == ceiling / 2)
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<200 {
                guard
                    case .retry(let delay) = schedule.decision(
                        after: .transport,
                        attempt: 1,
                        jitter: Double.random(in: 0...1, using: &generator)
                    )
                else {
                    Issue.record("not retried")
                    return
                }
                #expect(delay >= .zero && delay <= .seconds(5))
            }
        }
        #expect(schedule.backoff(attempt: 1, jitter: .nan) == .zero)
        #expect(schedule.backoff(attempt: 1, jitter: 7) == .seconds(5))
        #expect(schedule.maxTotalDelay == .seconds(155))
    }

    @Test("Retry-After is honoured on 429 and 503, capped")
    func retryAfter() {
        #expect(
            schedule.decision(after: .status(429, retryAfter: .seconds(7)), attempt: 1, jitter: 0)
                == .retry(after: .seconds(7))
        )
        #expect(
            schedule.decision(after: .status(503, retryAfter: .seconds(3)), attempt: 2, jitter: 0)
                == .retry(after: .seconds(3))
        )
        #expect(
            schedule.decision(after: .status(429, retryAfter: .seconds(3600)), attempt: 1, jitter: 0)
                == .retry(after: .seconds(60))
        )
        #expect(schedule.decision(after: .status(429, retryAfter: .seconds(7)), attempt: 6, jitter: 0) == .giveUp)
    }

    @Test("the bounds are sane whatever is configured")
    func bounds() {
        let degenerate = WebhookRetrySchedule(baseDelay: .seconds(-1), maxDelay: .seconds(-1), maxAttempts: 0)
        #expect(degenerate.maxAttempts == 1)
        #expect(degenerate.decision(after: .transport, attempt: 1, jitter: 1) == .giveUp)
        #expect(degenerate.backoff(attempt: 3, jitter: 1) == .zero)
    }
}
