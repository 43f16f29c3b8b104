// swift-tools-version:6.1
import PackageDescription

/// One set of settings for every Swift target: Swift 6 language mode, plus the upcoming features
/// the house style asks for. `MOONGATE_STRICT=1` (scripts/test, CI) makes warnings errors in our own
/// targets only (NIO's `@preconcurrency` APIs report Sendable violations as warnings).
let strict = Context.environment["MOONGATE_STRICT"] == "1"
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
] + (strict ? [.unsafeFlags(["-warnings-as-errors"])] : [])

let package = Package(
    name: "moongate",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "moongate", targets: ["moongate"]),
        .library(name: "MoongateTesting", targets: ["MoongateTesting"]),
        .library(name: "MoongatePolicy", targets: ["MoongatePolicy"]),
        .executable(name: "moongate-policy-bench", targets: ["MoongatePolicyBench"]),
        .executable(name: "moongate-tunnel-floor", targets: ["MoongateTunnelFloor"]),
        .executable(name: "moongate-h2-floor", targets: ["MoongateH2Floor"]),
        .executable(name: "moongate-api-fuzz", targets: ["MoongateAPIFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // Debian's liblua5.4 (apt-get install liblua5.4-dev pkg-config).
        .systemLibrary(
            name: "CLua",
            pkgConfig: "lua5.4",
            providers: [.apt(["liblua5.4-dev", "libre2-dev"])]
        ),
        // RE2 (Debian's libre2-dev) behind a plain C API, for moongate.regex.
        .target(
            name: "CRE2Bridge",
            cxxSettings: [.unsafeFlags(["-std=c++17", "-O2", "-Wall", "-Wextra"] + (strict ? ["-Werror"] : []))],
            linkerSettings: [.linkedLibrary("re2")]
        ),
        // The only code that raises Lua errors: macro wrappers, the capped allocator, the
        // budget hook, the sandbox, the request userdata and the protected entry points.
        .target(
            name: "CLuaShims",
            dependencies: ["CLua", "CRE2Bridge"],
            cSettings: [.unsafeFlags(["-O2", "-Wall", "-Wextra"] + (strict ? ["-Werror"] : []))],
            // crypt(3) for moongate.htpasswd: libxcrypt (Debian's libcrypt-dev) with bcrypt and SHA-crypt
            linkerSettings: [.linkedLibrary("crypt")]
        ),
        .target(name: "LuaKit", dependencies: ["CLuaShims"], swiftSettings: swiftSettings),
        // The negotiated cipher suite's name, which swift-nio-ssl does not expose (TLS/NegotiatedCipher.swift).
        .target(name: "CTLSShims", cSettings: [.unsafeFlags(["-O2", "-Wall", "-Wextra"] + (strict ? ["-Werror"] : []))]),
        .target(
            name: "MoongateConfig",
            dependencies: [.product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "MoongatePolicy",
            dependencies: ["LuaKit", "CLuaShims", "MoongateConfig", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(name: "MoongateTesting", dependencies: ["MoongatePolicy", "MoongateConfig"], swiftSettings: swiftSettings),
        .target(
            name: "MoongateProxy",
            dependencies: [
                "MoongatePolicy", "MoongateConfig", "CTLSShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                "LuaKit",
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "moongate",
            dependencies: [
                "MoongateProxy", "MoongatePolicy", "MoongateConfig", "MoongateTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // `swift run -c release moongate-policy-bench`: ns per hook with the shipped plugins.
        .executableTarget(
            name: "MoongatePolicyBench",
            dependencies: ["MoongatePolicy", "MoongateConfig"],
            swiftSettings: swiftSettings
        ),
        // The API fuzzer: hooks that call every reachable function with random arguments
        // (Tests/fuzz/api_fuzz.lua); `moongate-api-fuzz` runs it, under AddressSanitizer in scripts/fuzz-api.
        .target(
            name: "MoongateFuzzing",
            dependencies: ["MoongatePolicy", "MoongateConfig", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "MoongateAPIFuzz", dependencies: ["MoongateFuzzing"], swiftSettings: swiftSettings),
        // `moongate-tunnel-floor`: SwiftNIO channels and Moongate's relay with nothing else, run by
        // the peer harness (scripts/bench/nio-floor.sh) as the floor under the tunnel figures.
        // Benchmark tool: swift-nio-http2's cost per request with no channel per stream (README).
        .executableTarget(
            name: "MoongateH2Floor",
            dependencies: [
                "MoongateProxy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "MoongateTunnelFloor",
            dependencies: [
                "MoongateProxy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // CLua directly: the pattern tests compare the sandbox's matcher with the stock library's.
        .testTarget(name: "LuaKitTests", dependencies: ["LuaKit", "CLua"], swiftSettings: swiftSettings),
        .testTarget(
            name: "MoongatePolicyTests",
            dependencies: ["MoongatePolicy", "MoongateTesting", "MoongateConfig", "LuaKit", "MoongateFuzzing"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "MoongateConfigTests", dependencies: ["MoongateConfig"], swiftSettings: swiftSettings),
        .testTarget(
            name: "MoongateProxyTests",
            dependencies: [
                "MoongateProxy", "MoongatePolicy", "MoongateConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

// Parser fuzzing (scripts/fuzz-parsers): one libFuzzer executable per parser, declared only when
// MOONGATE_FUZZ=1, so ordinary builds neither compile nor link them. They link only against
// libFuzzer (`-sanitize=fuzzer`) and reach the parsers through `@testable import` (debug builds).
if Context.environment["MOONGATE_FUZZ"] == "1" {
    let fuzzDependencies: [Target.Dependency] = ["MoongateProxy", "ParserFuzzing", .product(name: "NIOCore", package: "swift-nio")]
    package.targets += [
        .target(
            name: "ParserFuzzing",
            dependencies: ["MoongateProxy", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "FuzzClientRequestParser", dependencies: fuzzDependencies, swiftSettings: swiftSettings),
        .executableTarget(name: "FuzzUpstreamResponseParser", dependencies: fuzzDependencies, swiftSettings: swiftSettings),
        .executableTarget(name: "FuzzChunkedDecoder", dependencies: fuzzDependencies, swiftSettings: swiftSettings),
    ]
}
