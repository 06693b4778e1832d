// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Hermetic",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "hermetic", targets: ["HermeticCLI"]),
        .library(name: "Hermetic", targets: ["Hermetic"]),
        .library(name: "Provenance", targets: ["Provenance"]),
        .library(name: "Sandbox", targets: ["Sandbox"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CArchive", pkgConfig: "libarchive",
            providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(
            name: "CSeccomp", pkgConfig: "libseccomp",
            providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(
            name: "COpenSSLCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CDeflate", pkgConfig: "libdeflate",
            providers: [.apt(["libdeflate-dev"])]),
        .systemLibrary(
            name: "CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        .target(name: "Provenance", dependencies: ["COpenSSLCrypto"]),
        // The sandbox's child side: C that runs between clone and exec, where no Swift may run.
        .target(name: "CSandbox", path: "Sources/CSandbox", publicHeadersPath: "include"),
        .target(name: "Sandbox", dependencies: ["CSandbox", "CSeccomp"]),
        .target(
            name: "Hermetic",
            dependencies: [
                "CArchive", "CDeflate", "CZstd", "COpenSSLCrypto", "Provenance", "Sandbox",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]),
        .executableTarget(
            name: "HermeticCLI",
            dependencies: [
                "Hermetic",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .target(name: "TestSupport", dependencies: ["Hermetic"]),
        .testTarget(name: "HermeticTests", dependencies: ["Hermetic", "TestSupport"]),
        .testTarget(name: "ProvenanceTests", dependencies: ["Provenance"]),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox"]),
        .testTarget(
            name: "EndToEndTests", dependencies: ["Hermetic", "TestSupport"]),
    ]
)
