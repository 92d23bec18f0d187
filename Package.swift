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
        .package(url: "https://github.com/apple/swift-nio", from: "2.100.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.30.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.1.0"),
        // Only the OTLP/HTTP exporter (http/protobuf and http/json): the gRPC one costs minutes of build.
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(
            name: "Postgres",
            dependencies: ["TextEncodings", "CLibPQ"],
            swiftSettings: strict
        ),
        .target(name: "InputNumbers", swiftSettings: strict),
        .target(name: "TextEncodings", swiftSettings: strict),
        .target(
            name: "ChildProcesses",
            dependencies: [
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "EmbeddedPostgres",
            dependencies: ["ChildProcesses", "Postgres"],
            path: "Tooling/EmbeddedPostgres",
            swiftSettings: strict
        ),
        .target(
            name: "SchemaMigrations",
            dependencies: [
                "TextEncodings",
                "Postgres",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.embedInCode("sql")],
            swiftSettings: strict
        ),
        .target(
            name: "ResembleDetect",
            dependencies: [
                "TextEncodings",
                "InputNumbers",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "DetectSimulator",
            dependencies: [
                "TextEncodings",
                "ResembleDetect",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tooling/DetectSimulator",
            swiftSettings: strict
        ),
        .target(
            name: "DetectQueue",
            dependencies: [
                "TextEncodings",
                "Postgres", "ResembleDetect", "InputNumbers",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "QueueDashboard",
            dependencies: [
                "TextEncodings",
                "DetectQueue", "Postgres", "ResembleDetect",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.embedInCode("Resources")],
            swiftSettings: strict
        ),
        .target(
            name: "QueueBenchmarks",
            dependencies: [
                "TextEncodings",
                "DetectQueue", "DetectSimulator", "EmbeddedPostgres", "Postgres", "ResembleDetect", "SchemaMigrations", "QueueDashboard", "ChildProcesses",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tooling/QueueBenchmarks",
            swiftSettings: strict
        ),
        .target(
            name: "ChaosRunner",
            dependencies: [
                "TextEncodings",
                "DetectQueue", "DetectSimulator", "EmbeddedPostgres", "Postgres", "SchemaMigrations", "ChildProcesses",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Tooling/ChaosRunner",
            swiftSettings: strict
        ),
        .target(
            name: "UpgradeCheck",
            dependencies: [
                "DetectSimulator", "EmbeddedPostgres", "Postgres", "ChildProcesses",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tooling/UpgradeCheck",
            swiftSettings: strict
        ),
        .target(
            name: "FakeAlerts",
            dependencies: [
                "TextEncodings",
                "DetectQueue", "ResembleDetect", "InputNumbers",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "plugins/FakeAlerts",
            swiftSettings: strict
        ),
        .target(
            name: "IntelligenceArchive",
            dependencies: ["TextEncodings", "DetectQueue", "ResembleDetect"],
            path: "plugins/IntelligenceArchive",
            swiftSettings: strict
        ),
        .target(
            name: "RetentionTracking",
            dependencies: ["DetectQueue", "ResembleDetect"],
            path: "plugins/RetentionTracking",
            swiftSettings: strict
        ),
        .target(
            name: "ExternalPlugins",
            dependencies: [
                "TextEncodings",
                "DetectQueue", "ResembleDetect", "ChildProcesses",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "plugins/ExternalPlugins",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "detectq",
            dependencies: [
                "TextEncodings",
                "Postgres",
                "SchemaMigrations",
                "DetectSimulator",
                "EmbeddedPostgres",
                "DetectQueue",
                "QueueBenchmarks",
                "QueueDashboard",
                "ChaosRunner",
                "UpgradeCheck",
                "FakeAlerts", "IntelligenceArchive", "ExternalPlugins", "RetentionTracking", "ResembleDetect", "InputNumbers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "DetectqTestSupport",
            dependencies: [
                "Postgres", "SchemaMigrations", "EmbeddedPostgres", "DetectSimulator", "InputNumbers", "ChildProcesses",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Tests/DetectqTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "TextEncodingsTests",
            dependencies: ["TextEncodings"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "InputNumbersTests",
            dependencies: ["InputNumbers", "DetectqTestSupport"],
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
            name: "ResembleDetectTests",
            dependencies: [
                "TextEncodings",
                "ResembleDetect", "DetectSimulator", "DetectqTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "DetectQueueTests",
            dependencies: [
                "DetectQueue", "Postgres", "DetectqTestSupport", "WorkerTestSupport", "DetectSimulator", "ResembleDetect", "EmbeddedPostgres",
                "FakeAlerts", "RetentionTracking", "SchemaMigrations",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "WorkerTestSupport",
            dependencies: [
                "DetectQueue", "Postgres", "DetectqTestSupport", "DetectSimulator", "EmbeddedPostgres",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/WorkerTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "FakeAlertsTests",
            dependencies: ["TextEncodings", "FakeAlerts", "DetectQueue", "Postgres", "ResembleDetect", "DetectqTestSupport", "WorkerTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RetentionTrackingTests",
            dependencies: ["RetentionTracking", "DetectQueue", "Postgres", "FakeAlerts", "ResembleDetect", "DetectqTestSupport", "WorkerTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntelligenceArchiveTests",
            dependencies: ["IntelligenceArchive", "DetectQueue", "Postgres", "ResembleDetect", "DetectqTestSupport", "WorkerTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ExternalPluginsTests",
            dependencies: ["ExternalPlugins", "DetectQueue", "Postgres", "ResembleDetect", "DetectqTestSupport", "WorkerTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "DashboardTests",
            dependencies: [
                "QueueDashboard", "Postgres", "DetectqTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CommandLineTests",
            dependencies: [
                "detectq", "DetectQueue", "DetectqTestSupport", "Postgres", "ResembleDetect", "DetectSimulator", "EmbeddedPostgres", "ChaosRunner", "SchemaMigrations",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
    ]
)
