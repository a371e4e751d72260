// swift-tools-version:6.1
import PackageDescription

/// One set of Swift settings for every target: Swift 6 language mode (strict concurrency) everywhere.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
]

let package = Package(
    name: "media-relay",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "media-relay", targets: ["media-relay"]),
        // Libraries for the side packages in loadtest/ and fuzz/ (benchmarks and fuzzers build apart from CI).
        .library(name: "RelayCore", targets: ["RelayCore"]),
        .library(name: "RelayJobs", targets: ["RelayJobs"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // Cluster mode only: the fleet's shared state (DESIGN.md "A fleet").
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // C libraries from Debian's -dev packages (STYLE.md rule 9).
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // glibc's malloc_trim: what a start-up's loading freed goes back to the system.
        .systemLibrary(name: "CMalloc"),

        .target(name: "RelayCore", dependencies: ["CXXHash"], swiftSettings: swiftSettings),
        .target(name: "RelayMedia", dependencies: ["CZlib"], swiftSettings: swiftSettings),
        .target(
            name: "RelayStore",
            dependencies: ["RelayCore", "CLZ4"] + nio,
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RelayJobs",
            dependencies: ["RelayCore", "RelayStore", .product(name: "CoreMetrics", package: "swift-metrics")] + nio,
            swiftSettings: swiftSettings
        ),
        // fal's queue protocol as a client: used by the origin upstream, node-to-node following and `submit`.
        .target(
            name: "FalQueue",
            dependencies: [
                "RelayCore", "RelayStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ] + nio,
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RelayUpstreams",
            dependencies: [
                "RelayCore", "RelayStore", "RelayJobs", "RelayMedia", "FalQueue",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                // Webhooks: HMAC signatures and delivery counters.
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ] + nio,
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RelayCluster",
            dependencies: [
                "RelayCore", "RelayStore", "RelayJobs", "RelayUpstreams", "FalQueue",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ] + nio,
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RelayHTTP",
            dependencies: [
                "RelayCore", "RelayStore", "RelayJobs",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ] + nio,
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RelayServer",
            dependencies: [
                "RelayCore", "RelayStore", "RelayJobs", "RelayUpstreams", "RelayHTTP", "RelayCluster", "CMalloc",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ] + nio,
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "media-relay",
            dependencies: [
                "RelayServer", "RelayCore", "FalQueue",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        .testTarget(name: "RelayCoreTests", dependencies: ["RelayCore"], swiftSettings: swiftSettings),
        .testTarget(name: "RelayMediaTests", dependencies: ["RelayMedia"], swiftSettings: swiftSettings),
        .testTarget(name: "RelayStoreTests", dependencies: ["RelayStore"], swiftSettings: swiftSettings),
        .testTarget(name: "RelayJobsTests", dependencies: ["RelayJobs", "RelayStore"], swiftSettings: swiftSettings),
        .testTarget(name: "FalQueueTests", dependencies: ["FalQueue"], swiftSettings: swiftSettings),
        .testTarget(
            name: "RelayUpstreamsTests",
            dependencies: [
                "RelayUpstreams", "FalQueue",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RelayHTTPTests",
            dependencies: ["RelayHTTP", .product(name: "NIOEmbedded", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RelayClusterTests",
            dependencies: [
                "RelayCluster", "RelayCore", "RelayJobs", "RelayStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RelayServerTests",
            dependencies: ["RelayServer", .product(name: "NIOSSL", package: "swift-nio-ssl")],
            swiftSettings: swiftSettings
        ),
    ]
)
