// swift-tools-version: 6.2
import PackageDescription

/// Every target builds in Swift 6 language mode (complete strict concurrency) with warnings as errors.
let strict: [SwiftSetting] = [
    .treatAllWarnings(as: .error),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "detectq",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "detectq", targets: ["detectq"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(
            name: "Postgres",
            dependencies: ["CLibPQ"],
            swiftSettings: strict
        ),
        .target(name: "CSpawn"),
        .target(
            name: "EmbeddedPostgres",
            dependencies: ["CSpawn"],
            swiftSettings: strict
        ),
        .target(
            name: "SchemaMigrations",
            dependencies: [
                "Postgres",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.embedInCode("sql")],
            swiftSettings: strict
        ),
        .target(
            name: "DetectQueue",
            dependencies: ["Postgres"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "detectq",
            dependencies: [
                "Postgres",
                "SchemaMigrations",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "DetectqTestSupport",
            dependencies: ["Postgres", "SchemaMigrations", "EmbeddedPostgres"],
            path: "Tests/DetectqTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "PostgresTests",
            dependencies: ["Postgres", "EmbeddedPostgres", "DetectqTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SchemaTests",
            dependencies: ["Postgres", "SchemaMigrations", "DetectQueue", "DetectqTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CommandLineTests",
            dependencies: ["detectq", "DetectqTestSupport", "Postgres"],
            swiftSettings: strict
        ),
    ]
)
