// swift-tools-version:6.1
import PackageDescription

/// The root package's settings (Swift 6 language mode, strict concurrency).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// Micro-benchmarks of RelayCore and RelayJobs, built apart from the root package and CI (`swift run -c release`,
// README.md). They report figures; nothing here asserts a speed.
let package = Package(
    name: "media-relay-micro",
    platforms: [.macOS(.v15)],
    dependencies: [
        // Named so the product references do not depend on the folder the repository is cloned into.
        .package(name: "media-relay", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "relay-micro",
            dependencies: [
                .product(name: "RelayCore", package: "media-relay"),
                .product(name: "RelayJobs", package: "media-relay"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        )
    ]
)
