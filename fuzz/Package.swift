// swift-tools-version:6.1
import PackageDescription

/// The root package's settings (Swift 6 language mode, strict concurrency).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// Fuzz targets for RelayCore, built apart from the root package and CI: `./run.sh` (or README.md) builds them
// with `-sanitize=fuzzer,address`, which the root's own build never sees.
let package = Package(
    name: "media-relay-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        // Named so the product reference does not depend on the folder the repository is cloned into.
        .package(name: "media-relay", path: "..")
    ],
    targets: [
        .executableTarget(
            name: "json-fuzz",
            dependencies: [.product(name: "RelayCore", package: "media-relay")],
            swiftSettings: swiftSettings
        )
    ]
)
