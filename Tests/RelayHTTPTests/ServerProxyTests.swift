import RelayCore
import Testing

@testable import RelayHTTP

@Suite struct ServerProxyTests {
    @Test func targetsFalsProxyServesAndNoOthers() throws {
        #expect(
            try ServerProxy.target("https://queue.fal.run/fal-ai/flux/dev").get()
                == .init(host: .queue, uri: "/fal-ai/flux/dev")
        )
        #expect(
            try ServerProxy.target("https://FAL.RUN/fal-ai/flux/schnell?x=1#f").get()
                == .init(host: .run, uri: "/fal-ai/flux/schnell?x=1")
        )
        #expect(
            try ServerProxy.target("https://rest.alpha.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3").get()
                == .init(host: .rest, uri: "/storage/upload/initiate?storage_type=fal-cdn-v3")
        )
        for bad in [
            nil, "", "http://queue.fal.run/a/b", "https://queue.fal.run.evil.example/a/b", "https://evil.example/a/b",
            "https://rest.fal.ai/admin/stats", "https://rest.alpha.fal.ai/storage/auth/token",
            "https://queue.fal.run/../admin/stats", "ftp://fal.run/a",
        ] {
            guard case .failure(let error) = ServerProxy.target(bad) else {
                Issue.record("\(bad ?? "nil") passed")
                continue
            }
            #expect(error.status == 400)
        }
    }

    @Test func originsAndEndpointGlobs() throws {
        let proxy = ServerProxy(
            key: "k",
            allowedOrigins: ["https://App.example/"],
            allowedEndpoints: ["fal-ai/flux/*", "x/**"]
        )
        #expect(proxy.allows(origin: "https://app.example") && !proxy.allows(origin: "https://app.example.evil"))
        #expect(!proxy.allows(origin: nil))
        #expect(ServerProxy(key: "k", allowedOrigins: ["*"]).allows(origin: "https://anything.example"))
        #expect(proxy.allows(endpoint: try #require(EndpointID("fal-ai/flux/dev"))))
        #expect(!proxy.allows(endpoint: try #require(EndpointID("fal-ai/flux"))))
        #expect(!proxy.allows(endpoint: try #require(EndpointID("fal-ai/flux/dev/image-to-image"))))
        #expect(proxy.allows(endpoint: try #require(EndpointID("x/y/z/w"))))
        #expect(ServerProxy(key: "k", allowedOrigins: []).allows(endpoint: try #require(EndpointID("a/b"))))
    }
}
