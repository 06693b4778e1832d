import Foundation
import Hermetic
import TestSupport
import Testing

/// A registry that lies in each way a registry can: every lie stops the build before any step runs, with
/// one line naming the registry, and leaves nothing unverified in the store.
@Suite struct HostileRegistryTests {
    static func expectedReason(_ misbehaviour: HostileRegistry.Misbehaviour, layerSize: Int) -> String {
        switch misbehaviour {
        case .manifestDigestMismatch, .layerDigestMismatch: "content does not match its digest"
        case .truncatedBody: "\(layerSize / 2) bytes"
        case .lyingContentLength:
            "the response's Content-Length is \(layerSize + 100), the descriptor's size \(layerSize)"
        case .oversizedManifest: "a manifest over 4 MiB is refused"
        case .unauthorizedLoop: "authentication failed: the registry answered 401 again"
        case .redirectLoop: "redirect loop (more than 10 redirects)"
        case .stall: "stalled: no data for 2 s (timed out)"
        case .unavailable: "answered 503 (after 4 tries)"
        case .foreignLayer: "not found (404); the URLs a foreign layer names are never fetched"
        }
    }

    @Test(arguments: HostileRegistry.Misbehaviour.allCases)
    func aHostileRegistryGetsOneLineAndNothingIsStored(_ misbehaviour: HostileRegistry.Misbehaviour) throws {
        let scratch = try TemporaryDirectory(prefix: "registry-hostile-")
        let registry = try HostileRegistry(misbehaviour)
        let reference = "\(registry.host)/hostile@\(registry.manifest)"
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM \(reference)\nCOPY app.txt /app.txt\n")
        let state = scratch.path + "/state"
        let outcome = try HermeticProcess.hermetic(
            ["build", context, "--progress", "quiet", "--state-dir", state, "-o", "type=oci,dest=\(scratch.path)/out"],
            environment: ["HERMETIC_REGISTRY_TIMEOUT": "2"])
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.standardError)")
        #expect(
            outcome.standardError.hasPrefix("error: Dockerfile:1: image \"\(reference)\": registry \(registry.host): "),
            "\(outcome.standardError)")
        #expect(
            outcome.standardError.contains(Self.expectedReason(misbehaviour, layerSize: registry.layerSize)),
            "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
        try RegistryPullTests.expectStoreHoldsOnlyVerifiedBlobs(state)
        if misbehaviour == .manifestDigestMismatch {
            #expect(!FileManager.default.fileExists(atPath: state + "/store/blobs/sha256/" + registry.manifest.hex))
        }
        if misbehaviour == .foreignLayer {
            #expect(!registry.requestedPaths.contains { $0.contains("foreign-layer") }, "\(registry.requestedPaths)")
        }
    }

    /// 429 and 503 are asked again, with backoff: the third request for the layer gets it.
    @Test func aRegistryThatAnswers429And503IsAskedAgain() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-flaky-")
        let registry = try HostileRegistry.flakyRegistry()
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/hostile@\(registry.manifest)\nCOPY app.txt /app.txt\n")
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "-o", "type=local,dest=\(scratch.path)/out",
        ])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        #expect(FileManager.default.fileExists(atPath: scratch.path + "/out/hello.txt"))
        let layerRequests = registry.requestedPaths.filter { $0.hasPrefix("/v2/hostile/blobs/") }
        #expect(layerRequests.count == 4, "\(registry.requestedPaths)")  // the config once, the layer 3 times
    }

    /// A body cut short is resumed where it stopped (Range), and the joined blob is verified as a whole.
    @Test func aBodyCutShortIsResumedByRange() throws {
        let scratch = try TemporaryDirectory(prefix: "registry-resume-")
        let registry = try HostileRegistry.resumableRegistry()
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/hostile@\(registry.manifest)\nCOPY app.txt /app.txt\n")
        let state = scratch.path + "/state"
        let outcome = try HermeticProcess.hermetic([
            "build", context, "--progress", "quiet", "--state-dir", state, "-o", "type=local,dest=\(scratch.path)/out",
        ])
        #expect(outcome.status == 0, "\(outcome.standardError)")
        #expect(FileManager.default.fileExists(atPath: scratch.path + "/out/hello.txt"))
        let layerRequests = registry.requestedPaths.filter { $0.hasPrefix("/v2/hostile/blobs/") }.dropFirst()
        #expect(
            layerRequests.map { $0.split(separator: " ").dropFirst().joined(separator: " ") }
                == ["", "range=bytes=\(registry.layerSize / 2)-"], "\(registry.requestedPaths)")
        try RegistryPullTests.expectStoreHoldsOnlyVerifiedBlobs(state)
    }
}
