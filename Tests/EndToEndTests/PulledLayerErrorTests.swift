import Foundation
import Hermetic
import TestSupport
import Testing

/// A bad layer of a base pulled from a registry is named by the registry repository it came from and its
/// digest: the layout the build keeps it in is a workspace detail the user never named.
@Suite struct PulledLayerErrorTests {
    @Test func aBadPulledLayerIsNamedByItsRegistryRepository() throws {
        let scratch = try TemporaryDirectory(prefix: "pulled-layer-")
        let tar = RawTar.archive([RawTar.Entry(name: "../escape", data: [1])])
        let layout = scratch.path + "/base"
        try BaseImages.writeLayout(at: layout, rawTar: tar)
        let registry = try RegistryFixture()
        let pushed = try registry.push(layout: layout, as: "tools/hostile")
        let context = try RegistryPullTests.makeContext(
            scratch, dockerfile: "FROM \(registry.host)/tools/hostile@\(pushed)\n")
        let outcome = try HermeticProcess.hermetic(
            [
                "build", context, "--progress", "quiet", "--state-dir", scratch.path + "/state", "-o",
                "type=oci,dest=\(scratch.path)/out",
            ])
        #expect(outcome.status == 1)
        let lines = outcome.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: layer "), "\(outcome.standardError)")
        #expect(
            outcome.standardError.contains("(pulled from \(registry.host)/tools/hostile)"), "\(outcome.standardError)")
        // skopeo compresses the layer on its way to the registry, so its digest there is not the tar's.
        #expect(outcome.standardError.contains("\"../escape\" refused"), "\(outcome.standardError)")
        #expect(!outcome.standardError.contains("registry-0"), "\(outcome.standardError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/out"))
    }
}
