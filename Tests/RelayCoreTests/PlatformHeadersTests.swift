import Testing

@testable import RelayCore

@Suite struct PlatformHeadersTests {
    func read(_ headers: [String: String]) throws(FalError) -> PlatformHeaders {
        let lowered = Dictionary(uniqueKeysWithValues: headers.map { ($0.key.lowercased(), $0.value) })
        return try PlatformHeaders { lowered[$0.lowercased()] }
    }

    @Test func readsEveryHeaderAndForwardsThemByName() throws {
        let platform = try read([
            "x-fal-request-timeout": " 30 ", "x-fal-queue-priority": "LOW", "x-fal-runner-hint": "lora-a",
            "x-fal-no-retry": "true", "x-fal-disable-fallbacks": "1", "x-fal-store-io": "0",
            "x-fal-tags": "team=ml,env=prod",
        ])
        #expect(platform.startTimeout == 30 && platform.priority == .low && platform.runnerHint == "lora-a")
        #expect(platform.noRetry && platform.disableFallbacks == "1" && !platform.storeIO)
        // The request's own deadline is not the shared job's: the relay keeps it, the origin never sees it.
        let forwarded = platform.forwarded(priority: .normal)
        #expect(
            forwarded.map(\.0) == [
                "X-Fal-Queue-Priority", "X-Fal-Runner-Hint", "x-fal-no-retry", "x-fal-disable-fallbacks",
                "X-Fal-Store-IO", "X-Fal-Tags",
            ]
        )
        #expect(forwarded.map(\.1) == ["normal", "lora-a", "1", "1", "0", "team=ml,env=prod"])
        #expect(try read([:]) == PlatformHeaders() && PlatformHeaders().forwarded(priority: nil).isEmpty)
        #expect(try read(["x-fal-request-start-timeout": "2.5"]).startTimeout == 2.5)
        #expect(try read(["x-fal-no-retry": "no"]).noRetry == false)
        #expect(try read(["x-fal-store-io": "1"]).storeIO)
        #expect(PlatformHeaders.Priority.low < .normal)
    }

    @Test func aTimeoutOrPriorityFalWouldRefuseIsA422NamingTheHeader() {
        for (name, value) in [
            ("x-fal-request-timeout", "0.1"), ("x-fal-request-timeout", "soon"), ("x-fal-request-timeout", "-4"),
            ("x-fal-request-timeout", "inf"), ("x-fal-request-start-timeout", "0"), ("x-fal-queue-priority", "high"),
        ] {
            #expect(throws: FalError.self, "\(name): \(value)") { try read([name: value]) }
            do {
                _ = try read([name: value])
            } catch {
                #expect(error.status == 422)
                #expect(error.body["detail"]?.arrayValue?.first?["loc"]?.arrayValue?.first == "header", "\(error.body)")
            }
        }
    }

    @Test func maxQueueLengthComesFromTheQueryAndStaysWithTheRequest() throws {
        let platform = try PlatformHeaders(value: { _ in nil }, query: { $0 == "fal_max_queue_length" ? "3" : nil })
        #expect(platform.maxQueueLength == 3)
        #expect(platform.forwarded(priority: nil).isEmpty, "a request's own limit: never the shared job's")
        for bad in ["-1", "many", ""] {
            #expect(throws: FalError.self) {
                try PlatformHeaders(value: { _ in nil }, query: { $0 == "fal_max_queue_length" ? bad : nil })
            }
        }
    }

    @Test func invalidTagsAreDroppedNeverFailing() throws {
        let tags = PlatformHeaders.tags(
            in: "ok=1, Upper=2,fal.reserved=3,no-value,=empty, dup=a,dup=b,spa ce=4,"
                + "k.e_y-9=v,\(String(repeating: "k", count: 65))=long,long=\(String(repeating: "v", count: 257))"
        )
        #expect(tags.map(\.key) == ["ok", "dup", "k.e_y-9"])
        #expect(tags.first { $0.key == "dup" }?.value == "a")
        // At most ten, and at most 1,024 bytes.
        let many = (0..<15).map { "k\($0)=v" }.joined(separator: ",")
        #expect(PlatformHeaders.tags(in: many).count == 10)
        let big = (0..<10).map { "k\($0)=\(String(repeating: "v", count: 200))" }.joined(separator: ",")
        #expect(PlatformHeaders.tags(in: big).count == 5, "203 bytes a pair: five fit in 1,024")
        #expect(try read(["x-fal-tags": "a=1,b=2"]).tagsText == "a=1,b=2")
    }
}

@Suite struct StartTimeoutErrorTests {
    @Test func itIsA504ThatTellsClientsNotToRetry() {
        let error = FalError.startTimeout(0.5)
        #expect(error.status == 504 && error.errorType == "request_timeout")
        #expect(error.responseHeaders.map(\.0) == ["x-fal-request-timeout-type"])
        #expect(error.responseHeaders.map(\.1) == ["user"])
        // An origin's own deadline (503) is not the caller's: no such header.
        #expect(FalError.unavailable("origin slow", type: "request_timeout").responseHeaders.isEmpty)
    }
}

extension PlatformHeadersTests {
    /// `X-Fal-Object-Lifecycle-Preference`: a media lifetime in whole seconds (null: the relay's policy), forwarded as
    /// sent; access rules the relay cannot keep are a 422, never ignored.
    @Test func aLifecyclePreferenceIsReadForwardedOrRefused() throws {
        let name = "X-Fal-Object-Lifecycle-Preference"
        let text = #"{"expiration_duration_seconds": 3600, "initial_acl": {"default": "allow"}}"#
        let platform = try read([name: text])
        #expect(platform.mediaExpirySeconds == 3600)
        #expect(platform.forwarded(priority: nil).contains { $0 == (name, text) })
        #expect(try read([name: #"{"expiration_duration_seconds": null}"#]).mediaExpirySeconds == nil)
        for bad in [
            "3600", #"{"expiration_duration_seconds": 0}"#, #"{"expiration_duration_seconds": 2.5}"#,
            #"{"expiration_duration_seconds": "1h"}"#, #"{"initial_acl": {"default": "forbid"}}"#,
            #"{"initial_acl": {"rules": [{"user": "u", "decision": "allow"}]}}"#,
        ] {
            #expect(throws: FalError.self, "\(bad)") { try read([name: bad]) }
            do {
                _ = try read([name: bad])
            } catch {
                #expect(
                    error.status == 422 && error.body["detail"]?.arrayValue?.first?["loc"] == ["header", .string(name)]
                )
            }
        }
    }
}
