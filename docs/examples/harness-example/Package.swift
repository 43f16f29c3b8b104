// swift-tools-version:6.1
// An operator's own policy package, tested with Moongate's harness (MoongateTesting). It depends on
// a Moongate checkout by path; point the path at yours (a folder named `moongate`: SwiftPM names a
// path dependency after its folder, and the product below names that package).
import PackageDescription

let package = Package(
    name: "harness-example",
    dependencies: [
        .package(path: "../../..")
    ],
    targets: [
        .testTarget(
            name: "PolicyTests",
            dependencies: [
                .product(name: "MoongateTesting", package: "moongate"),
                .product(name: "MoongatePolicy", package: "moongate"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
