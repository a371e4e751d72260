import NIOHTTP1
import RelayCore
import Testing

@testable import RelayHTTP

@Suite struct RouterTests {
    let router = Router(
        queueHosts: [HostPattern("127.0.0.1")!, HostPattern("[::1]")!],
        runHosts: [HostPattern("localhost")!]
    )
    let queue = "127.0.0.1:8443"
    let run = "localhost:8443"
    let id = "5217bdd1-d3e6-4163-a44d-1e3847e0a2c3"

    @Test func queueRoutes() {
        let app = EndpointID("fal-ai/flux")!
        #expect(
            router.route(method: .POST, host: queue, uri: "/fal-ai/flux/dev") == .submit(EndpointID("fal-ai/flux/dev")!)
        )
        #expect(
            router.route(method: .POST, host: queue, uri: "/fal-ai/flux/dev?fal_webhook=https%3A%2F%2Fx")
                == .submit(EndpointID("fal-ai/flux/dev")!)
        )
        #expect(
            router.route(method: .GET, host: queue, uri: "/fal-ai/flux/requests/\(id)/status?logs=true")
                == .status(app: app, requestID: id)
        )
        #expect(
            router.route(method: .GET, host: queue, uri: "/fal-ai/flux/requests/\(id)/status/stream")
                == .statusStream(app: app, requestID: id)
        )
        #expect(
            router.route(method: .GET, host: queue, uri: "/fal-ai/flux/requests/\(id)")
                == .result(app: app, requestID: id)
        )
        #expect(
            router.route(method: .PUT, host: queue, uri: "/fal-ai/flux/requests/\(id)/cancel")
                == .cancel(app: app, requestID: id)
        )
        #expect(
            router.route(method: .POST, host: queue, uri: "/workflows/me/flow/run")
                == .submit(EndpointID("workflows/me/flow/run")!)
        )
        #expect(
            router.route(method: .GET, host: queue, uri: "/workflows/me/flow/requests/\(id)/status")
                == .status(app: EndpointID("workflows/me/flow")!, requestID: id)
        )
    }

    @Test func wrongMethodsAndShapes() {
        #expect(router.route(method: .GET, host: queue, uri: "/fal-ai/flux/dev") == .methodNotAllowed)
        #expect(
            router.route(method: .POST, host: queue, uri: "/fal-ai/flux/requests/\(id)/cancel") == .methodNotAllowed
        )
        #expect(router.route(method: .DELETE, host: queue, uri: "/fal-ai/flux/requests/\(id)") == .methodNotAllowed)
        #expect(router.route(method: .GET, host: queue, uri: "/fal-ai/flux/requests/\(id)/logs") == .notFound)
        #expect(
            router.route(method: .GET, host: queue, uri: "/fal-ai/flux/requests/not-a-valid-id!/status") == .notFound
        )
        #expect(router.route(method: .POST, host: queue, uri: "/flux") == .notFound)
        #expect(router.route(method: .POST, host: queue, uri: "/fal-ai/../../etc") == .notFound)
        #expect(router.route(method: .POST, host: queue, uri: "/fal-ai/flux%2F..%2Fdev") == .notFound)
        #expect(router.route(method: .GET, host: queue, uri: "") == .notFound)
    }

    @Test func runHostRoutes() {
        #expect(router.route(method: .POST, host: run, uri: "/fal-ai/flux/dev") == .run(EndpointID("fal-ai/flux/dev")!))
        #expect(
            router.route(method: .POST, host: run, uri: "/fal-ai/flux/dev/stream")
                == .stream(EndpointID("fal-ai/flux/dev")!)
        )
        #expect(
            router.route(method: .POST, host: "LOCALHOST:9", uri: "/fal-ai/any-llm/stream")
                == .stream(EndpointID("fal-ai/any-llm")!)
        )
        #expect(router.route(method: .GET, host: run, uri: "/fal-ai/flux/dev") == .methodNotAllowed)
        // Unknown hosts and no Host header mean the queue API.
        #expect(
            router.route(method: .POST, host: "relay.example:443", uri: "/fal-ai/flux/dev")
                == .submit(EndpointID("fal-ai/flux/dev")!)
        )
        #expect(
            router.route(method: .POST, host: nil, uri: "/fal-ai/flux/dev") == .submit(EndpointID("fal-ai/flux/dev")!)
        )
        #expect(
            router.route(method: .POST, host: "[::1]:8443", uri: "/fal-ai/flux/dev")
                == .submit(EndpointID("fal-ai/flux/dev")!)
        )
    }

    @Test func filesAndHealthOnEveryHost() {
        let hex = "0123456789abcdef0123456789abcdef"
        for host in [queue, run, nil] {
            #expect(
                router.route(method: .GET, host: host, uri: "/files/\(hex).png")
                    == .file(Digest128(hex: hex)!, fileExtension: "png")
            )
            #expect(
                router.route(method: .HEAD, host: host, uri: "/files/\(hex).wav?x=1")
                    == .file(Digest128(hex: hex)!, fileExtension: "wav")
            )
            #expect(router.route(method: .GET, host: host, uri: "/healthz") == .health)
            #expect(router.route(method: .GET, host: host, uri: "/readyz") == .ready)
            #expect(router.route(method: .GET, host: host, uri: "/.well-known/jwks.json") == .jwks)
        }
        #expect(router.route(method: .POST, host: queue, uri: "/.well-known/jwks.json") == .methodNotAllowed)
        #expect(router.route(method: .POST, host: run, uri: "/api/fal/proxy") == .proxy)
        #expect(router.route(method: .PUT, host: queue, uri: "/api/fal/proxy?x=1") == .proxy)
        #expect(router.route(method: .DELETE, host: queue, uri: "/api/fal/proxy") == .methodNotAllowed)
        #expect(
            router.route(method: .POST, uri: "/fal-ai/flux/dev", runHost: true) == .run(EndpointID("fal-ai/flux/dev")!)
        )
        #expect(router.route(method: .GET, host: queue, uri: "/.well-known/other.json") != .jwks)
        #expect(router.route(method: .GET, host: queue, uri: "/files/\(hex)") == .notFound)
        #expect(router.route(method: .GET, host: queue, uri: "/files/../\(hex).png") == .notFound)
        #expect(router.route(method: .GET, host: queue, uri: "/files/%2e%2e%2fetc%2fpasswd.png") == .notFound)
        #expect(router.route(method: .GET, host: queue, uri: "/files/\(hex).PNG/x") == .notFound)
        #expect(router.route(method: .POST, host: queue, uri: "/files/\(hex).png") == .methodNotAllowed)
    }

    @Test func hostPatterns() {
        #expect(HostPattern("127.0.0.1:8443")?.matches(name: "127.0.0.1", port: 8443) == true)
        #expect(HostPattern("127.0.0.1:8443")?.matches(name: "127.0.0.1", port: 8444) == false)
        #expect(HostPattern("Relay.Example")?.matches(name: "relay.example", port: 1) == true)
        #expect(HostPattern("[::1]")?.matches(name: "[::1]", port: nil) == true)
        #expect(HostPattern("host:notaport") == nil)
        #expect(HostPattern("") == nil)
    }

    @Test func queryParameters() {
        let query = QueryParameters(
            uri: "/x?logs=true&fal_webhook=https%3A%2F%2Fexample.com%2Fhook%3Fa%3D1&empty=&plus=a+b&bad=%zz"
        )
        #expect(query.flag("logs"))
        #expect(query["fal_webhook"] == "https://example.com/hook?a=1")
        #expect(query["empty"] == "")
        #expect(query["plus"] == "a b")
        #expect(query["bad"] == "%zz")
        #expect(query["missing"] == nil)
        for (value, expected) in [("1", true), ("0", false), ("false", false), ("TRUE", true)] {
            #expect(QueryParameters(uri: "/s?logs=\(value)").flag("logs") == expected)
        }
    }
}
