// swift-tools-version:6.1
import PackageDescription

/// The root package's settings (Swift 6 language mode, strict concurrency).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// relay-load, the load generator that compare.sh drives. A package of its own so that CI never builds it:
// `swift build -c release --package-path loadtest`.
let package = Package(
    name: "relay-load",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "relay-load", targets: ["relay-load"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        .target(
            name: "RelayLoadKit",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/RelayLoadKit",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "relay-load",
            dependencies: [
                "RelayLoadKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/relay-load",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RelayLoadKitTests",
            dependencies: ["RelayLoadKit", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/RelayLoadKitTests",
            swiftSettings: swiftSettings
        ),
    ]
)
